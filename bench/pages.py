"""Page weight of ``/`` and server-side render times, beside ``/api/incidents``.

1,000 stored incidents (5 of them open) and 5 components x 24 h of per-minute history in
a fresh state database; the pages are served by the real aiohttp app in this process and
timed from request to last byte (median of 20). Run: ``.venv/bin/python bench/pages.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from ccwatch import history
from ccwatch.compose import build_incident_service, open_state
from ccwatch.config import Config
from ccwatch.http import build_app
from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident
from ccwatch.metrics import build_registry
from ccwatch.readiness import Readiness
from ccwatch.runtime import Runtime
from ccwatch.settings import KNOWN_COMPONENTS
from ccwatch.severity import Severity
from ccwatch.state import transaction

INCIDENTS = 1000
REPEAT = 20


def seed(path: Path, now: float) -> None:
    store = open_state(path)
    first = history.minute_of(now) - 1440 * 60
    for name in KNOWN_COMPONENTS:
        rows = {m: (0.3 * (m % 1800) / 1800, 2) for m in range(first, first + 1440 * 60, 60)}
        for minute, value in rows.items():
            store.run_sync(lambda c, m=minute, v=value, n=name: history.record(c, m, {n: v}))

    def incidents(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            for i in range(INCIDENTS):
                opened = now - (INCIDENTS - i) * 600
                open_ = i >= INCIDENTS - len(KNOWN_COMPONENTS)
                repository.save_incident(
                    conn,
                    Incident(
                        id=f"{i:032x}",
                        site="blr1",
                        component=KNOWN_COMPONENTS[i % len(KNOWN_COMPONENTS)],
                        kind="production_loss",
                        severity=Severity.MAJOR,
                        peak_severity=Severity.CRITICAL,
                        state="open" if open_ else "resolved",
                        production_loss=0.1,
                        peak_loss=0.25,
                        impact="10 of 100 agents down",
                        opened_at=opened,
                        updated_at=opened,
                        resolved_at=None if open_ else opened + 300,
                        first_response_due=opened + 900,
                        resolution_due=opened + 14400,
                    ),
                )

    store.run_sync(incidents)
    store.close()


async def measure(path: Path) -> None:
    config = Config.model_validate({"site": "blr1", "state": {"path": str(path)}})
    registry = build_registry()
    store = open_state(path)
    runtime = Runtime(
        config,
        path,
        registry,
        store,
        Readiness(registry),
        build_incident_service(config, store, registry),
    )
    async with TestClient(TestServer(build_app(runtime))) as client:
        results = {}
        for url in ("/api/incidents", "/", "/api/overview", "/incidents"):
            times, size = [], 0
            for _ in range(REPEAT):
                started = time.perf_counter()
                response = await client.get(url)
                body = await response.read()
                times.append(time.perf_counter() - started)
                assert response.status == 200, (url, response.status)
                size = len(body)
            results[url] = (statistics.median(times), size)
    store.close()
    print(
        f"{INCIDENTS} incidents, {len(KNOWN_COMPONENTS)} components x 24 h history; "
        f"median of {REPEAT}, python {sys.version.split()[0]}"
    )
    for url, (seconds, size) in results.items():
        print(f"  {url:<16} {seconds * 1000:8.1f} ms  {size:>9,} bytes")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        seed(path, time.time())
        asyncio.run(measure(path))


if __name__ == "__main__":
    main()
