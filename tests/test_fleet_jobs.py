"""Scheduled jobs and the loss history of a fleet (``sites:``), on a real PostgreSQL.

- Two workers want the ``fleet`` job lease; the retention run that is due (missed while
  the fleet was down) runs once, on the holder; when the holder stops, the other takes
  the lease and does not run it again (the shared ``scheduler_runs``).
- A holder that loses its database mid-run stops the run at its local deadline, before
  the lease can run out; the other worker takes the lease once it expired and runs the
  interrupted occurrence: a dead holder blocks the job for one TTL, not forever.
- One worker (in process, its clock moved by the test), two sites, a real Mosquitto:
  each site's per-minute loss history is recorded under its own name and
  ``/api/overview?site=…`` and ``/api/incidents/<id>`` chart it; the ``fleet`` job lease
  runs the retention missed while the fleet was down (its incident is of the fleet's
  site), the ``host:<host>`` one the host's checklist (``daily@<host>``, its incident of
  the site ``host:<host>``).

The scheduler's clock is a fake one (what was missed is decided by it); the lease
expiry is the database's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from ccwatch.compose import MIGRATIONS
from ccwatch.cron import CronSchedule
from ccwatch.fleet import leases
from ccwatch.fleet.leases import FLEET_JOB, JOBS, Lease
from ccwatch.fleet.manager import LeaseManager, Timings
from ccwatch.scheduler import ScheduledJob, run_scheduler
from ccwatch.state import Connection, StateStore, transaction
from tests.conftest import Mosquitto, base_config, wait_for_port, wait_until

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RETENTION = CronSchedule(cron="30 1 * * *", timezone="UTC", catch_up=True)  # 01:30 UTC


@pytest.fixture
def store(pg_schema_dsn: str) -> Iterator[StateStore]:
    from ccwatch.state.postgres import PostgresStore

    opened = PostgresStore.open(pg_schema_dsn, (*MIGRATIONS, leases.MIGRATIONS), max_size=6)
    yield opened
    opened.close()


def last_run(store: StateStore, job: str, at: datetime) -> None:
    def write(connection: Connection) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO scheduler_runs (job, last_run_at, finished_at) VALUES (?, ?, ?)",
                (job, at.timestamp(), at.timestamp()),
            )

    store.run_sync(write)


def recorded(store: StateStore, job: str) -> tuple[float, float | None]:
    row = store.run_sync(
        lambda c: c.execute(
            "SELECT last_run_at, finished_at FROM scheduler_runs WHERE job = ?", (job,)
        ).fetchone()
    )
    return float(row[0]), row[1]


def job_row(store: StateStore) -> leases.LeaseRow:
    (row,) = store.run_sync(leases.snapshot).jobs
    return row


class Worker:
    """A worker of the test: a lease manager wanting the ``fleet`` job lease, whose job
    is a scheduler with one retention job (``run``) on the fake clock."""

    def __init__(
        self,
        name: str,
        store: Any,
        run: Callable[[str], Awaitable[None]],
        timings: Timings,
        clock: Callable[[], float] = NOW.timestamp,
    ) -> None:
        self.name = name
        self.held_since: list[int] = []  # epochs of the job lease taken here

        async def start_job(lease: Lease) -> None:
            assert lease.table is JOBS and lease.site == FLEET_JOB
            self.held_since.append(lease.epoch)
            job = ScheduledJob("retention", RETENTION, lambda: run(name))
            await run_scheduler([job], store, clock=clock, guard=lease.guard, fence=lease.fence)

        self.manager = LeaseManager(
            store,
            name,
            "",
            timings,
            [],
            _no_site,
            CollectorRegistry(),
            jobs=[FLEET_JOB],
            start_job=start_job,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Worker:
        self.task = asyncio.create_task(self.manager.run(), name=f"worker {self.name}")
        return self

    async def rounds(self, count: int) -> None:
        """Until this worker has done ``count`` more lease rounds (each awaits the store
        several times, so every task made ready before has run meanwhile)."""
        for _ in range(count):
            before = self.manager.snapshot
            await _until(lambda before=before: self.manager.snapshot is not before)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _no_site(lease: Lease) -> None:
    raise AssertionError(f"no site is configured, yet {lease.site} was started")


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_a_due_retention_run_happens_once_across_two_workers(store: StateStore) -> None:
    last_run(store, "retention", NOW - timedelta(days=2))  # today's 01:30 was missed
    timings = Timings(ttl=3.0, renew_every=0.2, margin=0.6, rebalance_every=0.2)
    runs: list[str] = []

    async def retention(worker: str) -> None:
        runs.append(worker)

    async def scenario() -> None:
        a = Worker("a", store, retention, timings).start()
        b = Worker("b", store, retention, timings).start()
        await _until(lambda: len(runs) == 1 and recorded(store, "retention")[0] == NOW.timestamp())
        holder, other = (a, b) if runs == ["a"] else (b, a)
        await other.rounds(2)
        await holder.rounds(2)
        assert runs == [holder.name], "the other worker saw the lease held and ran nothing"
        assert other.held_since == []
        # The holder stops (gives the lease back); the other takes it, starts its
        # scheduler from the shared history: the run is recorded, nothing is due.
        await holder.stop()
        await _until(lambda: other.held_since == [2])
        await other.rounds(2)
        assert runs == [holder.name], "a run recorded by the previous holder is not repeated"
        await other.stop()

    asyncio.run(scenario())
    assert recorded(store, "retention")[0] == NOW.timestamp()
    row = job_row(store)
    assert (row.site, row.holder, row.epoch) == (FLEET_JOB, None, 2), "given back on stop"


class Severable:
    """A worker's way to its state database, which the test can cut: every call waits
    until it is healed (a network partition, a frozen disk; the worker is alive)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.healed = asyncio.Event()
        self.healed.set()

    async def run(self, fn: Callable[[Connection], Any]) -> Any:
        await self.healed.wait()
        return await self.store.run(fn)


def test_a_holder_that_dies_mid_run_blocks_the_job_for_one_ttl_only(store: StateStore) -> None:
    last_run(store, "retention", NOW - timedelta(days=2))
    timings = Timings(ttl=3.0, renew_every=0.3, margin=1.0, rebalance_every=1.0)
    events: list[tuple[str, str]] = []

    async def scenario() -> None:
        going = asyncio.Event()

        async def retention(worker: str) -> None:
            events.append((worker, "start"))
            if worker == "a":
                going.set()
                try:
                    await asyncio.Event().wait()  # a long run, interrupted
                except asyncio.CancelledError:
                    events.append((worker, "cancelled"))
                    raise
            events.append((worker, "done"))

        path_a = Severable(store)
        a = Worker("a", path_a, retention, timings).start()
        await asyncio.wait_for(going.wait(), 20)
        b = Worker("b", store, retention, timings).start()
        await b.rounds(1)
        assert b.held_since == [], "held by a: b waits"
        path_a.healed.clear()  # a cannot renew any more, nor record, nor give the lease back
        await _until(lambda: ("b", "done") in events)
        assert events == [("a", "start"), ("a", "cancelled"), ("b", "start"), ("b", "done")], (
            "a stopped its run at its deadline, before b could take the lease"
        )
        assert b.held_since == [2]
        path_a.healed.set()  # its renew now finds the lease b's: a holds nothing
        await a.stop()
        await b.stop()

    asyncio.run(scenario())
    last, finished = recorded(store, "retention")
    assert last == NOW.timestamp() and finished is not None, "b's run is the recorded one"


# --- the loss history of a fleet's sites ----------------------------------------------------


class FakeClock:
    """Wall time plus an offset the test moves forward (the daemon's ``runtime.clock``)."""

    def __init__(self) -> None:
        import time

        self._time = time.time
        self.offset = 0.0

    def __call__(self) -> float:
        return self._time() + self.offset


def publish(broker: Mosquitto, values: dict[str, int]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(10), "cannot connect to the test broker"
        for site, unable in values.items():
            body = {"seats": 100, "agents_unable_to_take_calls": unable, "up": True}
            client.publish(f"cc/{site}/acd/metrics", json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


CHECKLIST = """
schedule: {cron: "30 6 * * *", timezone: Asia/Kolkata}
email_when: never
checks:
  - {id: nothing_here, type: file_age, open_incident: true, incident_severity: major,
     params: {path: /nonexistent/ccwatch.log}}
"""


def fleet_down_for_two_days(dsn: str) -> None:
    """The state database of a fleet that missed its last retention and checklist runs,
    and a contact-center table with rows to clean (in the same database)."""
    import time

    import psycopg

    from ccwatch.state.postgres import PostgresStore

    opened = PostgresStore.open(dsn, (*MIGRATIONS, leases.MIGRATIONS))
    try:
        for job in ("retention", "checklist:daily@h1"):
            last_run(opened, job, datetime.fromtimestamp(time.time() - 2 * 86400, UTC))
    finally:
        opened.close()
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE call_history (id bigserial PRIMARY KEY, created_at timestamptz)")
        db.execute("CREATE INDEX ON call_history (created_at)")
        db.execute(
            "INSERT INTO call_history (created_at) VALUES (%s), (%s)",
            (now - timedelta(days=120), now - timedelta(days=10)),
        )


def test_a_fleet_worker_records_each_sites_loss_history_and_runs_the_fleets_jobs(
    tmp_path: Path,
    mosquitto: Mosquitto,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ccwatch.app import Daemon
    from ccwatch.config import load_config

    fleet_down_for_two_days(pg_database)
    monkeypatch.setenv("CCWATCH_TEST_JOBS_DSN", pg_database)
    table = [{"table": "call_history", "column": "created_at"}]
    config = base_config(
        tmp_path,
        site="noc",
        mqtt={"port": mosquitto.port, "reconnect_max": "1s"},
        state={"backend": "postgresql", "dsn_env": "CCWATCH_TEST_JOBS_DSN"},
        classification={"open_after": "0s", "stale_after": "10m", "window": "5s"},
        sites={"names": ["s1", "s2"]},
        fleet={"lease_ttl": "3s", "renew_every": "500ms", "worker_id": "w1", "host": "h1"},
        retention={
            "schedule": {"cron": "30 1 * * *", "timezone": "UTC"},
            "databases": [
                {"name": "ameyodb", "dsn": pg_database, "keep_days": 90, "tables": table},
                {
                    "name": "reportsdb",
                    "dsn": pg_database.replace("dbname=", "dbname=missing_"),
                    "keep_days": 180,
                    "tables": table,
                },
            ],
        },
    )
    config["mqtt"].pop("client_id")
    config["state"].pop("path")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "checklists").mkdir()
    (tmp_path / "checklists" / "daily.yaml").write_text(CHECKLIST)
    clock = FakeClock()
    daemon = Daemon(load_config(path), path)
    daemon.runtime.clock = clock
    base = f"http://{config['http']['listen']}"

    def overview(site: str) -> dict[str, Any]:
        response = httpx.get(f"{base}/api/overview", params={"site": site}, timeout=5)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def acd(site: str) -> dict[str, Any]:
        (tile,) = [t for t in overview(site)["components"] if t["component"] == "acd"]
        return tile

    def steps() -> dict[str, Any]:
        wait_for_port(int(config["http"]["listen"].rsplit(":", 1)[1]), timeout=20)
        # Both sites held here and subscribed (their sessions exist: QoS 1 is kept now).
        wait_until(
            lambda: all(
                s["held_here"] and s["mqtt_connected"]
                for s in httpx.get(f"{base}/api/sites").json()["sites"]
            ),
            timeout=20,
        )
        publish(mosquitto, {"s1": 23, "s2": 5})
        wait_until(lambda: acd("s1")["loss"] == 0.23 and acd("s2")["loss"] == 0.05, timeout=20)
        assert acd("s1")["chart"]["points"] == 0, "no minute is over yet"
        # The minute ends (the daemon's clock moves into the next one): each site's
        # recorder writes its maxima under its own name.
        now = clock()
        clock.offset += (now // 60 + 1) * 60 + 1 - now
        wait_until(lambda: acd("s1")["chart"]["points"] and acd("s2")["chart"]["points"], 20)
        tiles = {"s1": acd("s1"), "s2": acd("s2")}
        sites = httpx.get(f"{base}/api/sites").json()

        def active() -> dict[tuple[str, str], dict[str, Any]]:
            body = httpx.get(f"{base}/api/incidents", params={"state": "active"}).json()
            return {(i["site"], i["component"]): i for i in body["incidents"]}

        # The jobs missed while the fleet was down: caught up by the job leases' holder.
        wanted = {("noc", "retention:reportsdb"), ("host:h1", "checklist:nothing_here")}
        incidents = wait_until(lambda: wanted <= set(active()) and active(), timeout=30)
        page = httpx.get(f"{base}/api/incidents/{incidents[('s1', 'acd')]['id']}").json()
        missing = httpx.get(f"{base}/api/overview", params={"site": "nope"})
        html = httpx.get(f"{base}/", params={"site": "s2"}).text
        checklists = httpx.get(f"{base}/api/checklists").json()["checklists"]
        metrics = httpx.get(f"{base}/metrics").text
        return {
            "tiles": tiles,
            "sites": sites,
            "incidents": incidents,
            "incident_chart": page["chart"],
            "missing": missing.status_code,
            "html": html,
            "checklists": checklists,
            "metrics": metrics,
        }

    async def scenario() -> dict[str, Any]:
        running = asyncio.create_task(daemon.run())
        try:
            return await asyncio.to_thread(steps)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(running, 20)

    seen = asyncio.run(scenario())
    tiles = seen["tiles"]
    assert tiles["s1"]["chart"]["points"] == tiles["s2"]["chart"]["points"] == 1
    assert tiles["s1"]["site"] == "s1" and tiles["s1"]["here"] is True
    # The scale follows each site's own peak: 23 % (s1) is above the critical line's room.
    assert tiles["s1"]["chart"]["top"] > tiles["s2"]["chart"]["top"]
    assert seen["incident_chart"]["points"] == 1, "the incident's page charts its site"
    assert seen["missing"] == 404
    assert 'data-component="acd"' in seen["html"] and "Components of s2" in seen["html"]
    jobs = {j["lease"]: j["holder"] for j in seen["sites"]["jobs"]}
    assert jobs == {FLEET_JOB: "w1", "host:h1": "w1"}, "the one worker holds both job leases"
    import psycopg

    with psycopg.connect(pg_database) as db:
        rows = db.execute("SELECT site, component, loss FROM loss_history ORDER BY site").fetchall()
        left = db.execute("SELECT count(*) FROM call_history").fetchone()
        runs = db.execute("SELECT job, last_run_at > 0 FROM scheduler_runs ORDER BY job").fetchall()
    assert [(site, component, round(loss, 2)) for site, component, loss in rows] == [
        ("s1", "acd", 0.23),
        ("s2", "acd", 0.05),
    ]
    # Retention: once, by the fleet's job lease; its incident is of the fleet's site.
    assert left == (1,), "the 120-day-old row was deleted"
    metrics = seen["metrics"]
    assert 'retention_runs_total{database="ameyodb",outcome="ok",site="noc"} 1.0' in metrics
    assert 'status{check="nothing_here",checklist="daily@h1",site="host:h1"} 2.0' in metrics
    incident = seen["incidents"][("noc", "retention:reportsdb")]
    assert incident["kind"] == "retention"
    # The host's checklist: named for its host, its incident of the host's site.
    (daily,) = seen["checklists"]
    assert daily["name"] == "daily@h1" and daily["run"]["trigger"] == "schedule"
    assert seen["incidents"][("host:h1", "checklist:nothing_here")]["severity"] == "major"
    assert [job for job, _ in runs] == ["checklist:daily@h1", "retention"]
