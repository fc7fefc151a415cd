"""What service desks and pagers push back: signed inbound webhooks (docs/architecture.md,
"Service desks")."""
