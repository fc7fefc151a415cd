"""One module per upstream type (webhook, pagerduty, alertmanager, email)."""
