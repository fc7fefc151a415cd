"""``LeaseManager``: the loop of one worker of a fleet (``sites:``).

Every ``renew_every`` a round: one transaction writes this worker's heartbeat
(``fleet_workers``) and renews its leases; a lease missing from the answer is lost (its
site stops here at once). Then it reads the lease table and the live workers and follows
``balance.plan``: takes free or expired sites up to its share, gives back one surplus
site per ``rebalance_every``.

A site runs here as one task (``start_site(lease)``, built by the composition root: the
site's incident service, pipeline, MQTT session, dispatcher, SLA watcher). It is stopped
(cancelled, and awaited for at most ``STOP_GRACE`` seconds) before its lease is given back,
so two workers never run a site at once. A watchdog stops every site whose lease's local
deadline (last renew's start + TTL - margin) passes, whatever the round is waiting on (a
database that does not answer), so a worker that cannot renew stops processing and
sending before the lease can expire and another worker take the site. A site task that
ends by itself (its lease fenced, a failure) is given back, and not taken again here for
``REST`` times the TTL, so another worker gets the chance.

Job leases (``jobs``: ``fleet``, ``host:<host>``; ``leases.JOBS``) are held the same
way — renewed in the round's transaction, stopped by the watchdog at their deadline,
given back on stop, left to the others for a while after a failure — but outside the
balancing: a worker that wants one takes it whenever the snapshot shows it free or
expired, and keeps it until it stops. ``start_job(lease)`` runs what the lease covers.

On stop every site and job is stopped, every lease given back and the worker row
deleted: the other workers take them at their next round instead of after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.errors import LeaseLostError
from ccwatch.fleet import balance, leases
from ccwatch.fleet.leases import JOBS, SITES, Lease, Snapshot
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness
from ccwatch.state import STORE_ERRORS, Connection, StateStore, transaction

logger = logging.getLogger(__name__)

STOP_GRACE = 3.0
REST = 2.0  # times the TTL: a site that failed here is left to the others this long
READINESS_NAME = "fleet"

StartSite = Callable[[Lease], Coroutine[Any, Any, None]]


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.held = Gauge(
            "ccwatch_fleet_sites_held", "Sites whose lease this worker holds", registry=registry
        )
        self.target = Gauge(
            "ccwatch_fleet_sites_target",
            "Sites this worker should hold: ceil(sites / live workers)",
            registry=registry,
        )
        self.sites = Gauge(
            "ccwatch_fleet_sites",
            "Sites of the fleet (configured and discovered)",
            registry=registry,
        )
        self.workers = Gauge(
            "ccwatch_fleet_workers_live", "Workers with a live heartbeat", registry=registry
        )
        self.epoch = Gauge(
            "ccwatch_fleet_site_lease_epoch",
            "Fencing epoch of each site lease this worker holds (no series: not held here)",
            ["site"],
            registry=registry,
        )
        self.changes = Counter(
            "ccwatch_fleet_lease_changes_total",
            "Lease changes of this worker: acquired, given_back, lost (another worker has "
            "it, or it ran out), stopped_at_deadline (not renewed in time), failed",
            ["change"],
            registry=registry,
        )
        self.renew_failures = Counter(
            "ccwatch_fleet_lease_renew_failures_total",
            "Rounds whose heartbeat and renew could not be written",
            registry=registry,
        )
        self.job_epoch = Gauge(
            "ccwatch_fleet_job_lease_epoch",
            "Fencing epoch of each job lease (fleet, host:<host>) this worker holds "
            "(no series: not held here)",
            ["lease"],
            registry=registry,
        )
        for change in ("acquired", "given_back", "lost", "stopped_at_deadline", "failed"):
            self.changes.labels(change=change)


@dataclass
class _Site:
    lease: Lease
    task: asyncio.Task[None]
    acquired_at: float  # monotonic


@dataclass(frozen=True)
class Timings:
    ttl: float
    renew_every: float
    margin: float
    rebalance_every: float


class LeaseManager:
    """See the module docstring. ``run()`` until cancelled."""

    def __init__(
        self,
        store: StateStore,
        worker: str,
        url: str,
        timings: Timings,
        configured: Collection[str],
        start_site: StartSite,
        registry: CollectorRegistry,
        *,
        discover: bool = False,
        readiness: Readiness | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        jobs: Collection[str] = (),
        start_job: StartSite | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.url = url
        self.timings = timings
        self.configured = list(configured)
        self.discover = discover
        self.start_site = start_site
        self.readiness = readiness
        self.monotonic = monotonic
        self.metrics = shared_metrics(FleetMetrics, registry)
        self.sites: dict[str, _Site] = {}
        self.wanted_jobs = list(jobs)
        self.start_job = start_job
        self.jobs: dict[str, _Site] = {}  # the job leases held here
        self.snapshot: Snapshot | None = None  # the last round's view of the fleet
        self._resting: dict[str, float] = {}  # site -> monotonic time it may be taken again
        self._jobs_resting: dict[str, float] = {}
        self._last_give_back = 0.0
        self._started = False

    # --- what the pages and the API read ------------------------------------------------

    def held(self) -> dict[str, Lease]:
        return {site: held.lease for site, held in self.sites.items()}

    def held_jobs(self) -> dict[str, Lease]:
        return {name: held.lease for name, held in self.jobs.items()}

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        if self.readiness is not None:
            self.readiness.expect(READINESS_NAME, "first lease round not done yet")
        self._last_give_back = self.monotonic()
        watchdog = asyncio.create_task(self._watchdog(), name="fleet:watchdog")
        try:
            while True:
                started = self.monotonic()
                try:
                    await self._round()
                except STORE_ERRORS as exc:
                    logger.error("fleet: lease round failed: %s; retrying", exc)
                    if self.readiness is not None:
                        self.readiness.set(READINESS_NAME, False, f"lease round failed: {exc}")
                delay = self.timings.renew_every - (self.monotonic() - started)
                await asyncio.sleep(max(0.05, delay))
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self._stop_all()

    async def _round(self) -> None:
        await self._reap()
        started = self.monotonic()
        ttl = self.timings.ttl
        first = not self._started
        try:
            renewed, renewed_jobs = await self.store.run(lambda c: self._renew(c, first))
        except STORE_ERRORS as exc:
            self.metrics.renew_failures.inc()
            logger.warning(
                "fleet: cannot renew the leases of %d site(s) and %d job lease(s): %s; each "
                "stops here at its deadline unless a renew gets through",
                len(self.sites),
                len(self.jobs),
                exc,
            )
            raise
        self._started = True
        deadline = started + ttl - self.timings.margin
        for held_map, now_renewed in ((self.sites, renewed), (self.jobs, renewed_jobs)):
            for name, held in list(held_map.items()):
                if now_renewed.get(name) == held.lease.epoch:
                    held.lease.extend(deadline)
                else:
                    held.lease.lose("not renewed: another worker holds it, or it ran out")
                    await self._stop(name, "lost", jobs=held_map is self.jobs)
        snap = await self.store.run(leases.snapshot)
        self.snapshot = snap
        by_site = {row.site: row for row in snap.leases}
        wanted = set(self.configured)
        if self.discover:
            wanted.update(by_site)
        live = max(1, len(snap.live_workers()))
        now_mono = self.monotonic()
        self._resting = {s: t for s, t in self._resting.items() if t > now_mono}
        may_give_back = now_mono - self._last_give_back >= self.timings.rebalance_every
        plan = balance.plan(
            self.worker,
            {site: held.acquired_at for site, held in self.sites.items()},
            wanted,
            by_site,
            live,
            snap.now,
            may_give_back,
            resting=self._resting,
        )
        for site in plan.give_back:
            self._last_give_back = now_mono
            logger.info(
                "fleet: giving back site %s (holding %d, share %d of %d sites over %d worker(s))",
                site,
                len(self.sites),
                plan.target,
                len(wanted),
                live,
            )
            await self._stop(site, "given_back")
        for site in plan.take:
            await self._take(site)
        await self._take_jobs(snap, now_mono)
        self.metrics.held.set(len(self.sites))
        self.metrics.target.set(plan.target)
        self.metrics.sites.set(len(wanted))
        self.metrics.workers.set(live)
        if self.readiness is not None:
            self.readiness.set(
                READINESS_NAME,
                True,
                f"holding {len(self.sites)} of {len(wanted)} site(s)"
                + (f" and job lease(s) {', '.join(sorted(self.jobs))}" if self.jobs else "")
                + f", {live} live worker(s)",
            )

    def _renew(self, conn: Connection, first: bool) -> tuple[dict[str, int], dict[str, int]]:
        ttl = self.timings.ttl
        with transaction(conn):
            if first:
                leases.ensure_sites(conn, self.configured)
            leases.heartbeat(conn, self.worker, self.url, ttl)
            return (
                leases.renew(conn, self.worker, ttl, self.sites),
                leases.renew(conn, self.worker, ttl, self.jobs, table=JOBS),
            )

    async def _take(self, site: str) -> None:
        ttl, margin = self.timings.ttl, self.timings.margin
        lease = await self.store.run(
            lambda c: leases.acquire_lease(c, site, self.worker, ttl, margin, self.monotonic)
        )
        if lease is None:
            return  # another worker was quicker
        self.metrics.changes.labels(change="acquired").inc()
        self.metrics.epoch.labels(site=site).set(lease.epoch)
        logger.info("fleet: took site %s (epoch %d)", site, lease.epoch)
        task = asyncio.create_task(self.start_site(lease), name=f"site:{site}")
        self.sites[site] = _Site(lease, task, self.monotonic())

    async def _take_jobs(self, snap: Snapshot, now_mono: float) -> None:
        """Take each wanted job lease the snapshot shows free or expired (not balanced)."""
        if self.start_job is None:
            return
        rows = {row.site: row for row in snap.jobs}
        self._jobs_resting = {n: t for n, t in self._jobs_resting.items() if t > now_mono}
        for name in self.wanted_jobs:
            row = rows.get(name)
            if name in self.jobs or name in self._jobs_resting:
                continue
            if row is not None and row.held_at(snap.now):
                continue
            lease = await self.store.run(
                functools.partial(
                    leases.acquire_lease,
                    site=name,
                    worker=self.worker,
                    ttl=self.timings.ttl,
                    margin=self.timings.margin,
                    monotonic=self.monotonic,
                    table=JOBS,
                )
            )
            if lease is None:
                continue  # another worker was quicker
            self.metrics.changes.labels(change="acquired").inc()
            self.metrics.job_epoch.labels(lease=name).set(lease.epoch)
            logger.info("fleet: took job lease %s (epoch %d)", name, lease.epoch)
            task = asyncio.create_task(self.start_job(lease), name=f"job:{name}")
            self.jobs[name] = _Site(lease, task, self.monotonic())

    async def _reap(self) -> None:
        """Site (and job) tasks that ended by themselves: give the lease back (if it is
        still ours) and leave it to the others for a while."""
        for held_map, resting in ((self.sites, self._resting), (self.jobs, self._jobs_resting)):
            what = "site" if held_map is self.sites else "job lease"
            for name, held in list(held_map.items()):
                if not held.task.done():
                    continue
                error = None if held.task.cancelled() else held.task.exception()
                lost = held.lease.lost is not None or _is_lease_lost(error)
                if lost:
                    reason = "lost"
                else:
                    reason = "failed"
                    logger.error(
                        "fleet: %s %s stopped unexpectedly (%s); giving it back",
                        what,
                        name,
                        error or "ended",
                        exc_info=error,
                    )
                await self._stop(name, reason, jobs=held_map is self.jobs)
                resting[name] = self.monotonic() + REST * self.timings.ttl

    async def _watchdog(self) -> None:
        """Stop every site whose lease's local deadline passed (see the module docstring)."""
        step = max(0.02, min(0.25, self.timings.margin / 4))
        while True:
            await asyncio.sleep(step)
            for name, held in [*self.sites.items(), *self.jobs.items()]:
                if held.lease.lost is None and held.lease.remaining() <= 0:
                    held.lease.lose("not renewed in time (local deadline passed)")
                    logger.error(
                        "fleet: %s %s: lease epoch %d not renewed in time; stopping it "
                        "here before the lease can run out",
                        "site" if held.lease.table is SITES else "job lease",
                        name,
                        held.lease.epoch,
                    )
                    self.metrics.changes.labels(change="stopped_at_deadline").inc()
                    held.task.cancel()

    async def _stop(self, site: str, change: str, *, jobs: bool = False) -> None:
        """Stop the site's (``jobs``: the job lease's) task, then give the lease back at
        its epoch (a lease another worker has taken meanwhile is left alone: the epoch no
        longer matches)."""
        held = (self.jobs if jobs else self.sites).pop(site, None)
        if held is None:
            return
        what = "job lease" if jobs else "site"
        held.task.cancel()
        await _wait_stopped(held.task, f"{what} {site}")
        self.metrics.changes.labels(change=change).inc()
        with contextlib.suppress(KeyError):
            if jobs:
                self.metrics.job_epoch.remove(site)
            else:
                self.metrics.epoch.remove(site)
        self.metrics.held.set(len(self.sites))
        if change == "lost":
            logger.warning(
                "fleet: %s %s stopped here: lease epoch %d lost (%s)",
                what,
                site,
                held.lease.epoch,
                held.lease.lost.why if held.lease.lost else "",
            )
        lease = held.lease
        try:
            await self.store.run(
                lambda c: leases.release(c, site, self.worker, lease.epoch, lease.table)
            )
        except STORE_ERRORS as exc:
            logger.warning("fleet: could not give back %s %s (%s); it expires", what, site, exc)

    async def _stop_all(self) -> None:
        every = [
            *((f"site {name}", held) for name, held in self.sites.items()),
            *((f"job lease {name}", held) for name, held in self.jobs.items()),
        ]
        for _, held in every:
            held.task.cancel()
        for what, held in every:
            await _wait_stopped(held.task, what)
        stopped = dict(self.sites)
        stopped_jobs = dict(self.jobs)
        self.sites.clear()
        self.jobs.clear()
        self.metrics.held.set(0)
        for name in stopped_jobs:
            with contextlib.suppress(KeyError):
                self.metrics.job_epoch.remove(name)

        def release_all(conn: Connection) -> None:
            with transaction(conn):
                for site, held in stopped.items():
                    leases.release(conn, site, self.worker, held.lease.epoch)
                for name, held in stopped_jobs.items():
                    leases.release(conn, name, self.worker, held.lease.epoch, JOBS)
                leases.forget_worker(conn, self.worker)

        try:
            await self.store.run(release_all)
        except STORE_ERRORS as exc:
            logger.warning("fleet: could not give back the leases on stop (%s); they expire", exc)
        if stopped or stopped_jobs:
            logger.info("fleet: gave back %s", ", ".join([*sorted(stopped), *sorted(stopped_jobs)]))


def _is_lease_lost(error: BaseException | None) -> bool:
    if isinstance(error, LeaseLostError):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_is_lease_lost(inner) for inner in error.exceptions)
    return False


async def _wait_stopped(task: asyncio.Task[None], what: str) -> None:
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE)
    if not done:
        logger.error(
            "fleet: %s did not stop within %.0f s of being cancelled (a ccwatch bug)",
            what,
            STOP_GRACE,
        )
        return
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
