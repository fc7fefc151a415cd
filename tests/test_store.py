"""The SQLite state store: migrations, WAL, one owner thread, readers in other processes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from ccwatch.errors import StateStoreError
from ccwatch.incidents.store import MIGRATIONS, StateStore, schema_version, transaction


def test_open_creates_folders_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    store = StateStore.open(path)
    try:
        assert store.run_sync(schema_version) == max(MIGRATIONS)
        mode = store.run_sync(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
        tables = store.run_sync(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        )
        assert {"incidents", "incident_timeline", "outbox"} <= tables
    finally:
        store.close()


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore.open(path)

    def insert(connection: sqlite3.Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
                " created_at, next_attempt_at) VALUES ('w', 'i1', 1, 'open', 'k:1', '{}', 0, 0)"
            )

    store.run_sync(insert)
    store.close()
    again = StateStore.open(path)
    try:
        assert again.run_sync(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]) == 1
    finally:
        again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {max(MIGRATIONS) + 5}")
    with pytest.raises(StateStoreError, match="newer than this ccwatch knows"):
        StateStore.open(path)


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateStoreError, match="cannot open state database"):
        StateStore.open(blocker / "state.db")


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")

    def half_done(connection: sqlite3.Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
                " created_at, next_attempt_at) VALUES ('w', 'i1', 1, 'open', 'k:1', '{}', 0, 0)"
            )
            raise RuntimeError("crash between the two writes")

    with pytest.raises(RuntimeError):
        store.run_sync(half_done)
    assert store.run_sync(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]) == 0
    store.close()


def test_all_work_runs_on_the_one_owner_thread(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
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
    store = StateStore.open(path)
    store.run_sync(lambda c: c.execute("BEGIN IMMEDIATE"))  # a writer holds the lock
    reader = sqlite3.connect(path, timeout=1)
    assert reader.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0
    reader.close()
    store.run_sync(lambda c: c.execute("COMMIT"))
    store.close()
