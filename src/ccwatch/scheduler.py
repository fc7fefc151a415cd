"""Cron-scheduled jobs of the daemon (daily checklist, retention cleanup).

``run_scheduler(jobs, store)`` runs APScheduler's ``AsyncIOScheduler`` with one cron
trigger per job, in the job's own time zone, until it is cancelled::

    daily = CronSchedule(cron="30 6 * * *", timezone="Asia/Kolkata")
    jobs = [ScheduledJob("checklist:daily", daily, run_daily)]
    await run_scheduler(jobs, runtime.store)

Every run is recorded in the state database (``scheduler_runs``). On start, a job with
``catch_up`` whose cron fired while the daemon was down runs once right away, however
many fire times were missed (coalesced). A job never overlaps itself: a fire time that
comes while the previous run is still going is skipped with a warning. A run that
raises is logged and recorded; it never stops the scheduler.

Several workers (``sites:``) share ``scheduler_runs``: a fleet runs one scheduler per
job lease, on the worker holding it (``ccwatch.sites``), and passes the lease's
``guard`` (checked before each run: a worker whose lease ran out starts nothing) and
``fence`` (checked in the transaction recording a run: a worker that lost the lease
records nothing). The next holder's scheduler starts from the shared history, so a run
recorded by the previous holder is not repeated, and one it did not finish (it died
mid-run) is caught up like a run missed while ccwatch was down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ccwatch.cron import CronSchedule
from ccwatch.errors import LeaseLostError
from ccwatch.state import Connection, Migrations, StateStore, transaction

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

logger = logging.getLogger(__name__)

# The table this module owns (see ccwatch.state.migrations).
MIGRATIONS = Migrations(
    "scheduler",
    {
        1: """
    CREATE TABLE scheduler_runs (
        job              TEXT PRIMARY KEY,
        last_run_at      REAL NOT NULL,
        finished_at      REAL
    );
    """,
    },
)


@dataclass(frozen=True)
class ScheduledJob:
    """One cron job. ``name`` is unique and keys the run history (``checklist:daily``);
    ``schedule`` is validated already (it comes from the config)."""

    name: str
    schedule: CronSchedule
    run: Callable[[], Awaitable[None]]


def missed_fire_time(trigger: CronTrigger, last_run: datetime, now: datetime) -> datetime | None:
    """The first fire time after ``last_run`` if it is already due at ``now``, else None."""
    first_after: datetime | None = trigger.get_next_fire_time(last_run, now)
    if first_after is not None and first_after <= now:
        return first_after
    return None


def last_run_times(store: StateStore) -> dict[str, datetime]:
    """When each job last started, from the state database."""

    def read(connection: Connection) -> dict[str, datetime]:
        rows = connection.execute("SELECT job, last_run_at FROM scheduler_runs").fetchall()
        return {row["job"]: datetime.fromtimestamp(row["last_run_at"], UTC) for row in rows}

    return store.run_sync(read)


Guard = Callable[[], None]
"""Raises ``LeaseLostError`` when this worker may no longer run the jobs (a fleet)."""
Fence = Callable[[Connection], None]
"""Run first in the transaction recording a run; raises ``LeaseLostError`` likewise."""


class _JobRunner:
    """Runs one job at most once at a time and records each run."""

    def __init__(
        self,
        job: ScheduledJob,
        store: StateStore,
        clock: Callable[[], float],
        guard: Guard | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.job = job
        self.store = store
        self.clock = clock
        self.guard = guard
        self.fence = fence
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        if self._lock.locked():
            logger.warning(
                "scheduled job %s is still running from its previous fire time; skipping this one",
                self.job.name,
            )
            return
        async with self._lock:
            if self.guard is not None:
                try:
                    self.guard()
                except LeaseLostError as exc:
                    logger.warning("scheduled job %s not run here: %s", self.job.name, exc)
                    return
            started_at = self.clock()
            try:
                await self.job.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error(
                    "scheduled job %s failed: %s: %s; it runs again at its next fire time",
                    self.job.name,
                    type(exc).__name__,
                    exc,
                )
            try:
                await self.store.run(
                    lambda c: _record_run_in(
                        c, self.job.name, started_at, self.clock(), self.fence
                    )
                )
            except LeaseLostError as exc:
                logger.warning("scheduled job %s: run not recorded here: %s", self.job.name, exc)


def add_runner(scheduler: AsyncIOScheduler, runner: _JobRunner, trigger: BaseTrigger) -> None:
    """Schedule ``runner`` so that APScheduler awaits it on the event loop.

    The bound ``__call__`` is passed, not the runner: APScheduler's asyncio executor
    recognises coroutine *functions* only, and would run a callable object in a worker
    thread, creating a coroutine that is never awaited (the job silently never runs).
    """
    scheduler.add_job(
        runner.__call__,
        trigger,
        id=runner.job.name,
        name=runner.job.name,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=3600,
        replace_existing=True,
    )


def _record_run_in(
    connection: Connection,
    job: str,
    started_at: float,
    finished_at: float,
    fence: Fence | None = None,
) -> None:
    with transaction(connection):
        if fence is not None:
            fence(connection)
        connection.execute(
            "INSERT INTO scheduler_runs (job, last_run_at, finished_at) VALUES (?, ?, ?) "
            "ON CONFLICT (job) DO UPDATE SET last_run_at = excluded.last_run_at, "
            "finished_at = excluded.finished_at",
            (job, started_at, finished_at),
        )


async def run_scheduler(
    jobs: Sequence[ScheduledJob],
    store: StateStore,
    *,
    clock: Callable[[], float] = time.time,
    guard: Guard | None = None,
    fence: Fence | None = None,
) -> None:
    """Run ``jobs`` on their cron schedules until cancelled (see the module docstring).

    ``clock`` (Unix seconds) decides what was missed while the daemon was down and
    stamps the run history; tests pass a fixed one. ``guard`` and ``fence``: a job
    lease's, on a worker of a fleet.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"scheduled job names must be unique: {names}")
    runners = {job.name: _JobRunner(job, store, clock, guard, fence) for job in jobs}
    history = await store.run(
        lambda c: {
            row["job"]: datetime.fromtimestamp(row["last_run_at"], UTC)
            for row in c.execute("SELECT job, last_run_at FROM scheduler_runs")
        }
    )
    now = datetime.fromtimestamp(clock(), UTC)
    catch_up: list[asyncio.Task[None]] = []
    # Loaded here, not at import: the composition root imports this module for its table,
    # and APScheduler (with multiprocessing behind it) costs memory nobody uses without jobs.
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
    for job in jobs:
        trigger = job.schedule.trigger()
        last_run = history.get(job.name)
        if last_run is None:
            # First start with this job: nothing was missed yet, but from now on a fire
            # time that passes while we are down will be caught up.
            await store.run(functools.partial(_record_baseline, job=job.name, at=clock()))
        elif job.schedule.catch_up and (
            missed := missed_fire_time(trigger, last_run, now)
        ) is not None:
            logger.info(
                "scheduled job %s missed its run at %s while ccwatch was down; running it now",
                job.name,
                missed.isoformat(),
            )
            catch_up.append(asyncio.create_task(runners[job.name](), name=f"catch-up {job.name}"))
        add_runner(scheduler, runners[job.name], trigger)
        logger.info(
            "scheduled %s (%s %s), next run %s",
            job.name,
            job.schedule.cron,
            job.schedule.timezone,
            trigger.get_next_fire_time(None, now),
        )
    scheduler.start()
    try:
        await asyncio.Event().wait()
    finally:
        scheduler.shutdown(wait=False)
        for task in catch_up:
            task.cancel()
        await asyncio.gather(*catch_up, return_exceptions=True)


def _record_baseline(connection: Connection, job: str, at: float) -> None:
    with transaction(connection):
        connection.execute(
            "INSERT INTO scheduler_runs (job, last_run_at, finished_at) VALUES (?, ?, NULL) "
            "ON CONFLICT (job) DO NOTHING",
            (job, at),
        )


def next_run_time(job: ScheduledJob, after: datetime) -> datetime | None:
    """When ``job`` fires next after ``after`` (for reports and the status page)."""
    fire: datetime | None = job.schedule.trigger().get_next_fire_time(
        None, after + timedelta(microseconds=1)
    )
    return fire
