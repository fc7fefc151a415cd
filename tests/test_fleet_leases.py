"""Site leases on a real PostgreSQL (``fleet/leases.py``): acquire, renew, expiry, the
takeover's epoch, and the fence refusing an old holder's incident writes, outbox claims,
outcomes and sends; the balancing of two lease managers on one database.

Expiry is made by moving ``expires_at`` into the past with SQL (the database's clock
decides), never by sleeping; the lease's local deadline runs on a fake monotonic clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import MIGRATIONS, incident_settings
from ccwatch.config import Config
from ccwatch.errors import LeaseLostError
from ccwatch.fleet import balance, leases
from ccwatch.fleet.leases import Lease, LeaseRow
from ccwatch.fleet.manager import LeaseManager, Timings
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.repository import Claim, Outcome
from ccwatch.incidents.service import IncidentService
from ccwatch.severity import Severity
from ccwatch.state import StateStore, transaction
from ccwatch.tickets.adapters import RecordingAdapter
from ccwatch.tickets.outbox import OutboxDispatcher
from tests.conftest import wait_until

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")
MAJOR = Reading(Severity.MAJOR, 0.05, "5 of 100 agents cannot take calls (5.0%)")


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(pg_schema_dsn: str) -> Iterator[StateStore]:
    from ccwatch.state.postgres import PostgresStore

    opened = PostgresStore.open(pg_schema_dsn, (*MIGRATIONS, leases.MIGRATIONS), max_size=4)
    yield opened
    opened.close()


def expire(store: StateStore, site: str) -> None:
    """The lease of ``site`` runs out now (database clock)."""
    store.run_sync(
        lambda c: c.execute(
            f"UPDATE site_leases SET expires_at = {leases.NOW} - 1 WHERE site = ?", (site,)
        )
    )


def take(store: StateStore, site: str, worker: str, mono: Mono | None = None) -> Lease | None:
    clock = mono or Mono()
    return store.run_sync(lambda c: leases.acquire_lease(c, site, worker, 30.0, 5.0, clock))


def config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "state": {"path": str(tmp_path / "unused.db")},
            "classification": {"open_after": "0s"},
            "tickets": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
        }
    )


def service_with(store: StateStore, cfg: Config, lease: Lease) -> IncidentService:
    service = IncidentService(
        store, incident_settings(cfg), CollectorRegistry(), fence=lease.fence
    )
    service.load_sync()
    return service


def rows(store: StateStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return store.run_sync(lambda c: [tuple(r) for r in c.execute(sql, params).fetchall()])


def test_one_holder_at_a_time_and_each_takeover_adds_one_to_the_epoch(store: StateStore) -> None:
    first = take(store, "blr1", "a")
    assert first is not None and first.epoch == 1
    assert take(store, "blr1", "b") is None, "held and unexpired: nobody else takes it"
    assert take(store, "blr1", "a") is None, "not even its holder, a second time"
    renewed = store.run_sync(lambda c: leases.renew(c, "a", 30.0, ["blr1"]))
    assert renewed == {"blr1": 1}
    assert store.run_sync(lambda c: leases.renew(c, "b", 30.0, ["blr1"])) == {}

    expire(store, "blr1")
    assert store.run_sync(lambda c: leases.renew(c, "a", 30.0, ["blr1"])) == {}, (
        "an expired lease is not renewed: it may already be another worker's"
    )
    second = take(store, "blr1", "b")
    assert second is not None and second.epoch == 2
    assert not store.run_sync(lambda c: leases.release(c, "blr1", "a", 1)), "not a's any more"
    assert store.run_sync(lambda c: leases.release(c, "blr1", "b", 2))
    third = take(store, "blr1", "a")
    assert third is not None and third.epoch == 3, "given back: free at once, epoch goes on"
    (row,) = store.run_sync(leases.snapshot).leases
    assert (row.site, row.holder, row.epoch) == ("blr1", "a", 3)


def test_the_local_deadline_passes_before_the_lease_can_expire(store: StateStore) -> None:
    mono = Mono()
    lease = take(store, "blr1", "a", mono)
    assert lease is not None
    assert lease.deadline == mono.now + 30.0 - 5.0
    lease.guard()
    mono.now = lease.deadline
    with pytest.raises(LeaseLostError, match="not renewed in time"):
        lease.guard()
    with pytest.raises(LeaseLostError):
        store.run_sync(lambda c: leases.check(c, "blr1", "b", 1, 5.0))
    lease.extend(mono.now + 100)
    with pytest.raises(LeaseLostError):
        lease.guard()  # lost stays lost: a late renew does not bring the site back


def test_an_old_holder_writes_nothing_after_the_takeover(
    store: StateStore, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    old_lease = take(store, "blr1", "old")
    assert old_lease is not None
    old = service_with(store, cfg, old_lease)

    async def scenario() -> None:
        await old.apply(old.observe("acd", MAJOR, 1000.0))
        assert old.fenced is None
        expire(store, "blr1")
        new_lease = take(store, "blr1", "new")
        assert new_lease is not None and new_lease.epoch == 2
        new = service_with(store, cfg, new_lease)
        (incident,) = await store.run(
            lambda c: repository.active_incidents(c, "blr1")
        )
        # The old holder still believes it holds the site: its escalation is refused
        # whole, and it stops writing.
        await old.apply(old.observe("acd", CRITICAL, 1001.0))
        assert isinstance(old.fenced, LeaseLostError)
        assert "taken by new at epoch 2" in old.fenced.why
        with pytest.raises(LeaseLostError):
            await old.acknowledge(incident.id, "asha")
        # The new holder continues the same incident.
        await new.apply(new.observe("acd", CRITICAL, 1002.0))
        assert new.fenced is None

    asyncio.run(scenario())
    changes = rows(store, "SELECT change FROM incident_timeline ORDER BY id")
    assert changes == [("opened",), ("escalated",)], "one escalation: the new holder's"
    events = rows(store, "SELECT event FROM outbox ORDER BY id")
    assert events == [("open",), ("escalate",)]
    (state,) = rows(store, "SELECT state, acknowledged_by FROM incidents")
    assert state == ("open", None)


def test_an_old_holder_claims_records_and_sends_nothing(
    store: StateStore, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    old_lease = take(store, "blr1", "old")
    assert old_lease is not None
    service = service_with(store, cfg, old_lease)
    asyncio.run(service.apply(service.observe("acd", MAJOR, 1000.0)))
    now = 2e9
    claim = Claim("old-dispatcher", 300.0)
    ready, _ = store.run_sync(
        lambda c: repository.take_ready(
            c, "hook", now, 10, claim, site="blr1", fence=old_lease.fence
        )
    )
    assert [r.event for r in ready] == ["open"]
    expire(store, "blr1")
    new_lease = take(store, "blr1", "new")
    assert new_lease is not None
    # The new holder frees the old holder's claim; the old holder can record nothing.
    assert store.run_sync(lambda c: repository.release_site_claims(c, "blr1", new_lease.fence)) == 1
    delivered = [Outcome(ready[0].id, "delivered", None, now)]
    with pytest.raises(LeaseLostError):
        store.run_sync(
            lambda c: repository.record_outcomes(c, delivered, now, claim, old_lease.fence)
        )
    with pytest.raises(LeaseLostError):
        store.run_sync(
            lambda c: repository.take_ready(
                c, "hook", now, 10, claim, site="blr1", fence=old_lease.fence
            )
        )
    assert rows(store, "SELECT status, claimed_by FROM outbox") == [("pending", None)]

    # A dispatcher of the old lease sends nothing; the new holder's sends the event once.
    recorder = RecordingAdapter(name="hook")

    def dispatcher(lease: Lease) -> OutboxDispatcher:
        return OutboxDispatcher(
            store,
            {"hook": recorder},
            registry=CollectorRegistry(),
            clock=lambda: now,
            site="blr1",
            fence=lease.fence,
            guard=lease.guard,
        )

    with pytest.raises(LeaseLostError):
        asyncio.run(dispatcher(old_lease).drain_once("hook"))
    assert recorder.delivered == []
    asyncio.run(dispatcher(new_lease).drain_once("hook"))
    assert [e.event for e in recorder.delivered] == ["open"]
    assert rows(store, "SELECT status FROM outbox") == [("delivered",)]


def test_a_dispatcher_past_its_local_deadline_sends_nothing(
    store: StateStore, tmp_path: Path
) -> None:
    mono = Mono()
    lease = take(store, "blr1", "a", mono)
    assert lease is not None
    service = service_with(store, config(tmp_path), lease)
    asyncio.run(service.apply(service.observe("acd", MAJOR, 1000.0)))
    recorder = RecordingAdapter(name="hook")
    dispatcher = OutboxDispatcher(
        store,
        {"hook": recorder},
        registry=CollectorRegistry(),
        clock=lambda: 2e9,
        site="blr1",
        fence=lease.fence,
        guard=lease.guard,
    )
    mono.now = lease.deadline  # the database would still say yes: the worker says no
    with pytest.raises(LeaseLostError, match="not renewed in time"):
        asyncio.run(dispatcher.drain_once("hook"))
    assert recorder.delivered == []
    assert rows(store, "SELECT status, attempts FROM outbox") == [("pending", 0)]


def test_a_takeover_waits_for_the_holders_write_in_flight(store: StateStore) -> None:
    """The fence share-locks the lease row: a takeover waits until the write commits, so
    the new holder, loading after its takeover, sees the write."""
    lease = take(store, "blr1", "old")
    assert lease is not None
    fenced, commit = threading.Event(), threading.Event()

    def write(conn: Any) -> None:
        with transaction(conn):
            lease.fence(conn)
            fenced.set()
            assert commit.wait(20)

    writer = threading.Thread(target=store.run_sync, args=(write,))
    writer.start()
    try:
        assert fenced.wait(10)
        expire_blocked: list[Any] = []
        taker_result: list[Lease | None] = []

        def takeover() -> None:
            def run(conn: Any) -> None:
                # Moving the expiry waits on the share lock too: do it in the same call.
                conn.execute(
                    f"UPDATE site_leases SET expires_at = {leases.NOW} - 1 WHERE site = 'blr1'"
                )
                taker_result.append(leases.acquire_lease(conn, "blr1", "new", 30.0, 5.0))

            try:
                store.run_sync(run)
            except Exception as exc:  # pragma: no cover - shown by the assertion below
                expire_blocked.append(exc)

        taker = threading.Thread(target=takeover)
        taker.start()
        wait_until(
            lambda: rows(
                store,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()",
            )[0][0]
            == 1,
            timeout=10,
        )
        assert not taker_result
        commit.set()
        writer.join(10)
        taker.join(10)
        assert expire_blocked == []
        assert taker_result and taker_result[0] is not None and taker_result[0].epoch == 2
    finally:
        commit.set()
        writer.join(10)


def test_a_frozen_holder_inside_a_write_cannot_hold_the_site(store: StateStore) -> None:
    """A worker frozen (SIGSTOP) inside a fenced transaction: PostgreSQL ends its
    session after the fence's idle timeout, the takeover goes on, and the frozen write
    never commits."""
    lease = take(store, "blr1", "old")
    assert lease is not None
    lease.idle_timeout = 1.0
    fenced, resume = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def frozen_write(conn: Any) -> None:
        with transaction(conn):
            lease.fence(conn)
            conn.execute(
                "INSERT INTO incidents (id, site, component, severity, peak_severity, state,"
                " production_loss, peak_loss, impact, opened_at, updated_at)"
                " VALUES ('x', 'blr1', 'acd', 3, 3, 'open', 0.2, 0.2, '', 0, 0)"
            )
            fenced.set()
            assert resume.wait(30)  # frozen: the process does nothing

    def run_writer() -> None:
        try:
            store.run_sync(frozen_write)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=run_writer)
    writer.start()
    try:
        assert fenced.wait(10)

        def takeover(conn: Any) -> Lease | None:
            conn.execute(
                f"UPDATE site_leases SET expires_at = {leases.NOW} - 1 WHERE site = 'blr1'"
            )
            return leases.acquire_lease(conn, "blr1", "new", 30.0, 5.0)

        # Waits on the frozen transaction's share lock until PostgreSQL ends it.
        new = wait_until(lambda: _try(lambda: store.run_sync(takeover)), timeout=20)
        assert new.epoch == 2
    finally:
        resume.set()
        writer.join(10)
    assert outcome and outcome[0] is not None, "the frozen write must not commit"
    assert rows(store, "SELECT count(*) FROM incidents") == [(0,)]


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def test_balance_targets_the_ceiling_and_gives_back_one_at_a_time() -> None:
    assert balance.target(12, 3) == 4 and balance.target(13, 3) == 5 and balance.target(0, 2) == 0
    wanted = [f"s{i}" for i in range(12)]
    free = {s: LeaseRow(s, None, 0, 0.0, None, None) for s in wanted}
    plan = balance.plan("w1", {}, wanted, free, 3, 100.0, may_give_back=True)
    assert plan.target == 4 and len(plan.take) == 4 and set(plan.take) <= set(wanted)
    other = balance.plan("w2", {}, wanted, free, 3, 100.0, may_give_back=True)
    assert other.take != plan.take, "workers reach for different sites first"
    held = {s: float(i) for i, s in enumerate(wanted[:6])}
    taken = {s: LeaseRow(s, "w1", 1, 200.0, None, None) for s in wanted[:6]}
    assert balance.plan("w1", held, wanted, {**free, **taken}, 3, 100.0, True).give_back == ("s5",)
    assert balance.plan("w1", held, wanted, {**free, **taken}, 3, 100.0, False).give_back == ()
    assert balance.plan("w1", held, wanted, {**free, **taken}, 2, 100.0, True) == balance.Plan(6)
    resting = balance.plan("w3", {}, wanted, free, 3, 100.0, True, resting=set(wanted[:10]))
    assert set(resting.take) == {"s10", "s11"}
    assert balance.plan("w1", {"gone": 1.0}, wanted, free, 3, 100.0, False).give_back == ("gone",)


def test_two_managers_share_the_sites_and_one_takes_all_when_the_other_stops(
    store: StateStore,
) -> None:
    sites = [f"site{i}" for i in range(4)]
    timings = Timings(ttl=3.0, renew_every=0.2, margin=0.5, rebalance_every=0.2)
    running: dict[str, set[str]] = {"a": set(), "b": set()}

    def starter(worker: str) -> Callable[[Lease], Any]:
        async def run_site(lease: Lease) -> None:
            running[worker].add(lease.site)
            try:
                await asyncio.Event().wait()
            finally:
                running[worker].discard(lease.site)

        return run_site

    async def scenario() -> None:
        a = LeaseManager(store, "a", "", timings, sites, starter("a"), CollectorRegistry())
        b = LeaseManager(store, "b", "", timings, sites, starter("b"), CollectorRegistry())
        task_a = asyncio.create_task(a.run())
        await _until(lambda: len(running["a"]) == 4)
        task_b = asyncio.create_task(b.run())
        await _until(lambda: len(running["a"]) == 2 and len(running["b"]) == 2)
        assert running["a"].isdisjoint(running["b"])
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)
        assert running["b"] == set()
        await _until(lambda: len(running["a"]) == 4)
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)

    asyncio.run(scenario())
    snap = store.run_sync(leases.snapshot)
    assert [row.holder for row in snap.leases] == [None] * 4, "given back on stop"
    assert snap.workers == []
    epochs = [row.epoch for row in snap.leases]
    assert all(1 <= epoch <= 3 for epoch in epochs)


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
