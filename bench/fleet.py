"""Several sites and workers (issue 14, ``sites:``): how many sites a worker carries, how
fast sites fail over, and what a PostgreSQL write costs beside SQLite.

1. Sites per worker: one ``ccwatch run`` worker holding N sites, each with 5 components
   publishing 1 message a second (QoS 1, healthy values), one webhook upstream (each site
   runs its dispatcher, SLA watcher, ticker and MQTT session). The worker's CPU (user +
   system, all its threads) over ``--measure`` seconds once it holds every site, for each
   N of ``--sites``; the target is at most 50 % of one core.
2. Failover: ``--workers`` workers, ``--failover-sites`` sites with an incident each,
   ``--ttl`` lease TTL; ``--kills`` times: SIGKILL the worker holding the most sites,
   publish a change (QoS 1) to each of its sites at once, and time until every one of
   them shows the change in the database (a new holder took the lease, connected the
   site's MQTT session, got the queued message and wrote the escalation). The killed
   worker is started again and the shares settle before the next kill.
3. Write latency: the same incident stream (``IncidentService.apply``: open, escalate,
   de-escalate, resolve over 5 components; incident, timeline and one outbox row per
   change) on SQLite (the single-host default), PostgreSQL, and PostgreSQL with the site
   lease's fence (what a fleet worker's writes cost).

A Mosquitto of the bench's own; PostgreSQL at ``$CCWATCH_BENCH_PG_DSN`` (default: the
tests' 127.0.0.1:5432, user postgres), a database created per run and dropped after it.

    .venv/bin/python bench/fleet.py [--sites 25,50,100,200,400] [--measure 20] [--kills 10]
    (--sites '' / --kills 0 / --writes 0 leave a part out)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from ccwatch.compose import MIGRATIONS, incident_settings, open_state
from ccwatch.config import Config
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.service import IncidentService
from ccwatch.severity import Severity

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_DSN = os.environ.get(
    "CCWATCH_BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
COMPONENTS = ("acd", "ivr", "dialer", "voice_logger", "reports")
CPU_TARGET = 0.50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n"
        )
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
        wait_until(lambda: _connects(self.port), 10, "mosquitto")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _connects(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@contextlib.contextmanager
def pg_database() -> Iterator[str | None]:
    """DSN of a fresh database (dropped afterwards), or None when PostgreSQL is away."""
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"PostgreSQL not reachable at {PG_DSN} ({type(exc).__name__}); skipped")
        yield None
        return
    name = f"ccwatch_bench_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(PG_DSN, dbname=name)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as db:
        cursor = db.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def holders(dsn: str) -> dict[str, str | None]:
    return dict(
        query(  # type: ignore[arg-type]
            dsn,
            "SELECT site, CASE WHEN expires_at > EXTRACT(EPOCH FROM now()) THEN holder END"
            " FROM site_leases",
        )
    )


class Worker:
    """``ccwatch run`` on a fleet config, as systemd would start it."""

    def __init__(self, workdir: Path, config: dict[str, Any], dsn: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {**config, "http": {"listen": f"127.0.0.1:{self.port}"}}
        self.path = workdir / "config.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "CCWATCH_STATE_DSN": dsn, "PYTHONUNBUFFERED": "1"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "ccwatch.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ccwatch.cli", "-c", str(self.path), "run"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def fleet_config(
    broker: Broker, sites: list[str], ttl: float, **classification: str
) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_max": "1s"},
        "state": {
            "backend": "postgresql",
            "dsn_env": "CCWATCH_STATE_DSN",
            "pool": {"min_size": 2, "max_size": 8},
        },
        "classification": {"open_after": "0s", "stale_after": "1h", **classification},
        "tickets": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
        "logging": {"level": "warning"},
        "sites": {"names": sites},
        "fleet": {
            "lease_ttl": f"{ttl:g}s",
            "renew_every": f"{ttl / 3:g}s",
            "rebalance_every": "1s",
        },
    }


def mqtt_client(port: int) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


HEALTHY = json.dumps({"seats": 100, "agents_unable_to_take_calls": 0, "up": True}).encode()


# --- 1. sites per worker ------------------------------------------------------------------


def sites_per_worker(workdir: Path, dsn: str, counts: list[int], measure: float) -> None:
    print(
        f"1. sites per worker: {len(COMPONENTS)} components x 1 msg/s per site (QoS 1), "
        f"one webhook upstream; worker CPU over {measure:g} s (target <= "
        f"{CPU_TARGET:.0%} of one core; PostgreSQL's and Mosquitto's own CPU not counted)"
    )
    best = 0
    for count in counts:
        cpu = one_count(workdir, dsn, count, measure)
        if cpu > CPU_TARGET:
            break
        best = count
    print(f"  largest measured count within the target: {best} sites per worker")


def one_count(workdir: Path, dsn: str, count: int, measure: float) -> float:
    sites = [f"b{count}x{i:03d}" for i in range(count)]
    broker = Broker(workdir)
    worker = Worker(workdir / f"cpu{count}", fleet_config(broker, sites, 15.0), dsn)
    stop = threading.Event()
    client = mqtt_client(broker.port)

    def publish() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            for site in sites:
                for component in COMPONENTS:
                    client.publish(f"cc/{site}/{component}/metrics", HEALTHY, qos=1)
            next_at += 1.0
            stop.wait(max(0.0, next_at - time.monotonic()))

    publisher = threading.Thread(target=publish, daemon=True)
    try:
        worker.start()
        started = time.monotonic()
        wait_until(
            lambda: sum(1 for h in holders(dsn).values() if h) == count,
            60 + count / 5,
            f"the worker to hold {count} sites",
        )
        held_after = time.monotonic() - started
        publisher.start()
        time.sleep(5)  # warm-up: every site's session has its first messages
        assert worker.process is not None
        process = psutil.Process(worker.process.pid)
        before, wall = process.cpu_times(), time.monotonic()
        time.sleep(measure)
        after, wall = process.cpu_times(), time.monotonic() - wall
        cpu = (after.user + after.system - before.user - before.system) / wall
        rss = process.memory_info().rss / 2**20
        print(
            f"  {count:4d} sites ({count * len(COMPONENTS):5d} msg/s): CPU {cpu:6.1%} of one "
            f"core, RSS {rss:6.1f} MB, held every site {held_after:5.1f} s after start "
            f"-> {'within' if cpu <= CPU_TARGET else 'OVER'} target"
        )
        return cpu
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join(5)
        client.loop_stop()
        client.disconnect()
        worker.stop()
        broker.stop()
        query(dsn, "DELETE FROM site_leases")


# --- 2. failover ---------------------------------------------------------------------------


def failover(workdir: Path, dsn: str, workers_n: int, sites_n: int, kills: int, ttl: float) -> None:
    sites = [f"f{i:02d}" for i in range(sites_n)]
    broker = Broker(workdir)
    config = fleet_config(broker, sites, ttl, resolve_after="0s")
    client = mqtt_client(broker.port)
    workers = [Worker(workdir / f"fo{i}", config, dsn) for i in range(workers_n)]
    share = -(-sites_n // workers_n)
    value = dict.fromkeys(sites, 5)

    def publish(site: str) -> None:
        body = {"seats": 100, "agents_unable_to_take_calls": value[site], "up": True}
        client.publish(f"cc/{site}/acd/metrics", json.dumps(body), qos=1).wait_for_publish(10)

    def severities() -> dict[str, int]:
        return dict(
            query(  # type: ignore[arg-type]
                dsn,
                "SELECT site, severity FROM incidents WHERE component = 'acd'"
                " AND state NOT IN ('resolved', 'expired')",
            )
        )

    def settled() -> bool:
        counts = Counter(h for h in holders(dsn).values() if h)
        return sum(counts.values()) == sites_n and max(counts.values()) <= share and len(
            counts
        ) == min(workers_n, sites_n)

    times: list[float] = []
    try:
        for worker in workers:
            worker.start()
        wait_until(settled, 60, "the first shares")
        for site in sites:
            publish(site)
        wait_until(lambda: len(severities()) == sites_n, 30, "an incident per site")
        for round_ in range(kills):
            by_holder = Counter(h for h in holders(dsn).values() if h)
            victim_id = by_holder.most_common(1)[0][0]
            before = holders(dsn)
            moved = [s for s, h in before.items() if h == victim_id]
            victim = next(w for w in workers if _worker_id(w, dsn) == victim_id)
            victim.kill()
            killed = time.monotonic()
            for site in moved:
                value[site] = 23 if value[site] == 5 else 5
                publish(site)
            want = {site: 3 if value[site] == 23 else 2 for site in moved}
            wait_until(
                lambda want=want: all(severities().get(s) == v for s, v in want.items()),
                ttl + 60,
                "the moved sites to be processed",
            )
            times.append(time.monotonic() - killed)
            print(
                f"  kill {round_ + 1:2d}: {len(moved)} site(s) processed by the others "
                f"{times[-1]:5.2f} s after SIGKILL"
            )
            victim.start()
            wait_until(settled, 60, "the shares to settle again")
    finally:
        client.loop_stop()
        client.disconnect()
        for worker in workers:
            worker.stop()
        broker.stop()
        query(dsn, "DELETE FROM site_leases")
    print(
        f"  failover over {len(times)} kill(s): p50 {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s (lease TTL {ttl:g} s; target: within TTL + 5 s)"
    )


def _worker_id(worker: Worker, dsn: str) -> str | None:
    assert worker.process is not None
    pid = worker.process.pid
    for (name,) in query(dsn, "SELECT worker FROM fleet_workers"):
        if f"-{pid}-" in name:
            return str(name)
    return None


# --- 3. write latency ---------------------------------------------------------------------


READINGS = (
    Reading(Severity.MAJOR, 0.05, "5 of 100 agents cannot take calls (5.0%)"),
    Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)"),
    Reading(Severity.MAJOR, 0.05, "5 of 100 agents cannot take calls (5.0%)"),
    Reading(Severity.NONE, 0.0, "no production loss"),
)


def stream_config(workdir: Path) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "state": {"path": str(workdir / "unused.db")},
            "classification": {"open_after": "0s", "resolve_after": "0s"},
            "incidents": {"reopen_window": "0s"},
            "tickets": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
        }
    )


async def stream(store: Any, config: Config, changes: int, fence: Any = None) -> list[float]:
    clock = [1_795_000_000.0]
    service = IncidentService(
        store,
        incident_settings(config),
        CollectorRegistry(),
        clock=lambda: clock[0],
        monotonic=lambda: clock[0],
        fence=fence,
    )
    await service.load()
    latencies: list[float] = []
    step = 0
    while len(latencies) < changes:
        component = COMPONENTS[step % len(COMPONENTS)]
        reading = READINGS[(step // len(COMPONENTS)) % len(READINGS)]
        clock[0] += 1.0
        transitions = service.observe(component, reading, clock[0])
        if transitions:
            started = time.perf_counter()
            await service.apply(transitions)
            latencies.append(time.perf_counter() - started)
        step += 1
    assert service.fenced is None
    return latencies


def write_latency(workdir: Path, dsn: str | None, changes: int) -> None:
    from ccwatch.fleet import leases

    config = stream_config(workdir)
    rows: list[tuple[str, list[float] | None]] = []
    sqlite = open_state(workdir / "stream.db")
    try:
        rows.append(("SQLite (single host, default)", asyncio.run(stream(sqlite, config, changes))))
    finally:
        sqlite.close()
    if dsn is None:
        rows += [("PostgreSQL", None), ("PostgreSQL + site-lease fence", None)]
    else:
        from ccwatch.state.postgres import PostgresStore

        pg = PostgresStore.open(dsn, (*MIGRATIONS, leases.MIGRATIONS))
        try:
            pg.run_sync(lambda c: c.execute("TRUNCATE incidents, incident_timeline, outbox"))
            rows.append(("PostgreSQL", asyncio.run(stream(pg, config, changes))))
            pg.run_sync(lambda c: c.execute("TRUNCATE incidents, incident_timeline, outbox"))
            lease = pg.run_sync(lambda c: leases.acquire_lease(c, "blr1", "bench", 600.0, 5.0))
            assert lease is not None
            fenced = asyncio.run(stream(pg, config, changes, lease.fence))
            rows.append(("PostgreSQL + site-lease fence", fenced))
        finally:
            pg.close()
    print(
        f"3. write latency: the same incident stream, {changes} changes (open, escalate, "
        "de-escalate, resolve over 5 components; incident + timeline + 1 outbox row each), "
        "IncidentService.apply"
    )
    print(f"  {'':32}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, values in rows:
        if values is None:
            print(f"  {name:32}  skipped: PostgreSQL not reachable")
            continue
        ms = [v * 1000 for v in values]
        print(
            f"  {name:32}{statistics.median(ms):>7.3f} ms{percentile(ms, 0.99):>7.3f} ms"
            f"{max(ms):>7.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sites", default="25,50,100,200,400", help="site counts for part 1")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds of CPU measured")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--failover-sites", type=int, default=12)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL of part 2 (seconds)")
    parser.add_argument("--writes", type=int, default=2000, help="changes of part 3")
    args = parser.parse_args()
    counts = [int(n) for n in args.sites.split(",") if n.strip()]  # empty: part 1 skipped
    with tempfile.TemporaryDirectory() as tmp, pg_database() as dsn:
        workdir = Path(tmp)
        if dsn is not None:
            from ccwatch.fleet.leases import MIGRATIONS as FLEET_MIGRATIONS
            from ccwatch.state.postgres import PostgresStore

            PostgresStore.open(dsn, (*MIGRATIONS, FLEET_MIGRATIONS)).close()  # the tables
            if counts:
                sites_per_worker(workdir, dsn, counts, args.measure)
            if args.kills:
                print(
                    f"2. failover: {args.workers} workers, {args.failover_sites} sites with an "
                    f"incident each, lease TTL {args.ttl:g} s, {args.kills} SIGKILLs"
                )
                failover(workdir, dsn, args.workers, args.failover_sites, args.kills, args.ttl)
        else:
            print("1. and 2. need PostgreSQL: skipped")
        if args.writes:
            write_latency(workdir, dsn, args.writes)


if __name__ == "__main__":
    main()
