"""The state store: per-owner migrations, rollback, reopening (on both backends: the
``open_store`` fixture); SQLite's WAL, file modes, one owner thread, readers in other
processes. PostgreSQL's own promises are in test_state_postgres.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ccwatch.checklists.history import last_run
from ccwatch.compose import MIGRATIONS, open_state
from ccwatch.errors import StateStoreError
from ccwatch.state import (
    STORE_ERRORS,
    Connection,
    Migrations,
    SqliteStore,
    StateStore,
    schema_versions,
    transaction,
)
from ccwatch.state.migrations import PER_OWNER


def test_open_creates_folders_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    store = open_state(path)
    try:
        assert store.run_sync(schema_versions) == {m.owner: m.latest for m in MIGRATIONS}
        # Incidents carry host facts and log excerpts: the site's business only.
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert path.stat().st_mode & 0o777 == 0o600
        mode = store.run_sync(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
        tables = store.run_sync(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        )
        assert {"incidents", "incident_timeline", "outbox"} <= tables
    finally:
        store.close()


def _insert_outbox_row(connection: Connection) -> None:
    with transaction(connection):
        connection.execute(
            "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
            " created_at, next_attempt_at) VALUES ('w', 'i1', 1, 'open', 'k:1', '{}', 0, 0)"
        )


def test_reopen_is_idempotent_and_keeps_data(open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    assert store.run_sync(schema_versions) == {m.owner: m.latest for m in MIGRATIONS}
    store.run_sync(_insert_outbox_row)
    store.close()
    again = open_store()
    assert again.run_sync(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]) == 1
    assert again.run_sync(schema_versions) == {m.owner: m.latest for m in MIGRATIONS}


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {PER_OWNER + 5}")
    with pytest.raises(StateStoreError, match="newer than this ccwatch knows"):
        open_state(path)


def test_a_feature_schema_newer_than_known_is_refused(
    open_store: Callable[..., StateStore],
) -> None:
    store = open_store()
    store.run_sync(
        lambda c: c.execute("UPDATE schema_migrations SET version = 9 WHERE owner = 'incidents'")
    )
    store.close()
    with pytest.raises(StateStoreError, match="schema of incidents is version 9"):
        open_store()


def test_a_database_of_the_global_numbering_is_adopted(tmp_path: Path) -> None:
    """A state.db written before migrations were split by owner (user_version 2) keeps its
    data and gains only what it lacks."""
    path = tmp_path / "state.db"
    legacy_owners = ("incidents", "scheduler", "checklists")  # the tables of that era
    everything = [m.steps[1] for m in MIGRATIONS if m.owner in legacy_owners]
    with sqlite3.connect(path) as connection:
        for script in everything:
            connection.executescript(script)
        connection.execute(
            "INSERT INTO scheduler_runs (job, last_run_at) VALUES ('checklist:daily', 1.0)"
        )
        connection.execute(
            "INSERT INTO checklist_runs (id, checklist, started_at, duration_seconds, trigger,"
            " counts) VALUES (1, 'daily', 1.0, 0.1, 'cron', '{}')"
        )
        for check in ("disk", "backup"):  # file order, kept by rowid in that era
            connection.execute(
                "INSERT INTO checklist_results (run_id, check_id, type, status,"
                " duration_seconds) VALUES (1, ?, 'x', 'ok', 0.01)",
                (check,),
            )
        connection.execute("PRAGMA user_version = 2")
    extra = Migrations("extra", {1: "CREATE TABLE extra (x INTEGER)"})
    store = SqliteStore.open(path, [*MIGRATIONS, extra])
    try:
        versions = store.run_sync(schema_versions)
        # Adopted at 1, then the missing steps: incidents 2 (expired leaves the one-active
        # index) and 3 (the outbox claim), checklists 2 (the results' order as a column)
        # and the history table, which did not exist then (with its site, step 2).
        assert versions == {
            "incidents": 3,
            "scheduler": 1,
            "checklists": 2,
            "history": 2,
            "maintenance": 1,
            "desk_tickets": 1,
            "extra": 1,
        }
        jobs = store.run_sync(lambda c: c.execute("SELECT job FROM scheduler_runs").fetchall())
        assert [row[0] for row in jobs] == ["checklist:daily"]
        run = store.run_sync(lambda c: last_run(c, "daily"))
        assert run is not None and [r.id for r in run.results] == ["disk", "backup"]
    finally:
        store.close()


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateStoreError, match="cannot open state database"):
        open_state(blocker / "state.db")


def test_failed_transaction_rolls_back(open_store: Callable[..., StateStore]) -> None:
    store = open_store()

    def half_done(connection: Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
                " created_at, next_attempt_at) VALUES ('w', 'i1', 1, 'open', 'k:1', '{}', 0, 0)"
            )
            raise RuntimeError("crash between the two writes")

    with pytest.raises(RuntimeError):
        store.run_sync(half_done)
    assert store.run_sync(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]) == 0
    # The connection is usable afterwards (no transaction left open).
    store.run_sync(_insert_outbox_row)
    assert store.run_sync(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]) == 1


def test_a_failed_statement_reaches_the_caller_as_a_store_error(
    open_store: Callable[..., StateStore],
) -> None:
    """What the features catch (``STORE_ERRORS``) covers both backends' failures."""
    store = open_store()
    store.run_sync(_insert_outbox_row)
    with pytest.raises(STORE_ERRORS):
        store.run_sync(_insert_outbox_row)  # the same idempotency key twice, outside ON CONFLICT


def test_all_work_runs_on_the_one_owner_thread(tmp_path: Path) -> None:
    store = open_state(tmp_path / "state.db")
    seen: set[str] = set()

    def record(_: sqlite3.Connection) -> None:
        seen.add(threading.current_thread().name)

    async def many() -> None:
        await asyncio.gather(*(store.run(record) for _ in range(50)))

    asyncio.run(many())
    store.run_sync(record)
    store.close()
    assert len(seen) == 1 and next(iter(seen)).startswith("ccwatch-store")


def test_another_process_can_read_while_we_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path)
    store.run_sync(lambda c: c.execute("BEGIN IMMEDIATE"))  # a writer holds the lock
    reader = sqlite3.connect(path, timeout=1)
    assert reader.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0
    reader.close()
    store.run_sync(lambda c: c.execute("COMMIT"))
    store.close()
