"""One module per upstream type; ``ADAPTERS`` maps a ``type:`` to its adapter class.

Each class takes ``(config_model, AdapterContext)``. ``build_adapters`` builds the
enabled upstreams of a config (no network is touched until the first delivery).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ccwatch.tickets.adapters.alertmanager import AlertmanagerAdapter
from ccwatch.tickets.adapters.base import (
    Adapter,
    AdapterContext,
    RecordingAdapter,
    TicketEvent,
)
from ccwatch.tickets.adapters.email import EmailAdapter
from ccwatch.tickets.adapters.pagerduty import PagerDutyAdapter
from ccwatch.tickets.adapters.webhook import WebhookAdapter
from ccwatch.tickets.config import EmailUpstream, TicketUpstream

ADAPTERS: dict[str, Callable[[Any, AdapterContext], Adapter]] = {
    "webhook": WebhookAdapter,
    "pagerduty": PagerDutyAdapter,
    "alertmanager": AlertmanagerAdapter,
    "email": EmailAdapter,
}

ESCALATION_EMAIL = "escalation-email"
"""The built-in upstream that mails the addresses named by an escalation level."""


def build_adapters(
    upstreams: Sequence[TicketUpstream], context: AdapterContext, escalation_email: bool = False
) -> dict[str, Adapter]:
    """Adapters of the enabled upstreams by name (plus ``escalation-email`` if asked)."""
    adapters = {
        upstream.upstream_name: ADAPTERS[upstream.type](upstream, context)
        for upstream in upstreams
        if upstream.enabled
    }
    if escalation_email and context.email is not None and ESCALATION_EMAIL not in adapters:
        config = EmailUpstream(type="email", name=ESCALATION_EMAIL, to=["escalation@invalid"])
        adapters[ESCALATION_EMAIL] = EmailAdapter(config, context, escalation_targets=True)
    return adapters


__all__ = [
    "ADAPTERS",
    "ESCALATION_EMAIL",
    "Adapter",
    "AdapterContext",
    "AlertmanagerAdapter",
    "EmailAdapter",
    "PagerDutyAdapter",
    "RecordingAdapter",
    "TicketEvent",
    "WebhookAdapter",
    "build_adapters",
]
