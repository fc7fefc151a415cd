"""State store: a small write transaction run on the event loop vs on the store thread,
and the same incident stream on the PostgreSQL backend.

Issue 2 asks whether to run SQLite off the loop or keep transactions tiny. Each write here
is what an incident change costs (update the incident, add a timeline row and two outbox
rows, commit). For each way we print write latency (p50/p99) and the worst event-loop
stall seen by a 1 ms ticker running beside the writes: the stall is what an MQTT
receive or an HTTP request would wait.

Issue 14 adds the PostgreSQL backend: the same function, through ``PostgresStore.run``
(a pooled connection on a store thread), into a database created for the run on
``$CCWATCH_BENCH_PG_DSN`` (default: the tests' 127.0.0.1:5432, user postgres) and
dropped after it. Skipped, with the reason, when PostgreSQL is not reachable.

    .venv/bin/python bench/store.py [--writes 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from ccwatch.compose import MIGRATIONS, open_state
from ccwatch.state import Connection, transaction

PG_DSN = os.environ.get(
    "CCWATCH_BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def incident_change(connection: Connection, n: int) -> None:
    with transaction(connection):
        connection.execute(
            "INSERT INTO incidents (id, site, component, severity, peak_severity, state,"
            " production_loss, peak_loss, impact, opened_at, updated_at)"
            " VALUES (?, 's', ?, 3, 3, 'resolved', 0.2, 0.2, 'x', ?, ?)",
            (f"i{n}", f"c{n}", time.time(), time.time()),
        )
        connection.execute(
            "INSERT INTO incident_timeline (incident_id, at, change, severity, state,"
            " production_loss) VALUES (?, ?, 'open', 3, 'open', 0.2)",
            (f"i{n}", time.time()),
        )
        for upstream in ("webhook", "pagerduty"):
            connection.execute(
                "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body,"
                " created_at, next_attempt_at) VALUES (?, ?, 1, 'open', ?, ?, ?, ?)",
                (upstream, f"i{n}", f"k{n}:1", "{" + '"x": 1,' * 60 + '"y": 2}',
                 time.time(), time.time()),
            )


async def measure(
    writes: int, write: Callable[[int], Awaitable[None]]
) -> tuple[float, float, float]:
    stalls: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    latencies = []
    for n in range(writes):
        started = time.perf_counter()
        await write(n)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0)
    done.set()
    await tick
    latencies.sort()
    return (
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        max(stalls) * 1000,
    )


@contextlib.contextmanager
def pg_database() -> Iterator[tuple[str | None, str]]:
    """(DSN of a fresh database or None, what to print about it); dropped afterwards."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # no psycopg, no server: the SQLite figures still print
        yield None, f"skipped: PostgreSQL not reachable ({type(exc).__name__}: {exc})".strip()
        return
    name = f"ccwatch_bench_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        version = admin.info.server_version
        sync = admin.execute("SHOW synchronous_commit").fetchone()[0]
    params = conninfo_to_dict(PG_DSN)
    where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
    note = (
        f"PostgreSQL {version // 10000}.{version % 10000} on {where}, "
        f"synchronous_commit={sync}, pool min 1 max 4"
    )
    try:
        yield make_conninfo(PG_DSN, dbname=name), note
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(writes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        in_loop = open_state(Path(tmp) / "a.db")
        # Borrow the store's connection on the loop thread: what "keep it tiny, in-loop" means.
        raw = sqlite3.connect(Path(tmp) / "a.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")

        async def on_loop(n: int) -> None:
            incident_change(raw, n)

        off_loop_store = open_state(Path(tmp) / "b.db")

        async def off_loop(n: int) -> None:
            await off_loop_store.run(lambda c: incident_change(c, n))

        a = await measure(writes, on_loop)
        b = await measure(writes, off_loop)
        raw.close()
        in_loop.close()
        off_loop_store.close()
    with pg_database() as (dsn, note):
        pg: tuple[float, float, float] | None = None
        if dsn is not None:
            from ccwatch.state.postgres import PostgresStore

            pg_store = PostgresStore.open(dsn, MIGRATIONS)

            async def on_postgres(n: int) -> None:
                await pg_store.run(lambda c: incident_change(c, n))

            try:
                pg = await measure(writes, on_postgres)
            finally:
                pg_store.close()
    print(f"state store: {writes} incident-change transactions (1 update-sized insert, "
          "1 timeline row, 2 outbox rows), SQLite WAL, synchronous=NORMAL")
    print(f"{'':28}{'p50 write':>12}{'p99 write':>12}{'worst loop stall':>18}")
    print(f"{'on the event loop':28}{a[0]:>9.3f} ms{a[1]:>9.3f} ms{a[2]:>15.3f} ms")
    print(f"{'store thread (chosen)':28}{b[0]:>9.3f} ms{b[1]:>9.3f} ms{b[2]:>15.3f} ms")
    if pg is None:
        print(f"{'PostgreSQL store (pool)':28}{note}")
    else:
        print(f"{'PostgreSQL store (pool)':28}{pg[0]:>9.3f} ms{pg[1]:>9.3f} ms{pg[2]:>15.3f} ms")
        print(f"  ({note}; same stream, same function, through PostgresStore.run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=3000)
    asyncio.run(main_async(parser.parse_args().writes))


if __name__ == "__main__":
    main()
