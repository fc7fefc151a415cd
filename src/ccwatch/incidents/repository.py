"""All SQL on the ``incidents``, ``incident_timeline`` and ``outbox`` tables, and their schema.

This module owns those three tables: nothing else reads or writes them with SQL. Every
function takes the ``Connection`` that ``StateStore.run`` / ``run_sync`` hands out
(SQLite or PostgreSQL: the SQL is written once, see ``state.connection``), so callers
choose the thread and the transaction::

    incident = await store.run(lambda conn: load_incident(conn, incident_id))

Incident changes are written by ``write_transition`` only, and only the incident
service calls it (docs/architecture.md, "One write path"): the incident, its timeline
entry and its outbox rows in one transaction. The ticket dispatcher reads the outbox and
records delivery outcomes through the functions at the end.

Several workers (``sites:``, PostgreSQL): each site is processed by the worker holding
its lease, and every write of a site's incidents or outbox rows takes a ``Fence``: a
check, run first inside the write's own transaction, that the lease is still this
worker's at the epoch it acquired (``fleet.leases.Lease.check``). It raises
``LeaseLostError`` and the whole transaction rolls back. Without ``sites:`` there is no
fence (None) and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ccwatch.incidents.events import BodyExtras, Upstream, event_body, route
from ccwatch.incidents.lifecycle import Transition
from ccwatch.incidents.model import Incident, TimelineEntry
from ccwatch.incidents.vocabulary import SILENT_CHANGES, Event
from ccwatch.severity import Severity
from ccwatch.state import SQLITE, Connection, Migrations, dialect_of, transaction

Fence = Callable[[Connection], None]
"""Run first inside a write's transaction: raises ``LeaseLostError`` when this worker no
longer holds the lease of the site it writes for (see the module docstring)."""

MIGRATIONS = Migrations(
    "incidents",
    {
        1: """
    CREATE TABLE incidents (
        id               TEXT PRIMARY KEY,
        site             TEXT NOT NULL,
        component        TEXT NOT NULL,
        kind             TEXT NOT NULL DEFAULT 'production_loss',
        severity         INTEGER NOT NULL,
        peak_severity    INTEGER NOT NULL,
        state            TEXT NOT NULL,
        production_loss  REAL NOT NULL,
        peak_loss        REAL NOT NULL,
        impact           TEXT NOT NULL,
        opened_at        REAL NOT NULL,
        updated_at       REAL NOT NULL,
        acknowledged_at  REAL,
        acknowledged_by  TEXT,
        resolved_at      REAL,
        first_response_due  REAL,
        resolution_due   REAL,
        rca_due          REAL,
        seq              INTEGER NOT NULL DEFAULT 0,
        data             TEXT NOT NULL DEFAULT '{}'
    );
    -- One incident per site+component at a time: escalation updates it, never a new one.
    CREATE UNIQUE INDEX incidents_one_active
        ON incidents (site, component, kind) WHERE state != 'resolved';
    CREATE INDEX incidents_by_opened ON incidents (opened_at);
    CREATE INDEX incidents_by_state ON incidents (state, opened_at);

    CREATE TABLE incident_timeline (
        id               INTEGER PRIMARY KEY,
        incident_id      TEXT NOT NULL REFERENCES incidents (id),
        at               REAL NOT NULL,
        change           TEXT NOT NULL,
        severity         INTEGER NOT NULL,
        state            TEXT NOT NULL,
        production_loss  REAL NOT NULL,
        detail           TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, id);

    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        upstream         TEXT NOT NULL,
        incident_id      TEXT NOT NULL,
        seq              INTEGER NOT NULL,
        event            TEXT NOT NULL,
        idempotency_key  TEXT NOT NULL,
        body             TEXT NOT NULL,
        created_at       REAL NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending',
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_error       TEXT,
        delivered_at     REAL,
        UNIQUE (upstream, idempotency_key)
    );
    CREATE INDEX outbox_pending ON outbox (upstream, status, id);
    """,
        # `expired` (auto-closed after nodata) is over like `resolved`: the one-active
        # index leaves both out, so the component's next fault may open.
        2: """
    DROP INDEX incidents_one_active;
    CREATE UNIQUE INDEX incidents_one_active
        ON incidents (site, component, kind) WHERE state NOT IN ('resolved', 'expired');
    """,
        # The outbox claim (PostgreSQL, several dispatchers on one database): a row is
        # delivered by the dispatcher whose token is in `claimed_by` until `claimed_until`.
        # Unused (NULL) on SQLite, where one process delivers.
        3: """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until REAL;
    """,
    },
)

STATES = ("open", "acknowledged", "waiting_on_customer", "nodata", "resolved", "expired")
ACTIVE = "active"  # a filter meaning every state but resolved and expired
_NOT_CLOSED = "state NOT IN ('resolved', 'expired')"


class UnknownIncidentError(LookupError):
    """No incident has this id."""


def load_incident(conn: Connection, incident_id: str) -> Incident | None:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return Incident.from_row(row) if row is not None else None


def list_incidents(
    conn: Connection,
    state: str | None = None,
    site: str | None = None,
    limit: int = 500,
) -> list[Incident]:
    """Newest first. ``state`` is one of ``STATES`` or ``"active"`` (not resolved)."""
    clauses: list[str] = []
    params: list[Any] = []
    if state == ACTIVE:
        clauses.append(_NOT_CLOSED)
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


def active_incidents(conn: Connection, site: str | None = None) -> list[Incident]:
    return list_incidents(conn, state=ACTIVE, site=site, limit=1_000_000)


def active_counts_by_site(conn: Connection) -> dict[str, int]:
    """Unresolved incidents per site (the fleet view)."""
    rows = conn.execute(f"SELECT site, COUNT(*) FROM incidents WHERE {_NOT_CLOSED} GROUP BY site")
    return {str(site): int(count) for site, count in rows.fetchall()}


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching ``prefix`` literally (``%`` and ``_`` are not wildcards)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def find_by_prefix(conn: Connection, id_or_prefix: str) -> Incident | None:
    """The incident with this id, or the only one whose id starts with it (6+ characters)."""
    incident = load_incident(conn, id_or_prefix)
    if incident is not None or len(id_or_prefix) < 6:
        return incident
    # Ids are lower-case hex; SQLite's LIKE ignores case and PostgreSQL's does not.
    rows = conn.execute(
        "SELECT id FROM incidents WHERE lower(id) LIKE ? ESCAPE '\\' LIMIT 2",
        (_like_prefix(id_or_prefix.lower()),),
    ).fetchall()
    return load_incident(conn, rows[0][0]) if len(rows) == 1 else None


def find_active(conn: Connection, site: str, component: str, kind: str) -> Incident | None:
    """The one unresolved incident of site+component+kind, if any."""
    row = conn.execute(
        f"SELECT * FROM incidents WHERE site = ? AND component = ? AND kind = ? AND {_NOT_CLOSED}",
        (site, component, kind),
    ).fetchone()
    return Incident.from_row(row) if row is not None else None


def load_timeline(conn: Connection, incident_id: str) -> list[TimelineEntry]:
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
    conn: Connection, incident: Incident, change: str, at: float, detail: str = ""
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


def save_incident(conn: Connection, incident: Incident) -> None:
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


# --- the one write path ---------------------------------------------------------------


def apply_transition(stored: Incident | None, transition: Transition) -> Incident:
    """The record after ``transition``: the lifecycle's fields, then ``updates`` and ``data``."""
    active = transition.incident
    if stored is None and active is None:
        raise UnknownIncidentError(transition.incident_id)
    data: dict[str, Any] = dict(stored.data) if stored is not None else {}
    if active is not None and active.metrics:
        data["metrics"] = dict(active.metrics)
    if active is not None and active.calls:
        data["calls"] = dict(active.calls)
    data.update(transition.data)
    if active is None:
        assert stored is not None
        record = replace(stored, updated_at=transition.at, data=data)
    elif stored is None:
        record = Incident(
            id=active.id,
            site=active.site,
            component=active.component,
            kind=active.kind,
            severity=active.severity,
            peak_severity=active.peak_severity,
            state=active.state,
            production_loss=active.production_loss,
            peak_loss=active.peak_loss,
            impact=active.impact,
            opened_at=active.opened_at,
            updated_at=active.updated_at,
            resolved_at=active.resolved_at,
            data=data,
        )
    else:
        record = replace(
            stored,
            severity=active.severity,
            peak_severity=max(stored.peak_severity, active.peak_severity),
            state=active.state,
            production_loss=active.production_loss,
            peak_loss=max(stored.peak_loss, active.peak_loss),
            impact=active.impact,
            updated_at=active.updated_at,
            resolved_at=active.resolved_at,
            data=data,
        )
    if transition.updates:
        record = replace(record, **dict(transition.updates))
    return record


def change_detail(transition: Transition, incident: Incident) -> str:
    return transition.detail or incident.impact


def write_transition(
    conn: Connection,
    transition: Transition,
    upstreams: Sequence[Upstream],
    extras: BodyExtras | None = None,
    hold_open_until: float | None = None,
    redact: Callable[[Any], Any] | None = None,
    fence: Fence | None = None,
) -> tuple[Incident, list[str]]:
    """Write one change: the incident, its timeline entry and its outbox rows, atomically.

    Returns the record as written and the upstreams its event was queued for.
    ``hold_open_until`` keeps an ``open`` event's rows back until then (or until
    ``attach_diagnostics`` releases them), so they go out with the diagnostics.
    ``redact`` is applied to the event body before it is stored: the state database
    keeps no secret a log excerpt or an impact text carried. ``fence`` (several workers)
    is checked first, in the same transaction.
    """
    with transaction(conn):
        if fence is not None:
            fence(conn)
        stored = load_incident(conn, transition.incident_id)
        incident = apply_transition(stored, transition)
        event = transition.event
        if event is not None:
            incident = replace(incident, seq=incident.seq + 1)
        save_incident(conn, incident)
        if transition.change not in SILENT_CHANGES:
            append_timeline(
                conn,
                incident,
                transition.change,
                transition.at,
                change_detail(transition, incident),
            )
        names: list[str] = []
        if event is not None:
            body_extras = dict(extras(incident, event)) if extras is not None else {}
            body_extras.update(transition.extras)
            names = (
                list(transition.targets)
                if transition.targets is not None
                else route(incident, event, upstreams)
            )
            due = transition.at
            if hold_open_until is not None and event is Event.OPEN:
                due = hold_open_until
            _enqueue(conn, incident, event, names, transition.at, due, body_extras, redact)
    return incident, names


def _enqueue(
    conn: Connection,
    incident: Incident,
    event: Event,
    names: Sequence[str],
    now: float,
    due: float,
    extras: Mapping[str, Any],
    redact: Callable[[Any], Any] | None,
) -> None:
    if not names:
        return
    content = event_body(incident, event, extras)
    if redact is not None:
        content = redact(content)
    body = json.dumps(content, separators=(",", ":"), default=str)
    idempotency_key = f"{incident.dedup_key}:{incident.seq}"
    conn.executemany(
        "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
        " created_at, status, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
        " ON CONFLICT DO NOTHING",
        [
            (name, incident.id, incident.seq, event.value, idempotency_key, body, now, due)
            for name in names
        ],
    )


def attach_diagnostics(
    conn: Connection,
    incident_id: str,
    seq: int,
    diagnostics: Mapping[str, Any],
    now: float,
    fence: Fence | None = None,
) -> int:
    """Put diagnostics into the still pending rows of an incident's event ``seq`` and
    release them; returns how many rows were changed."""
    with transaction(conn):
        if fence is not None:
            fence(conn)
        rows = conn.execute(
            "SELECT id, body, next_attempt_at FROM outbox"
            " WHERE incident_id = ? AND seq = ? AND status = 'pending'",
            (incident_id, seq),
        ).fetchall()
        for row_id, body_text, due in rows:
            body = json.loads(body_text)
            merged = dict(body.get("diagnostics") or {})
            merged.update(diagnostics)
            body["diagnostics"] = merged
            conn.execute(
                "UPDATE outbox SET body = ?, next_attempt_at = ? WHERE id = ?",
                (json.dumps(body, separators=(",", ":"), default=str), min(due, now), row_id),
            )
    return len(rows)


def release_held(
    conn: Connection, incident_id: str, seq: int, now: float, fence: Fence | None = None
) -> None:
    """Let the held rows of event ``seq`` go out without diagnostics."""
    with transaction(conn):
        if fence is not None:
            fence(conn)
        conn.execute(
            "UPDATE outbox SET next_attempt_at = ?"
            " WHERE incident_id = ? AND seq = ? AND status = 'pending' AND next_attempt_at > ?",
            (now, incident_id, seq, now),
        )


# --- the outbox, for the ticket dispatcher -----------------------------------------------


@dataclass(frozen=True)
class OutboxRow:
    id: int
    upstream: str
    incident_id: str
    seq: int
    event: str
    idempotency_key: str
    body: str
    created_at: float
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True)
class Outcome:
    row_id: int
    status: str  # delivered | pending | dead
    error: str | None
    next_attempt_at: float


_OUTBOX_COLUMNS = (
    "o.id, o.upstream, o.incident_id, o.seq, o.event, o.idempotency_key, o.body,"
    " o.created_at, o.attempts, o.next_attempt_at"
)

# The head (oldest pending row) of each incident on one upstream. One pass over the
# upstream's pending rows (index outbox_pending), so a 10,000-row backlog stays cheap.
_HEADS = (
    "SELECT MIN(id) AS id FROM outbox WHERE upstream = ? AND status = 'pending'"
    " GROUP BY incident_id"
)
# Several workers: one site's rows only (the outbox row's incident names the site).
_OF_SITE = "EXISTS (SELECT 1 FROM incidents AS i WHERE i.id = o.incident_id AND i.site = ?)"
_SELECT_READY = f"""
SELECT {_OUTBOX_COLUMNS}
FROM outbox AS o
JOIN ({_HEADS}) AS head ON head.id = o.id
ORDER BY o.id
LIMIT ?
"""

# PostgreSQL: claim the due heads nobody holds, skipping rows another dispatcher is
# claiming right now. `status` and the claim are re-checked on the locked row (READ
# COMMITTED re-evaluates this level's WHERE), so a row delivered or claimed by another
# dispatcher after this statement's snapshot is not taken.
_CLAIM_READY = f"""
UPDATE outbox SET claimed_by = ?, claimed_until = ?
WHERE id IN (
    SELECT o.id FROM outbox AS o
    WHERE o.id IN ({_HEADS})
      AND o.upstream = ? AND o.status = 'pending' AND o.next_attempt_at <= ?
      AND (o.claimed_until IS NULL OR o.claimed_until <= ?)
      {{site}}
    ORDER BY o.id
    LIMIT ?
    FOR UPDATE SKIP LOCKED
)
RETURNING {_OUTBOX_COLUMNS.replace("o.", "")}
"""
_CLAIM_ANY = _CLAIM_READY.format(site="")
_CLAIM_OF_SITE = _CLAIM_READY.format(site=f"AND {_OF_SITE}")

_NEXT_DUE = f"""
SELECT MIN(o.next_attempt_at) FROM outbox AS o
WHERE o.id IN ({_HEADS}) AND o.next_attempt_at > ?
"""
_NEXT_DUE_OF_SITE = f"{_NEXT_DUE} AND {_OF_SITE}"


def select_ready(conn: Connection, upstream: str, limit: int) -> list[OutboxRow]:
    """The head row of each incident waiting on ``upstream`` (due or not), oldest first."""
    cursor = conn.execute(_SELECT_READY, (upstream, limit))
    return [OutboxRow(*row) for row in cursor.fetchall()]


@dataclass(frozen=True)
class Claim:
    """Who delivers: a dispatcher's token, and how long a row it took stays its own."""

    token: str
    lease: float  # seconds


def take_ready(
    conn: Connection,
    upstream: str,
    now: float,
    limit: int,
    claim: Claim,
    *,
    site: str | None = None,
    fence: Fence | None = None,
) -> tuple[list[OutboxRow], float | None]:
    """The head rows of ``upstream`` due at ``now`` (at most ``limit``, oldest first) for
    this dispatcher to deliver, and when the earliest head still waiting becomes due.

    SQLite: one process delivers, nothing is claimed. PostgreSQL: several dispatchers
    (workers) may share the database; each row returned is claimed for ``claim`` until
    ``now + claim.lease`` (``FOR UPDATE SKIP LOCKED``), so no other dispatcher takes it,
    and ``record_outcomes`` releases it. A dispatcher that dies holding rows loses them
    when the lease runs out; another then sends them, with the same idempotency key.

    Several workers (PostgreSQL only): ``site`` limits the rows to that site's incidents
    and ``fence`` is checked in the claim's transaction.
    """
    if dialect_of(conn) is SQLITE:
        if site is not None or fence is not None:
            raise ValueError("site leases need the PostgreSQL state backend")
        rows = select_ready(conn, upstream, limit * 4)
        ready = [row for row in rows if row.next_attempt_at <= now][:limit]
        waiting = [row.next_attempt_at for row in rows if row.next_attempt_at > now]
        return ready, min(waiting, default=None)
    if site is None:
        claimed = conn.execute(
            _CLAIM_ANY,
            (claim.token, now + claim.lease, upstream, upstream, now, now, limit),
        ).fetchall()
        next_due = conn.execute(_NEXT_DUE, (upstream, now)).fetchone()[0]
    else:
        with transaction(conn):
            if fence is not None:
                fence(conn)
            claimed = conn.execute(
                _CLAIM_OF_SITE,
                (claim.token, now + claim.lease, upstream, upstream, now, now, site, limit),
            ).fetchall()
        next_due = conn.execute(_NEXT_DUE_OF_SITE, (upstream, now, site)).fetchone()[0]
    return sorted((OutboxRow(*row) for row in claimed), key=lambda row: row.id), next_due


def record_outcomes(
    conn: Connection,
    outcomes: Iterable[Outcome],
    now: float,
    claim: Claim | None = None,
    fence: Fence | None = None,
) -> list[OutboxRow]:
    """Record delivery attempts and release their claim; returns the rows that were
    dead-lettered just now. A row no longer pending, or claimed by another dispatcher
    (this one's lease ran out), is left as it is. ``fence`` (several workers) is checked
    first, in the same transaction: a worker that lost the site records nothing."""
    dead: list[int] = []
    token = claim.token if claim is not None else None
    with transaction(conn):
        if fence is not None:
            fence(conn)
        for outcome in outcomes:
            if outcome.status == "delivered":
                changed = conn.execute(
                    "UPDATE outbox SET status = 'delivered', delivered_at = ?, "
                    "attempts = attempts + 1, last_error = NULL, claimed_by = NULL, "
                    "claimed_until = NULL WHERE id = ? AND status = 'pending' "
                    "AND (claimed_by IS NULL OR claimed_by = ?)",
                    (now, outcome.row_id, token),
                ).rowcount
            else:
                changed = conn.execute(
                    "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, "
                    "next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL "
                    "WHERE id = ? AND status = 'pending' "
                    "AND (claimed_by IS NULL OR claimed_by = ?)",
                    (
                        outcome.status,
                        outcome.error,
                        outcome.next_attempt_at,
                        outcome.row_id,
                        token,
                    ),
                ).rowcount
            if outcome.status == "dead" and changed:
                dead.append(outcome.row_id)
    if not dead:
        return []
    marks = ", ".join("?" for _ in dead)
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox AS o WHERE o.id IN ({marks}) ORDER BY o.id", dead
    ).fetchall()
    return [OutboxRow(*row) for row in rows]


def outbox_depth(
    conn: Connection, upstream: str, site: str | None = None
) -> tuple[int, float | None]:
    """Pending rows of ``upstream`` and the oldest one's creation time (of one site's
    incidents when ``site`` is given)."""
    if site is None:
        count, oldest = conn.execute(
            "SELECT COUNT(*), MIN(created_at) FROM outbox"
            " WHERE upstream = ? AND status = 'pending'",
            (upstream,),
        ).fetchone()
    else:
        count, oldest = conn.execute(
            "SELECT COUNT(*), MIN(o.created_at) FROM outbox AS o"
            f" WHERE o.upstream = ? AND o.status = 'pending' AND {_OF_SITE}",
            (upstream, site),
        ).fetchone()
    return int(count), oldest


def last_delivered(conn: Connection, upstream: str, site: str | None = None) -> list[OutboxRow]:
    """The newest delivered row of each incident on ``upstream`` (for adapters that keep
    state upstream, such as Alertmanager's firing alerts, to pick up after a restart);
    only ``site``'s incidents when given (several workers: each site's own adapters)."""
    of_site = f"AND {_OF_SITE}" if site is not None else ""
    rows = conn.execute(
        f"""
        SELECT {_OUTBOX_COLUMNS}
        FROM outbox AS o
        JOIN (SELECT MAX(id) AS id FROM outbox
              WHERE upstream = ? AND status = 'delivered'
              GROUP BY incident_id) AS newest ON newest.id = o.id
        WHERE TRUE {of_site}
        ORDER BY o.id
        """,
        (upstream,) if site is None else (upstream, site),
    ).fetchall()
    return [OutboxRow(*row) for row in rows]


def release_site_claims(conn: Connection, site: str, fence: Fence | None = None) -> int:
    """Several workers: a worker that just took ``site`` over frees the outbox claims of
    its pending rows (the previous holder's dispatcher may have died holding them), so
    they go out now instead of when the claims run out. Returns how many it freed. The
    previous holder can record no outcome for them any more: its fence fails."""
    with transaction(conn):
        if fence is not None:
            fence(conn)
        return int(
            conn.execute(
                "UPDATE outbox AS o SET claimed_by = NULL, claimed_until = NULL"
                f" WHERE o.status = 'pending' AND o.claimed_by IS NOT NULL AND {_OF_SITE}",
                (site,),
            ).rowcount
        )


def outbox_rows(
    conn: Connection,
    *,
    incident_id: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Outbox rows (newest first) for ``ccwatch incidents show`` / ``ccwatch tickets list``."""
    clauses, params = [], []
    if incident_id is not None:
        clauses.append("incident_id = ?")
        params.append(incident_id)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = conn.execute(
        "SELECT id, upstream, incident_id, seq, event, idempotency_key, status, attempts, "
        f"created_at, next_attempt_at, delivered_at, last_error FROM outbox {where} "
        "ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def open_event_body(conn: Connection, incident_id: str) -> dict[str, Any] | None:
    """The stored body of the incident's ``open`` event (it carries the diagnostics)."""
    row = conn.execute(
        "SELECT body FROM outbox WHERE incident_id = ? AND event = 'open' ORDER BY id LIMIT 1",
        (incident_id,),
    ).fetchone()
    if row is None:
        return None
    try:
        body = json.loads(row[0])
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def retry_dead(conn: Connection, row_ids: Iterable[int], now: float) -> int:
    """Put dead-lettered rows back to pending (after the operator fixed the cause)."""
    changed = 0
    with transaction(conn):
        for row_id in row_ids:
            changed += conn.execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at = ?, attempts = 0 "
                "WHERE id = ? AND status = 'dead'",
                (now, row_id),
            ).rowcount
    return changed


def watched_incidents(
    conn: Connection, site: str, since: float, only: Iterable[str] | None
) -> list[Incident]:
    """Unresolved incidents and those resolved since ``since`` (the SLA watcher's set)."""
    query = f"SELECT * FROM incidents WHERE site = ? AND ({_NOT_CLOSED} OR resolved_at >= ?)"
    params: list[Any] = [site, since]
    if only is not None:
        ids = list(only)
        if not ids:
            return []
        query += f" AND id IN ({', '.join('?' for _ in ids)})"
        params.extend(ids)
    rows = conn.execute(query + " ORDER BY opened_at", params).fetchall()
    return [Incident.from_row(row) for row in rows]


def component_history(
    conn: Connection, site: str, component: str, since: float, limit: int = 50
) -> list[Incident]:
    """Incidents of site+component opened since ``since``, newest first (RCA drafts)."""
    rows = conn.execute(
        "SELECT * FROM incidents WHERE site = ? AND component = ? AND opened_at >= ?"
        " ORDER BY opened_at DESC LIMIT ?",
        (site, component, since, limit),
    ).fetchall()
    return [Incident.from_row(row) for row in rows]


def recurrence_count(
    conn: Connection, site: str, component: str, since: float, incident_id: str
) -> int:
    """How often site+component's fault came back since ``since`` (escalation ``when:``):
    its other incidents that ended since then (resolved, or expired by ``updated_at``)
    plus the reopens (``data.reopen_count``) of its incidents still open or ended since."""
    rows = conn.execute(
        "SELECT id, state, data FROM incidents WHERE site = ? AND component = ? AND ("
        f"{_NOT_CLOSED}"
        " OR (state = 'resolved' AND resolved_at >= ?)"
        " OR (state = 'expired' AND updated_at >= ?))",
        (site, component, since, since),
    ).fetchall()
    ended = sum(
        1 for row in rows if row["id"] != incident_id and row["state"] in ("resolved", "expired")
    )
    reopens = 0
    for row in rows:
        count = json.loads(row["data"] or "{}").get("reopen_count") or 0
        reopens += int(count) if isinstance(count, int | float) else 0
    return ended + reopens
