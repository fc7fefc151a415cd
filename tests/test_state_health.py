"""The state database is watched: a full disk, a deleted or replaced file show in /readyz
and ccwatch_state_store_ok, and a deleted file is restored from the live connection."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry

from ccwatch.compose import open_state
from ccwatch.readiness import Readiness
from ccwatch.state import transaction
from ccwatch.state.health import StateHealth
from tests.test_incident_write_faults import fill, small_disk  # noqa: F401 - fixture


def test_a_deleted_database_is_restored_from_the_open_connection(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path)
    try:
        store.run_sync(
            lambda c: c.execute("INSERT INTO scheduler_runs (job, last_run_at) VALUES ('j', 1.0)")
        )
        assert store.probe() is None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        assert store.probe() is None  # restored
        assert path.exists() and path.stat().st_mode & 0o777 == 0o600

        def write(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(
                    "INSERT INTO scheduler_runs (job, last_run_at) VALUES ('k', 2.0)"
                )

        store.run_sync(write)
    finally:
        store.close()
    with sqlite3.connect(path) as reader:
        jobs = sorted(row[0] for row in reader.execute("SELECT job FROM scheduler_runs"))
    assert jobs == ["j", "k"]  # nothing written before or after the deletion was lost


def test_a_replaced_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path)
    try:
        shutil.copy(path, tmp_path / "copy.db")
        (tmp_path / "copy.db").replace(path)
        problem = store.probe()
        assert problem is not None and "was replaced by another file" in problem
    finally:
        store.close()


def test_health_goes_to_readyz_and_the_gauge(small_disk: Path) -> None:  # noqa: F811
    path = small_disk / "state.db"
    store = open_state(path)
    registry = CollectorRegistry()
    readiness = Readiness(registry)
    health = StateHealth(store, readiness, registry)

    async def scenario() -> tuple[str | None, str | None]:
        healthy = await health.check()
        filler = fill(small_disk)
        full = await health.check()
        assert readiness.not_ready() == {"state_store": full}
        assert registry.get_sample_value("ccwatch_state_store_ok") == 0
        filler.unlink()
        assert await health.check() is None
        return healthy, full

    try:
        healthy, full = asyncio.run(scenario())
    finally:
        store.close()
    assert healthy is None
    assert full is not None and "a write transaction fails" in full
    assert readiness.not_ready() == {}
    assert registry.get_sample_value("ccwatch_state_store_ok") == 1
