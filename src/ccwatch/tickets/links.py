"""Which ticket each service desk holds for an incident: the table ``desk_tickets``.

A service-desk upstream (role ``ticket``, ``tickets/desk.py``) keeps at most one ticket
per incident. The link is written right after the desk created (or found) the ticket,
before the outbox row is marked delivered; a crash between the desk's create and this
write is covered by the desk's own idempotency mechanism or a search by the incident's
dedup key, so a restart finds the ticket again instead of opening a second one.

The reconciler (``tickets/reconciler.py``) records here what it last saw of each ticket
(status, normalised phase, first response, when it polled and when it polls next).
"""

from __future__ import annotations

from dataclasses import dataclass

from ccwatch.state import Connection, Migrations, StateStore, transaction

MIGRATIONS = Migrations(
    "desk_tickets",
    {
        1: """
    CREATE TABLE desk_tickets (
        upstream           TEXT NOT NULL,
        incident_id        TEXT NOT NULL,
        ticket_id          TEXT NOT NULL,
        url                TEXT,
        created_at         REAL NOT NULL,
        status             TEXT,          -- the desk's own status word, as last polled
        phase              TEXT,          -- new | in_progress | waiting | solved
        first_response_at  REAL,          -- the vendor's first real reply, as the desk says
        responder          TEXT,
        polled_at          REAL,
        next_poll_at       REAL NOT NULL DEFAULT 0,
        poll_error         TEXT,
        closed             INTEGER NOT NULL DEFAULT 0,  -- resolved by ccwatch or incident over
        PRIMARY KEY (upstream, incident_id)
    );
    CREATE INDEX desk_tickets_due ON desk_tickets (closed, next_poll_at);
    """
    },
)

_COLUMNS = (
    "upstream, incident_id, ticket_id, url, created_at, status, phase, first_response_at,"
    " responder, polled_at, next_poll_at, poll_error, closed"
)


@dataclass(frozen=True)
class TicketLink:
    upstream: str
    incident_id: str
    ticket_id: str
    url: str | None
    created_at: float
    status: str | None = None
    phase: str | None = None
    first_response_at: float | None = None
    responder: str | None = None
    polled_at: float | None = None
    next_poll_at: float = 0.0
    poll_error: str | None = None
    closed: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "upstream": self.upstream,
            "incident_id": self.incident_id,
            "ticket_id": self.ticket_id,
            "url": self.url,
            "status": self.status,
            "phase": self.phase,
            "first_response_at": self.first_response_at,
            "responder": self.responder,
            "polled_at": self.polled_at,
            "poll_error": self.poll_error,
            "closed": self.closed,
        }


def _link(row: tuple[object, ...]) -> TicketLink:
    (upstream, incident, ticket, url, created, status, phase, first, responder) = row[:9]
    polled, next_poll, error, closed = row[9:]
    return TicketLink(
        str(upstream),
        str(incident),
        str(ticket),
        None if url is None else str(url),
        float(created),  # type: ignore[arg-type]
        None if status is None else str(status),
        None if phase is None else str(phase),
        None if first is None else float(first),  # type: ignore[arg-type]
        None if responder is None else str(responder),
        None if polled is None else float(polled),  # type: ignore[arg-type]
        float(next_poll),  # type: ignore[arg-type]
        None if error is None else str(error),
        bool(closed),
    )


def get(conn: Connection, upstream: str, incident_id: str) -> TicketLink | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM desk_tickets WHERE upstream = ? AND incident_id = ?",
        (upstream, incident_id),
    ).fetchone()
    return None if row is None else _link(tuple(row))


def save(
    conn: Connection,
    upstream: str,
    incident_id: str,
    ticket_id: str,
    url: str | None,
    now: float,
) -> TicketLink:
    """Record the incident's ticket; a second save of the same pair keeps the first ticket."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO desk_tickets (upstream, incident_id, ticket_id, url, created_at,"
            " next_poll_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (upstream, incident_id)"
            " DO NOTHING",
            (upstream, incident_id, ticket_id, url, now, now),
        )
    link = get(conn, upstream, incident_id)
    assert link is not None
    return link


@dataclass(frozen=True)
class Seen:
    """What one poll of a ticket saw (None: nothing new; a failed poll has ``error``)."""

    polled_at: float
    next_poll_at: float
    status: str | None = None
    phase: str | None = None
    first_response_at: float | None = None
    responder: str | None = None
    error: str | None = None


def observed(conn: Connection, link: TicketLink, seen: Seen) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE desk_tickets SET status = COALESCE(?, status), phase = COALESCE(?, phase),"
            " first_response_at = COALESCE(first_response_at, ?),"
            " responder = COALESCE(responder, ?), polled_at = ?, next_poll_at = ?,"
            " poll_error = ? WHERE upstream = ? AND incident_id = ?",
            (
                seen.status,
                seen.phase,
                seen.first_response_at,
                seen.responder,
                seen.polled_at,
                seen.next_poll_at,
                seen.error,
                link.upstream,
                link.incident_id,
            ),
        )


def close(conn: Connection, upstream: str, incident_id: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE desk_tickets SET closed = 1 WHERE upstream = ? AND incident_id = ?",
            (upstream, incident_id),
        )


def reopen(conn: Connection, upstream: str, incident_id: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE desk_tickets SET closed = 0, next_poll_at = 0"
            " WHERE upstream = ? AND incident_id = ?",
            (upstream, incident_id),
        )


def due(
    conn: Connection, upstream: str, now: float, limit: int, site: str | None = None
) -> list[TicketLink]:
    """Open tickets of ``upstream`` whose next poll is due, the most overdue first (of
    the incidents of ``site`` only, when given: a fleet worker polls its sites' tickets)."""
    where = "" if site is None else " AND incident_id IN (SELECT id FROM incidents WHERE site = ?)"
    params: tuple[object, ...] = (upstream, now) + (() if site is None else (site,)) + (limit,)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM desk_tickets WHERE upstream = ? AND closed = 0"
        f" AND next_poll_at <= ?{where} ORDER BY next_poll_at, incident_id LIMIT ?",
        params,
    ).fetchall()
    return [_link(tuple(r)) for r in rows]


def for_incident(conn: Connection, incident_id: str) -> list[TicketLink]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM desk_tickets WHERE incident_id = ? ORDER BY upstream",
        (incident_id,),
    ).fetchall()
    return [_link(tuple(r)) for r in rows]


def listing(conn: Connection, include_closed: bool, limit: int) -> list[TicketLink]:
    where = "" if include_closed else " WHERE closed = 0"
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM desk_tickets{where} ORDER BY created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_link(tuple(r)) for r in rows]


class TicketLinks:
    """The async face of the table for adapters, the reconciler and the pages."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def get(self, upstream: str, incident_id: str) -> TicketLink | None:
        return await self.store.run(lambda c: get(c, upstream, incident_id))

    async def save(
        self, upstream: str, incident_id: str, ticket_id: str, url: str | None, now: float
    ) -> TicketLink:
        return await self.store.run(lambda c: save(c, upstream, incident_id, ticket_id, url, now))

    async def close(self, upstream: str, incident_id: str) -> None:
        await self.store.run(lambda c: close(c, upstream, incident_id))

    async def reopen(self, upstream: str, incident_id: str) -> None:
        await self.store.run(lambda c: reopen(c, upstream, incident_id))

    async def due(
        self, upstream: str, now: float, limit: int = 100, site: str | None = None
    ) -> list[TicketLink]:
        return await self.store.run(lambda c: due(c, upstream, now, limit, site))

    async def for_incident(self, incident_id: str) -> list[TicketLink]:
        return await self.store.run(lambda c: for_incident(c, incident_id))

    async def listing(self, include_closed: bool = False, limit: int = 500) -> list[TicketLink]:
        return await self.store.run(lambda c: listing(c, include_closed, limit))

    async def observed(self, link: TicketLink, seen: Seen) -> None:
        await self.store.run(lambda c: observed(c, link, seen))
