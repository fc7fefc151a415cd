"""The SQLite state store: incidents, their timeline, the ticket outbox, run history.

One connection, one owner: the connection is created on, and only ever used from, a
single worker thread. The event loop hands it work with ``await store.run(fn)`` and the
CLI with ``store.run_sync(fn)``, so a slow disk (fsync on commit) never stalls the loop
and there is no connection sharing to get wrong. WAL mode lets ``ccwatch incidents
list`` read from another process while the daemon writes.

Schema changes are numbered migrations applied in order at open; ``PRAGMA user_version``
records the last one applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ccwatch.errors import StateStoreError

T = TypeVar("T")

# version -> SQL script. Append new versions; never edit one that has shipped.
MIGRATIONS: dict[int, str] = {
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
    # Scheduler run history (catch-up after downtime) and checklist results.
    2: """
    CREATE TABLE scheduler_runs (
        job              TEXT PRIMARY KEY,
        last_run_at      REAL NOT NULL,
        finished_at      REAL
    );

    CREATE TABLE checklist_runs (
        id               INTEGER PRIMARY KEY,
        checklist        TEXT NOT NULL,
        started_at       REAL NOT NULL,
        duration_seconds REAL NOT NULL,
        trigger          TEXT NOT NULL,
        counts           TEXT NOT NULL,
        emailed          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX checklist_runs_by_checklist ON checklist_runs (checklist, started_at);

    CREATE TABLE checklist_results (
        run_id           INTEGER NOT NULL REFERENCES checklist_runs (id) ON DELETE CASCADE,
        check_id         TEXT NOT NULL,
        type             TEXT NOT NULL,
        status           TEXT NOT NULL,
        value            TEXT NOT NULL DEFAULT '',
        threshold        TEXT NOT NULL DEFAULT '',
        hint             TEXT NOT NULL DEFAULT '',
        detail           TEXT NOT NULL DEFAULT '',
        duration_seconds REAL NOT NULL,
        PRIMARY KEY (run_id, check_id)
    );
    """,
}


class StateStore:
    """Owner of the one SQLite connection; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccwatch-store")
        self._connection: sqlite3.Connection | None = None
        self._owner: threading.Thread | None = None

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (creating folders and file) and migrate; raises StateStoreError on failure."""
        store = cls(path)
        try:
            store._executor.submit(store._connect).result()
        except (OSError, sqlite3.Error) as exc:
            store._executor.shutdown(wait=False)
            raise StateStoreError(
                f"cannot open state database {path}: {exc}; check `state.path` and that "
                "its folder is writable by the ccwatch user"
            ) from exc
        return store

    def _connect(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against a process crash (what SIGKILL tests);
        # only an OS crash can lose the last commits.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        self._connection = connection
        self._owner = threading.current_thread()
        migrate(connection)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise StateStoreError("the state store is closed")
        return fn(self._connection)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, for synchronous callers (the CLI, tests)."""
        if threading.current_thread() is self._owner:
            return self._call(fn)
        return self._executor.submit(self._call, fn).result()

    def close(self) -> None:
        def _close(_: sqlite3.Connection) -> None:
            assert self._connection is not None
            self._connection.close()
            self._connection = None

        if self._connection is not None:
            self.run_sync(_close)
        self._executor.shutdown(wait=True)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue instead of failing
    half-way with SQLITE_BUSY.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations newer than the database's version; returns the new version."""
    current = schema_version(connection)
    latest = max(MIGRATIONS)
    if current > latest:
        raise StateStoreError(
            f"state database schema version {current} is newer than this ccwatch knows "
            f"({latest}); run a newer ccwatch or restore a backup"
        )
    for version in sorted(v for v in MIGRATIONS if v > current):
        with transaction(connection):
            for statement in _statements(MIGRATIONS[version]):
                connection.execute(statement)
            # PRAGMA takes no parameters; version is an int from our own table.
            connection.execute(f"PRAGMA user_version = {int(version)}")
    return schema_version(connection)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
