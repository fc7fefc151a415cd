"""End to end: the daemon schedules the checklist, catches up a missed morning at start,
exposes the result at /metrics and opens an incident for a failing check."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccwatch.compose import open_state
from ccwatch.state import transaction
from tests.conftest import base_config, wait_until

CHECKLIST = """
schedule: {cron: "30 6 * * *", timezone: Asia/Kolkata}
email_when: never
checks:
  - {id: cpu, type: cpu_load, params: {warn_per_cpu: null, fail_per_cpu: null}}
  - {id: nothing_here, type: file_age, open_incident: true, incident_severity: major,
     params: {path: /nonexistent/ccwatch.log}}
"""


@pytest.mark.slow
def test_daemon_catches_up_the_missed_checklist_and_exports_metrics(
    tmp_path: Path, daemon_factory: Callable[..., Any]
) -> None:
    state = tmp_path / "state.db"
    store = open_state(state)

    def missed_two_mornings(connection: sqlite3.Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO scheduler_runs (job, last_run_at) VALUES ('checklist:daily', ?)",
                (time.time() - 2 * 86400,),
            )

    store.run_sync(missed_two_mornings)
    store.close()

    daemon = daemon_factory(base_config(tmp_path, state={"path": str(state)}), start=False)
    lists = daemon.config_path.parent / "checklists"
    lists.mkdir()
    (lists / "daily.yaml").write_text(CHECKLIST)
    daemon.start()

    def metrics() -> str | None:
        text: str = daemon.get("/metrics").text
        return text if "ccwatch_checklist_last_run_timestamp_seconds{" in text else None

    text = wait_until(metrics, timeout=20)
    assert 'ccwatch_checklist_check_status{check="cpu",checklist="daily"} 0.0' in text
    assert 'ccwatch_checklist_check_status{check="nothing_here",checklist="daily"} 2.0' in text
    assert 'ccwatch_checklist_duration_seconds{checklist="daily"}' in text
    incidents = daemon.get("/api/incidents").json()["incidents"]
    (incident,) = [i for i in incidents if i["component"] == "checklist:nothing_here"]
    assert (incident["kind"], incident["severity"], incident["state"]) == (
        "checklist",
        "major",
        "open",
    )
    assert incident["impact"].startswith("daily check nothing_here failed: /nonexistent/")
    assert daemon.stop() == 0
    reopened = open_state(state)
    try:
        runs = reopened.run_sync(
            lambda c: c.execute("SELECT checklist, trigger FROM checklist_runs").fetchall()
        )
    finally:
        reopened.close()
    assert [(r["checklist"], r["trigger"]) for r in runs] == [("daily", "schedule")]
