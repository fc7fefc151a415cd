"""Upstream events: which upstreams get an incident change, and the outbox rows for it.

Every change that matters upstream is written by ``enqueue_event`` inside the same
SQLite transaction as the incident change itself, one ``outbox`` row per routed
upstream, so a crash can never leave an incident without its ticket event or the other
way round. The ticket dispatcher (``tickets/``) delivers the rows.

Events: ``open``, ``escalate`` (severity up), ``update`` (severity down, nodata, data
resumed, acknowledged, SLA escalations) and ``resolve``. ``incidents.seq`` goes up by
one per event, the same for every upstream of that event, so
``idempotency_key = <dedup_key>:<seq>`` is stable across retries and restarts.

Routing: ``open`` and ``escalate`` go to the upstreams that want the incident's
current severity. Every later event also goes to the upstreams that want its peak
severity, so the upstream that got the open (or an escalation) also gets the update and
the resolve after a de-escalation.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.severity import Severity

EVENTS = ("open", "escalate", "update", "resolve")

EventExtras = Callable[[Incident, str], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]
"""Hook ``(incident, event) -> {"sla": {...}, "diagnostics": {...}}`` merged into the body.

The tickets feature plugs SLA due times, host facts and log excerpts in here; it may be
sync or async. It runs before the transaction (it may do I/O), never inside it.
"""


class Upstream(Protocol):
    """What routing needs of a ``tickets:`` entry (``TicketUpstream`` fits)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def upstream_name(self) -> str: ...

    def wants(self, component: str, severity: Severity) -> bool: ...


def route(incident: Incident, event: str, upstreams: Sequence[Upstream]) -> list[str]:
    """Names of the enabled upstreams that receive ``event`` for ``incident``."""
    names: list[str] = []
    for upstream in upstreams:
        if not upstream.enabled:
            continue
        wanted = upstream.wants(incident.component, incident.severity)
        if event not in ("open", "escalate"):
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
    incident: Incident, event: str, extras: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """DESIGN.md's generic webhook body for ``event`` at the incident's current ``seq``."""
    base = default_extras(incident)
    for key, value in (extras or {}).items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {
        "event": event,
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
        "resolved_at": rfc3339(incident.resolved_at),
        **base,
    }


def enqueue_event(
    conn: sqlite3.Connection,
    incident: Incident,
    event: str,
    upstreams: Sequence[Upstream],
    now: float,
    extras: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write one pending outbox row per routed upstream; returns their names.

    Call inside the transaction that changed the incident, with the incident as it is
    after the change and its ``seq`` already incremented for this event.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
    names = route(incident, event, upstreams)
    if not names:
        return names
    body = json.dumps(event_body(incident, event, extras), separators=(",", ":"), default=str)
    idempotency_key = f"{incident.dedup_key}:{incident.seq}"
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
        " created_at, status, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
        [
            (name, incident.id, incident.seq, event, idempotency_key, body, now, now)
            for name in names
        ],
    )
    return names
