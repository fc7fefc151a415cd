"""The cron scheduler: catch-up of fire times missed while the daemon was down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from ccwatch.cron import CronSchedule, cron_trigger
from ccwatch.scheduler import (
    ScheduledJob,
    last_run_times,
    missed_fire_time,
    run_scheduler,
)
from ccwatch.state import Connection, StateStore, transaction

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 14:30 in Asia/Kolkata


def scheduled(
    name: str, cron: str, zone: str, run: Callable[[], Awaitable[None]], catch_up: bool = True
) -> ScheduledJob:
    return ScheduledJob(name, CronSchedule(cron=cron, timezone=zone, catch_up=catch_up), run)


def _set_last_run(store: StateStore, job: str, at: datetime) -> None:
    def write(connection: Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO scheduler_runs (job, last_run_at) VALUES (?, ?)", (job, at.timestamp())
            )

    store.run_sync(write)


async def _run_briefly(
    jobs: list[ScheduledJob], store: StateStore, ran: asyncio.Event | None
) -> None:
    task = asyncio.create_task(run_scheduler(jobs, store, clock=NOW.timestamp))
    if ran is not None:
        await asyncio.wait_for(ran.wait(), timeout=10)
    for _ in range(20):  # let the catch-up task finish recording
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def test_missed_fire_time_is_the_first_one_after_the_last_run() -> None:
    trigger = cron_trigger("30 6 * * *", "Asia/Kolkata")  # 01:00 UTC
    three_days_ago = NOW - timedelta(days=3)
    missed = missed_fire_time(trigger, three_days_ago, NOW)
    assert missed == datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    assert missed_fire_time(trigger, NOW - timedelta(hours=2), NOW) is None


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("* * *", "UTC", "Wrong number of fields"),
        ("0 6 * * *", "Asia/Bangalore", "unknown time zone 'Asia/Bangalore'"),
    ],
)
def test_invalid_cron_or_zone_says_what_is_wrong(cron: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        CronSchedule(cron=cron, timezone=zone)


async def _noop() -> None:
    return None


def test_missed_runs_after_downtime_run_once_on_start(store: StateStore) -> None:
    calls: list[str] = []
    ran = asyncio.Event()

    async def job() -> None:
        calls.append("run")
        ran.set()

    # Down for three days: three fire times missed, one catch-up run.
    _set_last_run(store, "checklist:daily", NOW - timedelta(days=3))
    jobs = [scheduled("checklist:daily", "30 6 * * *", "Asia/Kolkata", job)]
    asyncio.run(_run_briefly(jobs, store, ran))
    assert calls == ["run"]
    assert last_run_times(store)["checklist:daily"] == NOW


def test_nothing_missed_means_no_run_on_start(store: StateStore) -> None:
    calls: list[str] = []

    async def job() -> None:
        calls.append("run")

    _set_last_run(store, "retention", NOW - timedelta(hours=2))
    jobs = [scheduled("retention", "30 6 * * *", "Asia/Kolkata", job)]
    asyncio.run(_run_briefly(jobs, store, None))
    assert calls == []


def test_catch_up_disabled_skips_the_missed_run(store: StateStore) -> None:
    calls: list[str] = []

    async def job() -> None:
        calls.append("run")

    _set_last_run(store, "retention", NOW - timedelta(days=3))
    jobs = [scheduled("retention", "30 6 * * *", "Asia/Kolkata", job, catch_up=False)]
    asyncio.run(_run_briefly(jobs, store, None))
    assert calls == []


def test_first_start_records_a_baseline_so_later_downtime_is_caught_up(store: StateStore) -> None:
    calls: list[str] = []

    async def job() -> None:
        calls.append("run")

    jobs = [scheduled("checklist:daily", "30 6 * * *", "UTC", job)]
    asyncio.run(_run_briefly(jobs, store, None))
    assert calls == []
    assert last_run_times(store)["checklist:daily"] == NOW


def test_a_failing_job_is_recorded_and_does_not_stop_the_scheduler(store: StateStore) -> None:
    ran = asyncio.Event()

    async def broken() -> None:
        ran.set()
        raise RuntimeError("database unreachable")

    _set_last_run(store, "retention", NOW - timedelta(days=2))
    jobs = [scheduled("retention", "0 2 * * *", "UTC", broken)]
    asyncio.run(_run_briefly(jobs, store, ran))
    assert last_run_times(store)["retention"] == NOW


def test_a_fire_time_runs_the_job_on_the_event_loop(store: StateStore) -> None:
    """Through APScheduler's real executor: the job is awaited, and its run is recorded."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.date import DateTrigger

    from ccwatch.scheduler import _JobRunner, add_runner

    async def scenario() -> None:
        ran = asyncio.Event()

        async def job() -> None:
            ran.set()

        runner = _JobRunner(scheduled("fires", "0 3 * * *", "UTC", job), store, NOW.timestamp)
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        add_runner(scheduler, runner, DateTrigger(run_date=datetime.now(UTC)))
        scheduler.start()
        try:
            await asyncio.wait_for(ran.wait(), timeout=10)
        finally:
            scheduler.shutdown(wait=False)
        for _ in range(100):  # the run is recorded right after the job returns
            if "fires" in last_run_times(store):
                break
            await asyncio.sleep(0.02)

    asyncio.run(scenario())
    assert last_run_times(store)["fires"] == NOW
