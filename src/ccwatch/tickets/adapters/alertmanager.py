"""``alertmanager``: Prometheus Alertmanager's API (``POST /api/v2/alerts``).

An incident is one alert with the labels ``alertname``, ``site``, ``component``,
``severity`` (plus configured extras); ``priority``, ``dedup_key``, the impact and the
SLA due times are annotations. Alertmanager resolves an alert on its own once ``endsAt``
passes, so, as Prometheus does, a firing alert is sent with ``endsAt`` three re-send
intervals ahead and re-sent every ``resend_interval``; a resolve sends ``endsAt = now``.
A severity change changes the label set, so the old alert is ended in the same request.

Firing alerts are remembered in memory and rebuilt at start from the outbox (the newest
delivered event of each incident), so re-sending survives a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field

from ccwatch.durations import Duration
from ccwatch.incidents.vocabulary import Event
from ccwatch.tickets.adapters.base import (
    IGNORE,
    Adapter,
    AdapterContext,
    HttpPoster,
    TicketEvent,
    UpstreamBase,
    UpstreamType,
    iso,
)


class AlertmanagerUpstream(UpstreamBase):
    type: Literal["alertmanager"]
    url: AnyHttpUrl = Field(description="base URL, e.g. http://127.0.0.1:9093")
    resend_interval: Duration = Field(
        timedelta(minutes=1),
        description="re-send firing alerts this often (keep < resolve_timeout)",
    )
    alertname: str = "CcwatchIncident"
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels")
    verify_tls: bool = True


@dataclass
class _Firing:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    sent_at: float


class AlertmanagerAdapter(Adapter):
    EVENTS = {
        Event.OPEN: "fire",
        Event.ESCALATE: "fire",
        Event.DEESCALATE: "fire",
        Event.UPDATE: "fire",
        Event.ACKNOWLEDGE: "fire",  # annotations carry who acknowledged
        Event.NODATA: "fire",
        Event.DATA_RESUMED: "fire",
        Event.SLA_WARNING: "fire",
        Event.SLA_BREACH: "fire",
        Event.ESCALATION_LEVEL: "fire",
        Event.RCA_DUE: IGNORE,  # after the resolution: nothing fires any more
        Event.RESOLVE: "end",
        Event.REOPEN: "fire",
        Event.EXPIRE: "end",
        Event.REMINDER: "fire",
        Event.RCA_DELIVERED: IGNORE,  # after the resolution: nothing fires any more
        Event.RCA_DEFERRED: IGNORE,
        Event.SLA_EXEMPT: IGNORE,
        Event.SLA_EXEMPT_LIFTED: IGNORE,
        Event.WAITING_ON_CUSTOMER: IGNORE,  # a desk's state: the alert keeps firing as is
        Event.CUSTOMER_REPLIED: IGNORE,
    }

    def __init__(self, config: AlertmanagerUpstream, context: AdapterContext) -> None:
        self.name = config.upstream_name
        self.config = config
        self.context = context
        self.firing: dict[str, _Firing] = {}
        self._endpoint = str(config.url).rstrip("/") + "/api/v2/alerts"
        self._http = HttpPoster(
            self.name, config.timeout.total_seconds(), config.verify_tls, context
        )

    def labels(self, event: TicketEvent) -> dict[str, str]:
        body = event.body
        return {
            **self.config.labels,
            "alertname": self.config.alertname,
            "site": str(body.get("site") or self.context.site),
            "component": str(body.get("component") or "unknown"),
            "severity": event.severity,
        }

    @staticmethod
    def annotations(event: TicketEvent) -> dict[str, str]:
        body = event.body
        sla = body.get("sla") or {}
        notes = {
            "summary": body.get("summary"),
            "description": body.get("impact"),
            "priority": body.get("priority"),
            "dedup_key": event.dedup_key,
            "incident_id": event.incident_id,
            "state": body.get("state"),
            "first_response_due": sla.get("first_response_due"),
            "resolution_due": sla.get("resolution_due"),
            "rca_due": sla.get("rca_due"),
        }
        if body.get("escalation"):
            notes["escalation"] = json.dumps(body["escalation"], sort_keys=True)
        return {key: str(value) for key, value in notes.items() if value not in (None, "")}

    def _alert(self, firing: _Firing, ends_at: float) -> dict[str, Any]:
        return {
            "labels": firing.labels,
            "annotations": firing.annotations,
            "startsAt": firing.starts_at,
            "endsAt": iso(ends_at),
            "generatorURL": f"ccwatch://{self.context.site}/incidents",
        }

    def _lifetime(self) -> float:
        return 3 * max(self.config.resend_interval.total_seconds(), 1.0)

    async def deliver(self, event: TicketEvent) -> None:
        action = self.EVENTS.get(event.kind, IGNORE) if event.kind is not None else IGNORE
        if action == IGNORE:
            return
        now = self.context.clock()
        key = event.dedup_key
        previous = self.firing.get(key)
        alerts: list[dict[str, Any]] = []
        if action == "end" or event.body.get("state") in ("resolved", "expired"):
            if previous is None and action != "end":
                return  # an event after resolution (the RCA clock): nothing fires
            labels = previous.labels if previous else self.labels(event)
            starts = (
                previous.starts_at if previous else str(event.body.get("opened_at") or iso(now))
            )
            ended = _Firing(labels, self.annotations(event), starts, now)
            await self.post_alerts([self._alert(ended, now)])
            self.firing.pop(key, None)
            return
        starts_at = previous.starts_at if previous else str(event.body.get("opened_at") or iso(now))
        current = _Firing(self.labels(event), self.annotations(event), starts_at, now)
        if previous is not None and previous.labels != current.labels:
            alerts.append(self._alert(previous, now))  # end the alert of the old severity
        alerts.append(self._alert(current, now + self._lifetime()))
        await self.post_alerts(alerts)
        self.firing[key] = current

    async def periodic(self) -> None:
        now = self.context.clock()
        interval = self.config.resend_interval.total_seconds()
        due = [f for f in self.firing.values() if now - f.sent_at >= interval]
        if not due:
            return
        await self.post_alerts([self._alert(f, now + self._lifetime()) for f in due])
        for firing in due:
            firing.sent_at = now

    async def restore(self, delivered: list[TicketEvent]) -> None:
        for event in delivered:
            if event.event in ("resolve", "expire") or event.body.get("state") in (
                "resolved",
                "expired",
            ):
                continue
            starts_at = str(event.body.get("opened_at") or iso(event.created_at))
            self.firing[event.dedup_key] = _Firing(
                self.labels(event), self.annotations(event), starts_at, 0.0
            )

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts (API v2 objects) to ``/api/v2/alerts``; the heartbeat's ``Watchdog``
        goes out through here too."""
        body = json.dumps(alerts, separators=(",", ":")).encode()
        await self._http.post(self._endpoint, body, {"Content-Type": "application/json"})

    async def aclose(self) -> None:
        await self._http.aclose()


UPSTREAM = UpstreamType("alertmanager", AlertmanagerUpstream, AlertmanagerAdapter)
