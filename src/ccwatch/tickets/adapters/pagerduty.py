"""``pagerduty``: PagerDuty Events API v2 (``POST /v2/enqueue``).

One incident is one PagerDuty alert: every event carries the incident's ``dedup_key``
(≤ 255 characters), so a repeated trigger updates the alert instead of opening a second
one. ``EVENTS`` below maps each event: changes of the incident → ``trigger`` (severity
and details refreshed), ``acknowledge`` → ``acknowledge``, ``resolve`` → ``resolve``.
``rca_due`` and any trigger that follows a resolution are not sent: a trigger after a
resolve would open a new alert.

Severity: critical → ``critical``, major → ``error``, minor → ``warning``. The API
answers 202 when it took the event, 400 for an invalid one (dead-lettered), 429 and 5xx
to be retried.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, read_secret
from ccwatch.errors import PermanentUpstreamError
from ccwatch.incidents.vocabulary import Event
from ccwatch.tickets.adapters.base import (
    IGNORE,
    Adapter,
    AdapterContext,
    HttpPoster,
    TicketEvent,
    UpstreamBase,
    UpstreamType,
)


class PagerDutyUpstream(UpstreamBase):
    type: Literal["pagerduty"]
    role: ClassVar[str] = "page"
    url: AnyHttpUrl = AnyHttpUrl("https://events.pagerduty.com/v2/enqueue")
    routing_key_env: SecretEnv = None
    routing_key_file: SecretFile = None
    source: str | None = Field(None, description="payload.source; defaults to the site name")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _needs_routing_key(self) -> PagerDutyUpstream:
        if self.enabled and not (self.routing_key_env or self.routing_key_file):
            raise ValueError("a pagerduty upstream needs routing_key_env or routing_key_file")
        return self


SEVERITY = {"critical": "critical", "major": "error", "minor": "warning"}
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
ACTIONS: dict[Event, str] = {
    Event.OPEN: "trigger",
    Event.ESCALATE: "trigger",
    Event.DEESCALATE: "trigger",
    Event.UPDATE: "trigger",
    Event.ACKNOWLEDGE: "acknowledge",
    Event.NODATA: "trigger",
    Event.DATA_RESUMED: "trigger",
    Event.SLA_WARNING: "trigger",
    Event.SLA_BREACH: "trigger",
    Event.ESCALATION_LEVEL: "trigger",
    Event.RCA_DUE: IGNORE,  # after the resolution: a trigger would open a new alert
    Event.RESOLVE: "resolve",
    Event.REOPEN: "trigger",
    Event.EXPIRE: "resolve",
    Event.REMINDER: "trigger",
    Event.RCA_DELIVERED: IGNORE,  # after the resolution: a trigger would open a new alert
    Event.RCA_DEFERRED: IGNORE,
    Event.SLA_EXEMPT: IGNORE,
    Event.SLA_EXEMPT_LIFTED: IGNORE,
    Event.WAITING_ON_CUSTOMER: IGNORE,  # a desk's state: nobody is paged for it
    Event.CUSTOMER_REPLIED: IGNORE,
}


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def enqueue_body(event: TicketEvent, routing_key: str, source: str) -> dict[str, Any] | None:
    """The Events API v2 request for ``event``, or None when there is nothing to send."""
    body = event.body
    action = ACTIONS.get(event.kind, IGNORE) if event.kind is not None else IGNORE
    if action == IGNORE or (action == "trigger" and body.get("state") in ("resolved", "expired")):
        return None
    request: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": event.dedup_key[:DEDUP_KEY_MAX],
    }
    if action != "trigger":
        return request
    summary = str(body.get("summary") or body.get("impact") or event.dedup_key)
    priority = body.get("priority")
    details = {
        key: body[key]
        for key in ("impact", "production_loss", "priority", "incident_id", "state", "sla",
                    "escalation", "diagnostics")
        if body.get(key) not in (None, {}, [])
    }  # fmt: skip
    request["payload"] = {
        "summary": truncate(f"[{priority}] {summary}" if priority else summary, SUMMARY_MAX),
        "source": source,
        "severity": SEVERITY.get(event.severity, "warning"),
        "timestamp": body.get("opened_at"),
        "component": body.get("component"),
        "group": body.get("site"),
        "class": str(body.get("kind") or "production_loss"),
        "custom_details": {**details, "event": event.event, "seq": event.seq},
    }
    request["payload"] = {k: v for k, v in request["payload"].items() if v is not None}
    request["client"] = "ccwatch"
    return request


class PagerDutyAdapter(Adapter):
    EVENTS = ACTIONS

    def __init__(self, config: PagerDutyUpstream, context: AdapterContext) -> None:
        self.name = config.upstream_name
        self.config = config
        self.context = context
        self._routing_key = read_secret(config.routing_key_env, config.routing_key_file) or ""
        self._http = HttpPoster(
            self.name, config.timeout.total_seconds(), config.verify_tls, context
        )

    async def deliver(self, event: TicketEvent) -> None:
        request = enqueue_body(event, self._routing_key, self.config.source or self.context.site)
        if request is None:
            return
        if not self._routing_key:
            raise PermanentUpstreamError(f"{self.name}: no routing key configured")
        content = json.dumps(request, separators=(",", ":")).encode()
        await self._http.post(str(self.config.url), content, {"Content-Type": "application/json"})

    async def aclose(self) -> None:
        await self._http.aclose()


UPSTREAM = UpstreamType("pagerduty", PagerDutyUpstream, PagerDutyAdapter)
