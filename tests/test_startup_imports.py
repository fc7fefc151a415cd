"""What a single-site daemon loads by the time it is ready (bench/startup.py measures its RSS).

The default start — SQLite, no upstream enabled, no checklist file, no heartbeat, no
``sites:`` — must not import what only a configured feature or a first request uses; the
config models of every feature are loaded, since the config validates all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import Mosquitto, base_config

# Run until /readyz would answer 200, then print the imported modules.
READY_THEN_MODULES = """
import asyncio, json, sys
from pathlib import Path
from ccwatch.app import Daemon
from ccwatch.config import load_config

path = Path(sys.argv[1])
daemon = Daemon(load_config(path), path)

async def main() -> None:
    running = asyncio.create_task(daemon.run())
    async with asyncio.timeout(30):
        while daemon.runtime.readiness.not_ready():
            await asyncio.sleep(0.05)
    print(json.dumps(sorted(sys.modules)), flush=True)
    daemon.request_stop()
    await running

asyncio.run(main())
"""

LOADED_ON_FIRST_USE = {
    "psycopg": "the PostgreSQL state backend",
    "psycopg_pool": "the PostgreSQL state backend",
    "ccwatch.state.postgres": "the PostgreSQL state backend",
    "ccwatch.sites": "sites:",
    "ccwatch.fleet.manager": "sites:",
    "ccwatch.fleet.leases": "sites:",
    "jinja2": "the first page",
    "ccwatch.pages.data": "the first page or API call",
    "apscheduler": "a scheduled job",
    "multiprocessing": "a scheduled job (APScheduler's pool executor)",
    "psutil": "a check's probe or an incident's diagnostics",
    "ccwatch.tickets.diagnostics": "an incident's diagnostics",
    "ccwatch.checklists.definition": "a checklist file",
    "ccwatch.checklists.checks": "a checklist file",
    "ccwatch.checklists.checks.disk": "a checklist file",
    "ccwatch.checklists.runner": "a checklist run",
    "ccwatch.retention.job": "an enabled retention database",
    "ccwatch.incidents.rca": "a resolved incident's RCA draft",
    "ccwatch.tickets.outbox": "an enabled upstream",
    "ccwatch.tickets.reconciler": "an enabled service desk",
    "ccwatch.heartbeat.service": "heartbeat:",
}


def test_default_start_loads_no_unused_feature(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = base_config(
        tmp_path,
        mqtt={"port": mosquitto.port},
        checklists={"dir": str(tmp_path / "no-checklists")},
        logging={"level": "warning"},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-c", READY_THEN_MODULES, str(path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[0]))
    loaded = {name: why for name, why in LOADED_ON_FIRST_USE.items() if name in modules}
    assert not loaded, f"imported at start, needed only for {loaded}"
    # The config validates every upstream type and section: their models are loaded.
    assert {"ccwatch.tickets.adapters.rt", "ccwatch.tickets.adapters.clickup",
            "ccwatch.fleet.config", "ccwatch.retention.config"} <= modules
