"""Tickets upstream: the durable outbox, its dispatcher and one adapter per upstream."""
