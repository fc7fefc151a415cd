"""Upstream events: which upstreams get an event, and the body every adapter starts from.

Pure functions; the outbox rows themselves are written by ``repository`` in the same
transaction as the incident change (docs/architecture.md, "One write path").

``incidents.seq`` goes up by one per event, the same for every upstream of that event,
so ``idempotency_key = <dedup_key>:<seq>`` is stable across retries and restarts.

Routing: ``open`` and ``escalate`` go to the upstreams that want the incident's current
severity. Every later event also goes to the upstreams that want its peak severity, so
the upstream that got the open (or an escalation) also gets the updates and the resolve
after a de-escalation. An escalation level names its targets explicitly instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.incidents.vocabulary import ROUTED_BY_CURRENT_SEVERITY, Event
from ccwatch.severity import Severity

BodyExtras = Callable[[Incident, Event], Mapping[str, Any]]
"""``(incident, event) -> {"sla": {...}, ...}`` merged into every body (pure and quick: it
runs inside the write transaction, e.g. the SLA due times)."""


class Upstream(Protocol):
    """What routing needs of a ``tickets:`` entry (``UpstreamBase`` fits)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def upstream_name(self) -> str: ...

    def wants(self, component: str, severity: Severity) -> bool: ...


def route(incident: Incident, event: Event, upstreams: Sequence[Upstream]) -> list[str]:
    """Names of the enabled upstreams that receive ``event`` for ``incident``."""
    names: list[str] = []
    for upstream in upstreams:
        if not upstream.enabled:
            continue
        wanted = upstream.wants(incident.component, incident.severity)
        if event not in ROUTED_BY_CURRENT_SEVERITY:
            wanted = wanted or upstream.wants(incident.component, incident.peak_severity)
        if wanted:
            names.append(upstream.upstream_name)
    return names


def default_extras(incident: Incident) -> dict[str, Any]:
    """The body's ``sla`` and ``diagnostics`` when no hook supplies them."""
    return {
        "sla": incident.sla(),
        "diagnostics": {"metrics": incident.metrics, "host": {}, "log_excerpt": []},
    }


def event_body(
    incident: Incident, event: Event, extras: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The generic webhook body (README, "Tickets") for ``event`` at the incident's ``seq``."""
    base = default_extras(incident)
    for key, value in (extras or {}).items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {
        "event": event.value,
        "seq": incident.seq,
        "dedup_key": incident.dedup_key,
        "incident_id": incident.id,
        "site": incident.site,
        "component": incident.component,
        "kind": incident.kind,
        "severity": incident.severity.label,
        "priority": incident.priority,
        "state": incident.state,
        "production_loss": round(incident.production_loss, 6),
        "peak_loss": round(incident.peak_loss, 6),
        "impact": incident.impact,
        "summary": incident.summary,
        "opened_at": rfc3339(incident.opened_at),
        "updated_at": rfc3339(incident.updated_at),
        "acknowledged_at": rfc3339(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": rfc3339(incident.resolved_at),
        **base,
    }
