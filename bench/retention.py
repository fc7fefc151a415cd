"""Retention cleanup vs a single DELETE on identical copies of 2,000,000 rows.

Builds ``call_history`` (2M rows over 182 days, so about half are older than the
90 + 1 day cutoff, B-tree index on ``created_at``) in a database of its own, copies it
(``CREATE DATABASE … TEMPLATE``) and then, in the same run:

1. ccwatch's cleanup (keyset batches, adaptive size, default tuning) on copy A,
2. a single ``DELETE … WHERE created_at < cutoff`` on copy B,
3. the naive ``DELETE … WHERE id IN (SELECT id … LIMIT n)`` loop on copy C, per batch,
4. ccwatch on a partitioned copy (30-day range partitions): old partitions dropped.

While 1, 2 and 4 run, a writer inserts one call every 5 ms into the same table (autocommit,
like the call flow) and its insert latency is recorded. Prints rows/s of each, the ratio,
the slowest batch and the writer's p50/p99. Every database is dropped at the end.

    .venv/bin/python bench/retention.py [--rows 2000000] [--dsn "host=127.0.0.1 user=postgres"]

Targets (issue 6): >= 70 % of the single DELETE's rate, slowest batch <= 250 ms,
concurrent insert p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from ccwatch.config import Config, validate_data
from ccwatch.retention.postgres import PostgresRetention
from ccwatch.retention.report import DatabaseReport

NOW = datetime.now(UTC).replace(microsecond=0)
CUTOFF = NOW - timedelta(days=91)
SPAN = timedelta(days=182)
TABLE_DDL = """
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    agent_id int NOT NULL,
    campaign text NOT NULL,
    disposition text,
    duration_s int NOT NULL
"""


def dsn_for(base: str, dbname: str) -> str:
    return f"{base} dbname={dbname}"


def admin(base: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn_for(base, "postgres"), autocommit=True)


def fill(conn: psycopg.Connection[Any], table: str, rows: int) -> None:
    step = SPAN.total_seconds() / rows
    conn.execute(
        f"""
        INSERT INTO {table} (created_at, agent_id, campaign, disposition, duration_s)
        SELECT %s::timestamptz + make_interval(secs => g * %s),
               g %% 500, 'campaign-' || (g %% 40), CASE WHEN g %% 7 = 0 THEN 'no answer'
               ELSE 'connected' END, g %% 900
        FROM generate_series(0, %s - 1) g
        """,
        (NOW - SPAN, step, rows),
    )


def build_plain(base: str, name: str, rows: int) -> None:
    with admin(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn_for(base, name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE call_history ({TABLE_DDL})")
        fill(conn, "call_history", rows)
        conn.execute("CREATE INDEX call_history_created_at ON call_history (created_at)")
        conn.execute("VACUUM (ANALYZE) call_history")


def build_partitioned(base: str, name: str, rows: int) -> None:
    with admin(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn_for(base, name), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE call_history ({TABLE_DDL.replace('PRIMARY KEY', '')}) "
            "PARTITION BY RANGE (created_at)"
        )
        low = NOW - SPAN - timedelta(days=1)
        index = 0
        while low < NOW + timedelta(days=30):
            high = low + timedelta(days=30)
            conn.execute(
                f"CREATE TABLE call_history_p{index} PARTITION OF call_history "
                f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
            )
            low, index = high, index + 1
        fill(conn, "call_history", rows)
        conn.execute("CREATE INDEX ON call_history (created_at)")
        conn.execute("VACUUM (ANALYZE) call_history")


def copy_database(base: str, source: str, target: str) -> None:
    with admin(base) as conn:
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')


def drop_database(base: str, name: str) -> None:
    with admin(base) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def warm(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM call_history")
        conn.execute("CHECKPOINT")


@contextmanager
def call_flow(dsn: str) -> Iterator[list[float]]:
    """Insert one call every 5 ms during the block; yields the insert latencies (s)."""
    latencies: list[float] = []
    stop = threading.Event()

    def insert() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO call_history (created_at, agent_id, campaign, duration_s) "
                    "VALUES (now(), 1, 'live', 30)"
                )
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    thread = threading.Thread(target=insert, name="call-flow")
    thread.start()
    time.sleep(0.5)  # connected and inserting before the cleanup starts
    latencies.clear()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 2 else max(values, default=0)


def run_ccwatch(dsn: str) -> tuple[DatabaseReport, float, float]:
    """(report, delete-phase seconds, VACUUM seconds)."""
    config: Config = validate_data(
        Config,
        {
            "site": "bench",
            "retention": {
                "databases": [
                    {
                        "name": "ameyodb",
                        "dsn": dsn,
                        "keep_days": 90,
                        "tables": [{"table": "call_history", "column": "created_at"}],
                    }
                ]
            },
        },
        "bench",
    )
    vacuum_seconds = 0.0

    class Timed(PostgresRetention):
        async def _vacuum(self, *args: Any, **kwargs: Any) -> None:
            nonlocal vacuum_seconds
            started = time.perf_counter()
            await super()._vacuum(*args, **kwargs)
            vacuum_seconds += time.perf_counter() - started

    cleaner = Timed(config.retention.databases[0], config.retention, clock=lambda: NOW)
    started = time.perf_counter()
    report = asyncio.run(cleaner.run())
    total = time.perf_counter() - started
    if report.error:
        raise SystemExit(f"ccwatch cleanup failed: {report.error}")
    return report, total - vacuum_seconds, vacuum_seconds


def run_single_delete(dsn: str) -> tuple[int, float, float]:
    """(rows, DELETE seconds, VACUUM seconds)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        cursor = conn.execute("DELETE FROM call_history WHERE created_at < %s", (CUTOFF,))
        seconds = time.perf_counter() - started
        vacuum_started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) call_history")
        return cursor.rowcount, seconds, time.perf_counter() - vacuum_started


def run_naive_loop(
    dsn: str, batch: int, max_batches: int, force_index: bool
) -> list[tuple[int, float]]:
    """The classic loop; each batch's subquery starts from the beginning of the index again.

    As planned, PostgreSQL answers ``id IN (…)`` with a hash semi-join over a full scan
    of the table, every batch. ``force_index`` turns hash/merge joins and sequential
    scans off so the loop gets its best (nested loop) plan; then the growth comes from
    the subquery walking the dead index entries left by the previous batches.
    """
    timings: list[tuple[int, float]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        if force_index:
            for setting in ("enable_hashjoin", "enable_mergejoin", "enable_seqscan"):
                conn.execute(f"SET {setting} = off")
        for number in range(1, max_batches + 1):
            started = time.perf_counter()
            cursor = conn.execute(
                "DELETE FROM call_history WHERE id IN (SELECT id FROM call_history "
                "WHERE created_at < %s LIMIT %s)",
                (CUTOFF, batch),
            )
            timings.append((number, time.perf_counter() - started))
            if cursor.rowcount < batch:
                break
    return timings


def measure(label: str, dsn: str, work: Callable[[], Any]) -> tuple[Any, list[float]]:
    warm(dsn)
    with call_flow(dsn) as latencies:
        result = work()
    print(f"  {label}: done", file=sys.stderr)
    return result, latencies


@dataclass
class Round:
    ccwatch_rows: int
    ccwatch_seconds: float
    ccwatch_vacuum: float
    batches: int
    slowest_batch: float
    single_rows: int
    single_seconds: float
    single_vacuum: float

    @property
    def ratio(self) -> float:
        return (self.ccwatch_rows / self.ccwatch_seconds) / (self.single_rows / self.single_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pairs of fresh copies, order alternating"
    )
    parser.add_argument("--naive-batch", type=int, default=10_000)
    parser.add_argument(
        "--naive-batches", type=int, default=20, help="batches of the as-planned naive loop"
    )
    parser.add_argument("--verbose", action="store_true", help="log every batch to stderr")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)8.0f %(message)s")
        logging.getLogger("psycopg").setLevel(logging.INFO)
    base = args.dsn
    tag = uuid.uuid4().hex[:8]
    template, partitioned = f"ccwatch_bench_t_{tag}", f"ccwatch_bench_p_{tag}"
    created = [template, partitioned]
    rounds: list[Round] = []
    ccwatch_lat: list[float] = []
    single_lat: list[float] = []

    def fresh_copy(label: str) -> str:
        name = f"ccwatch_bench_{label}_{tag}"
        copy_database(base, template, name)
        created.append(name)
        return dsn_for(base, name)

    try:
        print(f"building {args.rows:,} rows ...", file=sys.stderr)
        started = time.perf_counter()
        build_plain(base, template, args.rows)
        build_partitioned(base, partitioned, args.rows)
        print(f"  built in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        for number in range(args.rounds):
            a, b = fresh_copy(f"a{number}"), fresh_copy(f"b{number}")
            results: dict[str, Any] = {}
            order = ["ccwatch", "single"] if number % 2 == 0 else ["single", "ccwatch"]
            for which in order:
                if which == "ccwatch":
                    results[which], lat = measure("ccwatch", a, functools.partial(run_ccwatch, a))
                    ccwatch_lat.extend(lat)
                else:
                    results[which], lat = measure(
                        "single", b, functools.partial(run_single_delete, b)
                    )
                    single_lat.extend(lat)
            report, ccwatch_s, ccwatch_vacuum = results["ccwatch"]
            single_rows, single_s, single_vacuum = results["single"]
            rounds.append(
                Round(
                    report.rows_deleted,
                    ccwatch_s,
                    ccwatch_vacuum,
                    report.batches,
                    report.slowest_batch_seconds,
                    single_rows,
                    single_s,
                    single_vacuum,
                )
            )
            for name in created[-2:]:
                drop_database(base, name)
        (part_report, part_s, _), part_lat = measure(
            "partitions",
            dsn_for(base, partitioned),
            lambda: run_ccwatch(dsn_for(base, partitioned)),
        )
        naive_dsn = fresh_copy("naive")
        warm(naive_dsn)
        naive = run_naive_loop(naive_dsn, args.naive_batch, args.naive_batches, False)
        naive_index_dsn = fresh_copy("naive_index")
        warm(naive_index_dsn)
        naive_index = run_naive_loop(naive_index_dsn, args.naive_batch, 10_000, True)
    finally:
        for name in created:
            drop_database(base, name)

    print(
        f"retention bench: {args.rows:,} rows, {rounds[0].single_rows:,} older than the cutoff "
        f"(now - 91 d), B-tree index on created_at; {len(rounds)} rounds on fresh copies; "
        "a writer inserts a call every 5 ms throughout"
    )
    print(
        f"{'round':<7}{'single DELETE rows/s':>22}{'ccwatch rows/s':>16}{'ratio':>7}"
        f"{'batches':>9}{'slowest':>9}{'VACUUM single/ccwatch':>23}"
    )
    for number, r in enumerate(rounds, 1):
        print(
            f"{number:<7}{r.single_rows / r.single_seconds:>22,.0f}"
            f"{r.ccwatch_rows / r.ccwatch_seconds:>16,.0f}{r.ratio:>7.0%}{r.batches:>9}"
            f"{r.slowest_batch * 1000:>7.0f}ms{r.single_vacuum:>13.2f}s /{r.ccwatch_vacuum:>5.2f}s"
        )
    single_median = statistics.median(r.single_rows / r.single_seconds for r in rounds)
    ccwatch_median = statistics.median(r.ccwatch_rows / r.ccwatch_seconds for r in rounds)
    slowest = max(r.slowest_batch for r in rounds)
    print(
        f"median rows/s: single DELETE {single_median:,.0f}, ccwatch {ccwatch_median:,.0f}, "
        f"ratio {ccwatch_median / single_median:.0%} (target >= 70%)"
    )
    print(f"slowest ccwatch batch over all rounds: {slowest * 1000:.0f} ms (target <= 250 ms)")
    print(
        f"concurrent insert latency p50/p99: during single DELETE "
        f"{statistics.median(single_lat) * 1000:.1f}/{p99(single_lat) * 1000:.1f} ms, during "
        f"ccwatch {statistics.median(ccwatch_lat) * 1000:.1f}/{p99(ccwatch_lat) * 1000:.1f} ms "
        "(target p99 <= 50 ms)"
    )
    part_table = part_report.tables[0]
    print(
        f"partitioned copy (30-day partitions): dropped {len(part_table.partitions_dropped)} "
        f"partitions and row-deleted {part_table.rows_deleted:,} rows of the cutoff partition in "
        f"{part_s:.2f}s ({part_table.batches} batches, slowest "
        f"{part_table.slowest_batch_seconds * 1000:.0f} ms); insert p99 "
        f"{p99(part_lat) * 1000:.1f} ms"
    )
    for label, timings in (("as planned", naive), ("index plan forced", naive_index)):
        marks = {1, 2, 5, 10, 25, 50, 75, 100, 150, len(timings)}
        seconds = sum(t for _n, t in timings)
        print(
            f"naive DELETE … WHERE id IN (SELECT id … LIMIT {args.naive_batch:,}), {label}: "
            f"{len(timings)} batches, {len(timings) * args.naive_batch / seconds:,.0f} rows/s; "
            "seconds per batch " + ", ".join(f"#{n} {t:.3f}" for n, t in timings if n in marks)
        )


if __name__ == "__main__":
    main()
