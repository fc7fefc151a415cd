"""Ad-hoc maintenance windows (table ``maintenance_windows``) and ``MaintenanceCalendar``.

The calendar holds the scheduled windows of the config and a copy of the ad-hoc ones
(read at start, refreshed after each ``add``/``end``), so the incident service asks it
``window_for(component, at)`` on its write path without touching the database.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from ccwatch.maintenance.windows import Schedule, Window, occurrences, window_at
from ccwatch.state import Connection, Migrations, StateStore, transaction

MIGRATIONS = Migrations(
    "maintenance",
    {
        1: """
    CREATE TABLE maintenance_windows (
        id          TEXT PRIMARY KEY,
        components  TEXT NOT NULL,     -- JSON list of names or ["*"]
        start       REAL NOT NULL,     -- epoch seconds
        end_at      REAL NOT NULL,     -- epoch seconds (moved to now by `end`)
        reason      TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        created_at  REAL NOT NULL,
        ended_at    REAL              -- ended early by `ccwatch maintenance end`
    );
    CREATE INDEX maintenance_windows_end ON maintenance_windows (end_at);
    """
    },
)

KEEP_SECONDS = 8 * 86400.0  # ended ad-hoc windows are listed this long


class UnknownWindowError(LookupError):
    pass


def _row(row: tuple[object, ...]) -> Window:
    ident, components, start, end, reason = row
    return Window(
        str(ident),
        tuple(json.loads(str(components))),
        float(start),  # type: ignore[arg-type]
        float(end),  # type: ignore[arg-type]
        str(reason),
        "ad-hoc",
    )


def adhoc_windows(conn: Connection, since: float) -> list[Window]:
    rows = conn.execute(
        "SELECT id, components, start, end_at, reason FROM maintenance_windows"
        " WHERE end_at > ? ORDER BY start, id",
        (since,),
    ).fetchall()
    return [_row(tuple(r)) for r in rows]


def add_window(
    conn: Connection,
    components: Sequence[str],
    start: float,
    end: float,
    reason: str,
    by: str,
    now: float,
) -> Window:
    if end <= start:
        raise ValueError("a window must end after it starts")
    if not components:
        raise ValueError("name at least one component (or '*')")
    if not reason.strip():
        raise ValueError("give the reason for the window")
    ident = secrets.token_hex(4)
    with transaction(conn):
        conn.execute(
            "INSERT INTO maintenance_windows (id, components, start, end_at, reason,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ident, json.dumps(list(components)), start, end, reason.strip(), by, now),
        )
    return Window(ident, tuple(components), start, end, reason.strip(), "ad-hoc")


def end_window(conn: Connection, ident: str, now: float) -> Window:
    """End an ad-hoc window now (or drop one not started yet)."""
    with transaction(conn):
        row = conn.execute(
            "SELECT id, components, start, end_at, reason FROM maintenance_windows WHERE id = ?",
            (ident,),
        ).fetchone()
        if row is None:
            raise UnknownWindowError(ident)
        window = _row(tuple(row))
        end = max(min(window.end, now), window.start)
        conn.execute(
            "UPDATE maintenance_windows SET end_at = ?, ended_at = ? WHERE id = ?",
            (end, now, ident),
        )
    return Window(window.id, window.components, window.start, end, window.reason, "ad-hoc")


@dataclass
class MaintenanceCalendar:
    """Scheduled (config) plus ad-hoc (database) windows."""

    scheduled: tuple[Schedule, ...] = ()
    adhoc: list[Window] = field(default_factory=list)

    def refresh_sync(self, store: StateStore, now: float) -> None:
        self.adhoc = store.run_sync(lambda conn: adhoc_windows(conn, now - KEEP_SECONDS))

    async def refresh(self, store: StateStore, now: float) -> None:
        self.adhoc = await store.run(lambda conn: adhoc_windows(conn, now - KEEP_SECONDS))

    def window_for(self, component: str, at: float) -> Window | None:
        return window_at((*self.scheduled, *self.adhoc), component, at)

    def hook(self, component: str, at: float) -> dict[str, object] | None:
        """The incident service's ``maintenance`` hook: the window as a dict, or None."""
        window = self.window_for(component, at)
        return window.as_dict() if window is not None else None

    def listing(self, now: float, ahead: float = 7 * 86400.0) -> dict[str, list[Window]]:
        """Active and upcoming (within ``ahead``) windows, and recently ended ad-hoc ones."""
        every = occurrences((*self.scheduled, *self.adhoc), now, now + ahead)
        return {
            "active": [w for w in every if w.start <= now < w.end],
            "upcoming": [w for w in every if w.start > now],
            "ended": [w for w in self.adhoc if w.end <= now],
        }
