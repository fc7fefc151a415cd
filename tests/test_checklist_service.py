"""The daemon side: metrics, history, incidents, e-mail on schedule, the scheduled job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.checklists.checks.base import MemoryUse
from ccwatch.checklists.definition import load_checklist_file
from ccwatch.checklists.history import recent_runs
from ccwatch.checklists.service import ChecklistService
from ccwatch.config import Config, EmailConfig
from ccwatch.errors import TemporaryUpstreamError
from ccwatch.incidents.external import RecordingIncidents
from ccwatch.scheduler import last_run_times, run_scheduler
from ccwatch.severity import Severity
from ccwatch.state import Connection, StateStore, transaction
from tests.test_checklist_support import NOW, config, write_checklist

GIB = 1024**3
CHECKLIST = """
schedule: {cron: "30 6 * * *", timezone: Asia/Kolkata}
email_when: problems
checks:
  - {id: mem, type: memory, open_incident: true, incident_severity: major}
  - {id: swap, type: swap}
  - {id: broken, type: disk}
"""


class Host:
    """Probes whose answers the test changes between runs."""

    available_gib = 1.0

    def memory(self) -> MemoryUse:
        return MemoryUse(100 * GIB, int(self.available_gib * GIB))


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def service(
    tmp_path: Path,
    store: StateStore,
    host: Host,
    cfg: Config | None = None,
    sent: list[EmailMessage] | None = None,
    fail_send: bool = False,
) -> tuple[ChecklistService, CollectorRegistry, RecordingIncidents]:
    import dataclasses

    from ccwatch.checklists.checks import HostProbes

    def no_disk(path: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("statvfs exploded")

    async def send(email: EmailConfig, message: EmailMessage) -> None:
        if fail_send:
            raise TemporaryUpstreamError("SMTP 127.0.0.1:25 failed: connection refused")
        assert sent is not None
        sent.append(message)

    probes = dataclasses.replace(
        HostProbes(),
        virtual_memory=host.memory,
        swap_memory=lambda: MemoryUse(0, 0),
        disk_space=no_disk,
    )
    registry = CollectorRegistry()
    incidents = RecordingIncidents()
    checklist = load_checklist_file(write_checklist(tmp_path / "lists", "daily", CHECKLIST))
    cfg = cfg or config(
        email={
            "host": "127.0.0.1",
            "port": 25,
            "starttls": False,
            "from": "ccwatch@example.com",
            "to": ["it@example.com"],
        }
    )
    built = ChecklistService(
        [checklist],
        cfg.check_settings(),
        cfg.email,
        store,
        registry,
        incidents=incidents,
        host=probes,
        clock=lambda: NOW,
        send=send,
    )
    return built, registry, incidents


def test_metrics_history_incidents_and_email(tmp_path: Path, store: StateStore) -> None:
    host = Host()
    sent: list[EmailMessage] = []
    svc, registry, incidents = service(tmp_path, store, host, sent=sent)
    checklist = svc.checklists[0]

    asyncio.run(svc.run_and_report(checklist))
    value = registry.get_sample_value
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "mem"}) == 2
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "broken"}) == 3
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "swap"}) is None
    assert value("ccwatch_checklist_last_run_timestamp_seconds", {"checklist": "daily"}) == NOW
    duration = value("ccwatch_checklist_duration_seconds", {"checklist": "daily"})
    assert duration is not None and duration >= 0
    assert incidents.open[("checklist:mem", "checklist")]["severity"] is Severity.MAJOR
    assert "daily check mem failed: 1.0% available" in incidents.reports[0]["impact"]
    assert [m["Subject"] for m in sent] == [
        "[ccwatch] blr1 daily checklist: 1 FAIL, 1 ERROR, 0 OK, 1 SKIPPED"
    ]

    host.available_gib = 60
    asyncio.run(svc.run_and_report(checklist, trigger="manual"))
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "mem"}) == 0
    assert incidents.open == {}  # cleared when the check passed again
    assert len(sent) == 2  # the disk check still errors: a problem, so e-mailed

    runs = store.run_sync(lambda c: recent_runs(c, "daily"))
    assert [(r["trigger"], r["counts"]["fail"], r["emailed"]) for r in runs] == [
        ("manual", 0, True),
        ("schedule", 1, True),
    ]
    rows = store.run_sync(
        lambda c: c.execute(
            "SELECT check_id, status, value FROM checklist_results WHERE run_id = ? ORDER BY check_id",
            (runs[0]["id"],),
        ).fetchall()
    )
    assert [(r["check_id"], r["status"]) for r in rows] == [
        ("broken", "error"),
        ("mem", "ok"),
        ("swap", "skipped"),
    ]


def test_email_failure_is_counted_and_the_run_kept(tmp_path: Path, store: StateStore) -> None:
    svc, registry, _ = service(tmp_path, store, Host(), fail_send=True)
    asyncio.run(svc.run_and_report(svc.checklists[0]))
    assert (
        registry.get_sample_value("ccwatch_checklist_email_failures_total", {"checklist": "daily"})
        == 1
    )
    (run,) = store.run_sync(lambda c: recent_runs(c, "daily"))
    assert run["emailed"] is False


def test_no_email_section_still_runs(tmp_path: Path, store: StateStore) -> None:
    svc, registry, _ = service(tmp_path, store, Host(), cfg=config())
    asyncio.run(svc.run_and_report(svc.checklists[0]))
    assert (
        registry.get_sample_value(
            "ccwatch_checklist_last_run_timestamp_seconds", {"checklist": "daily"}
        )
        == NOW
    )


def test_the_scheduled_job_catches_up_a_missed_morning(tmp_path: Path, store: StateStore) -> None:
    svc, _, _ = service(tmp_path, store, Host(), sent=[])
    (job,) = svc.jobs()
    assert job.name == "checklist:daily"
    assert (job.schedule.cron, str(job.schedule.timezone)) == ("30 6 * * *", "Asia/Kolkata")

    def down_since_yesterday(connection: Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO scheduler_runs (job, last_run_at) VALUES (?, ?)",
                ("checklist:daily", NOW - timedelta(days=2).total_seconds()),
            )

    store.run_sync(down_since_yesterday)

    async def scenario() -> None:
        task = asyncio.create_task(run_scheduler([job], store, clock=lambda: NOW))
        try:
            for _ in range(500):
                if last_run_times(store)["checklist:daily"].timestamp() == NOW:
                    break  # the catch-up run finished and was recorded
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert len(store.run_sync(lambda c: recent_runs(c, "daily"))) == 1
    assert last_run_times(store)["checklist:daily"].timestamp() == NOW


def test_metrics_are_restored_from_history_after_a_restart(
    tmp_path: Path, store: StateStore
) -> None:
    # Keep the first registry alive: shared_metrics keys on id(registry), and a freed
    # registry's id can be reused by the next one.
    before, _first_registry, _ = service(tmp_path, store, Host(), cfg=config())
    asyncio.run(before.run_and_report(before.checklists[0]))
    after, registry, _ = service(tmp_path, store, Host(), cfg=config())
    after.restore_metrics()
    value = registry.get_sample_value
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "mem"}) == 2
    assert value("ccwatch_checklist_check_status", {"checklist": "daily", "check": "broken"}) == 3
    assert value("ccwatch_checklist_last_run_timestamp_seconds", {"checklist": "daily"}) == NOW
