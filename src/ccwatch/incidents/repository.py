"""Reading and writing incidents in the state database (synchronous; pass a connection).

Every function takes the ``sqlite3.Connection`` that ``StateStore.run`` /
``run_sync`` hands out, so callers choose the thread and the transaction::

    incident = await store.run(lambda conn: load_incident(conn, incident_id))

Writers that change an incident open their own ``transaction`` and write the incident,
its timeline entry and its outbox rows (``events.enqueue_event``) together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ccwatch.incidents.events import Upstream, enqueue_event
from ccwatch.incidents.lifecycle import ActiveIncident, Transition
from ccwatch.incidents.model import Incident, TimelineEntry
from ccwatch.incidents.store import transaction
from ccwatch.severity import Severity

STATES = ("open", "acknowledged", "nodata", "resolved")
ACTIVE = "active"  # a filter meaning every state but resolved


class UnknownIncidentError(LookupError):
    """No incident has this id."""


def load_incident(conn: sqlite3.Connection, incident_id: str) -> Incident | None:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return Incident.from_row(row) if row is not None else None


def list_incidents(
    conn: sqlite3.Connection,
    state: str | None = None,
    site: str | None = None,
    limit: int = 500,
) -> list[Incident]:
    """Newest first. ``state`` is one of ``STATES`` or ``"active"`` (not resolved)."""
    clauses: list[str] = []
    params: list[Any] = []
    if state == ACTIVE:
        clauses.append("state != 'resolved'")
    elif state is not None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; use one of: {', '.join(STATES)}, active")
        clauses.append("state = ?")
        params.append(state)
    if site is not None:
        clauses.append("site = ?")
        params.append(site)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(limit)
    rows = conn.execute(
        f"SELECT * FROM incidents {where} ORDER BY opened_at DESC, id LIMIT ?", params
    ).fetchall()
    return [Incident.from_row(row) for row in rows]


def active_incidents(conn: sqlite3.Connection, site: str | None = None) -> list[Incident]:
    return list_incidents(conn, state=ACTIVE, site=site, limit=1_000_000)


def find_active(conn: sqlite3.Connection, site: str, component: str, kind: str) -> Incident | None:
    """The one unresolved incident of site+component+kind, if any."""
    row = conn.execute(
        "SELECT * FROM incidents WHERE site = ? AND component = ? AND kind = ?"
        " AND state != 'resolved'",
        (site, component, kind),
    ).fetchone()
    return Incident.from_row(row) if row is not None else None


def load_timeline(conn: sqlite3.Connection, incident_id: str) -> list[TimelineEntry]:
    rows = conn.execute(
        "SELECT at, change, severity, state, production_loss, detail FROM incident_timeline"
        " WHERE incident_id = ? ORDER BY id",
        (incident_id,),
    ).fetchall()
    return [
        TimelineEntry(
            at=row["at"],
            change=row["change"],
            severity=Severity(row["severity"]),
            state=row["state"],
            production_loss=row["production_loss"],
            detail=row["detail"],
        )
        for row in rows
    ]


def append_timeline(
    conn: sqlite3.Connection, incident: Incident, change: str, at: float, detail: str = ""
) -> None:
    conn.execute(
        "INSERT INTO incident_timeline (incident_id, at, change, severity, state,"
        " production_loss, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            incident.id,
            at,
            change,
            int(incident.severity),
            incident.state,
            incident.production_loss,
            detail,
        ),
    )


# --- writing lifecycle transitions ----------------------------------------------------


def merge_active(stored: Incident | None, active: ActiveIncident) -> Incident:
    """The stored record with the lifecycle's fields applied (ack and SLA fields kept).

    An incident acknowledged elsewhere (the CLI writes the database directly) stays
    ``acknowledged`` when the lifecycle returns it to ``open``.
    """
    data: dict[str, Any] = dict(stored.data) if stored is not None else {}
    if active.metrics:
        data["metrics"] = dict(active.metrics)
    state = active.state
    if state == "open" and stored is not None and stored.acknowledged_at is not None:
        state = "acknowledged"
    if stored is None:
        return Incident(
            id=active.id,
            site=active.site,
            component=active.component,
            kind=active.kind,
            severity=active.severity,
            peak_severity=active.peak_severity,
            state=state,
            production_loss=active.production_loss,
            peak_loss=active.peak_loss,
            impact=active.impact,
            opened_at=active.opened_at,
            updated_at=active.updated_at,
            resolved_at=active.resolved_at,
            data=data,
        )
    return replace(
        stored,
        severity=active.severity,
        peak_severity=max(stored.peak_severity, active.peak_severity),
        state=state,
        production_loss=active.production_loss,
        peak_loss=max(stored.peak_loss, active.peak_loss),
        impact=active.impact,
        updated_at=active.updated_at,
        resolved_at=active.resolved_at,
        data=data,
    )


def save_incident(conn: sqlite3.Connection, incident: Incident) -> None:
    """Insert or update the whole record (no timeline, no event)."""
    conn.execute(
        "INSERT INTO incidents (id, site, component, kind, severity, peak_severity, state,"
        " production_loss, peak_loss, impact, opened_at, updated_at, acknowledged_at,"
        " acknowledged_by, resolved_at, first_response_due, resolution_due, rca_due, seq, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity,"
        " peak_severity = excluded.peak_severity, state = excluded.state,"
        " production_loss = excluded.production_loss, peak_loss = excluded.peak_loss,"
        " impact = excluded.impact, updated_at = excluded.updated_at,"
        " acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by,"
        " resolved_at = excluded.resolved_at, first_response_due = excluded.first_response_due,"
        " resolution_due = excluded.resolution_due, rca_due = excluded.rca_due,"
        " seq = excluded.seq, data = excluded.data",
        (
            incident.id,
            incident.site,
            incident.component,
            incident.kind,
            int(incident.severity),
            int(incident.peak_severity),
            incident.state,
            incident.production_loss,
            incident.peak_loss,
            incident.impact,
            incident.opened_at,
            incident.updated_at,
            incident.acknowledged_at,
            incident.acknowledged_by,
            incident.resolved_at,
            incident.first_response_due,
            incident.resolution_due,
            incident.rca_due,
            incident.seq,
            json.dumps(incident.data, separators=(",", ":"), default=str),
        ),
    )


def change_detail(transition: Transition) -> str:
    incident = transition.incident
    if transition.detail:
        return transition.detail
    if transition.change in ("escalated", "de-escalated"):
        return (
            f"{transition.previous_severity.label} -> {incident.severity.label}: {incident.impact}"
        )
    return incident.impact


def write_transition(
    conn: sqlite3.Connection,
    transition: Transition,
    upstreams: Sequence[Upstream],
    extras: Mapping[str, Any] | None = None,
) -> Incident:
    """Persist one lifecycle transition: incident, timeline entry and outbox rows, atomically."""
    with transaction(conn):
        stored = load_incident(conn, transition.incident.id)
        incident = merge_active(stored, transition.incident)
        event = transition.event
        if event is not None:
            incident = replace(incident, seq=incident.seq + 1)
        save_incident(conn, incident)
        if transition.change != "loss":
            append_timeline(
                conn, incident, transition.change, transition.at, change_detail(transition)
            )
        if event is not None:
            enqueue_event(conn, incident, event, upstreams, transition.at, extras)
    return incident


def record_event(
    conn: sqlite3.Connection,
    incident_id: str,
    event: str,
    change: str,
    now: float,
    upstreams: Sequence[Upstream],
    extras: Mapping[str, Any] | None = None,
    detail: str = "",
    updates: Mapping[str, Any] | None = None,
) -> Incident:
    """Append a timeline entry and send ``event`` for an incident, in one transaction.

    For changes the lifecycle does not make (an SLA escalation step, a note): ``change``
    names it in the timeline; ``updates`` may set record fields at the same time
    (e.g. ``{"resolution_due": …}`` or ``{"data": {...}}``). Raises
    ``UnknownIncidentError`` for an unknown id.
    """
    with transaction(conn):
        stored = load_incident(conn, incident_id)
        if stored is None:
            raise UnknownIncidentError(incident_id)
        incident = replace(stored, **dict(updates or {}), seq=stored.seq + 1, updated_at=now)
        save_incident(conn, incident)
        append_timeline(conn, incident, change, now, detail)
        enqueue_event(conn, incident, event, upstreams, now, extras)
    return incident


def acknowledge(
    conn: sqlite3.Connection,
    incident_id: str,
    by: str,
    now: float,
    upstreams: Sequence[Upstream],
    extras: Mapping[str, Any] | None = None,
) -> Incident:
    """Mark an incident acknowledged by ``by``: timeline entry plus an ``update`` event.

    Acknowledging twice keeps the first time and sends nothing new; a resolved incident
    cannot be acknowledged (ValueError). Raises ``UnknownIncidentError`` for an unknown id.
    """
    with transaction(conn):
        stored = load_incident(conn, incident_id)
        if stored is None:
            raise UnknownIncidentError(incident_id)
        if stored.acknowledged_at is not None:
            return stored
        if stored.state == "resolved":
            raise ValueError(f"incident {incident_id} is resolved; nothing to acknowledge")
        incident = replace(
            stored,
            state="nodata" if stored.state == "nodata" else "acknowledged",
            acknowledged_at=now,
            acknowledged_by=by,
            seq=stored.seq + 1,
            updated_at=now,
        )
        save_incident(conn, incident)
        append_timeline(conn, incident, "acknowledged", now, f"by {by}")
        enqueue_event(conn, incident, "update", upstreams, now, extras)
    return incident


def external_change(
    conn: sqlite3.Connection,
    incident: Incident,
    change: str,
    event: str,
    now: float,
    upstreams: Sequence[Upstream],
    extras: Mapping[str, Any] | None = None,
) -> Incident:
    """Write an incident raised or cleared by a job (checklist, retention) with its event."""
    with transaction(conn):
        stored = load_incident(conn, incident.id)
        seq = stored.seq if stored is not None else incident.seq
        updated = replace(incident, seq=seq + 1)
        save_incident(conn, updated)
        append_timeline(conn, updated, change, now, updated.impact)
        enqueue_event(conn, updated, event, upstreams, now, extras)
    return updated
