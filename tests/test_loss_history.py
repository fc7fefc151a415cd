"""The per-minute loss history table (``ccwatch.history``), on both state backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ccwatch import history
from ccwatch.severity import Severity
from ccwatch.state import StateStore

MINUTE = 1_795_000_020 // 60 * 60


def test_a_minute_keeps_its_maxima_and_old_minutes_are_pruned(
    open_store: Callable[..., StateStore],
) -> None:
    store = open_store()
    store.run_sync(lambda c: history.record(c, MINUTE, {"acd": (0.25, 3), "ivr": (0.01, 1)}))
    # Written again (a restart within the minute): the higher values stay, per column.
    store.run_sync(lambda c: history.record(c, MINUTE, {"acd": (0.05, 2), "ivr": (0.03, 0)}))
    store.run_sync(lambda c: history.record(c, MINUTE + 60, {"acd": (0.0, 0)}))
    found = store.run_sync(lambda c: history.series(c, MINUTE, MINUTE + 120))
    assert found == {
        "acd": [
            history.Point(MINUTE, 0.25, Severity.CRITICAL),
            history.Point(MINUTE + 60, 0.0, Severity.NONE),
        ],
        "ivr": [history.Point(MINUTE, 0.03, Severity.MINOR)],
    }
    only = store.run_sync(lambda c: history.series(c, MINUTE + 0.5, MINUTE + 120, "acd"))
    assert only == {"acd": [history.Point(MINUTE + 60, 0.0, Severity.NONE)]}
    assert store.run_sync(lambda c: history.prune(c, MINUTE + 60)) == 2
    assert store.run_sync(lambda c: history.series(c, 0, MINUTE + 120)) == {
        "acd": [history.Point(MINUTE + 60, 0.0, Severity.NONE)]
    }


def test_the_sites_of_a_fleet_keep_their_own_rows(open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    store.run_sync(lambda c: history.record(c, MINUTE, {"acd": (0.25, 3)}, site="blr1"))
    store.run_sync(lambda c: history.record(c, MINUTE, {"acd": (0.01, 1)}, site="pune1"))
    # The same component and minute of another site is another row, not a maximum.
    assert store.run_sync(lambda c: history.series(c, MINUTE, MINUTE + 60, site="pune1")) == {
        "acd": [history.Point(MINUTE, 0.01, Severity.MINOR)]
    }
    assert store.run_sync(
        lambda c: history.series(c, MINUTE, MINUTE + 60, "acd", site="blr1")
    ) == {"acd": [history.Point(MINUTE, 0.25, Severity.CRITICAL)]}
    assert store.run_sync(lambda c: history.prune(c, MINUTE + 60)) == 2, "every site's rows"


def test_rows_written_before_the_site_column_are_the_single_sites(tmp_path: Path) -> None:
    """A database at history step 1 (no site column) keeps its rows, as site ''."""
    import sqlite3

    from ccwatch.compose import MIGRATIONS
    from ccwatch.state import SqliteStore, schema_versions

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(history.MIGRATIONS.steps[1])  # type: ignore[arg-type]
        connection.execute(
            "CREATE TABLE schema_migrations (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        connection.execute("INSERT INTO schema_migrations VALUES ('history', 1)")
        connection.execute("INSERT INTO loss_history VALUES ('acd', ?, 0.2, 3)", (MINUTE,))
        connection.execute("PRAGMA user_version = 1000")
    store = SqliteStore.open(path, MIGRATIONS)
    try:
        assert store.run_sync(schema_versions)["history"] == 2
        assert store.run_sync(lambda c: history.series(c, MINUTE, MINUTE + 60, site="")) == {
            "acd": [history.Point(MINUTE, 0.2, Severity.CRITICAL)]
        }
    finally:
        store.close()
