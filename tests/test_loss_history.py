"""The per-minute loss history table (``ccwatch.history``), on both state backends."""

from __future__ import annotations

from collections.abc import Callable

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
