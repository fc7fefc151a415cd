"""End to end on the PostgreSQL state backend: a real Mosquitto, ``ccwatch run`` with
``state.backend: postgresql``, an incident that reaches a webhook receiver, a restart
that continues it (no second open), and a DSN that shows nowhere."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import (
    Publisher,
    active_for,
    agents,
    core_config,
    metric,
    until_incident,
)
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow

PASSWORD = "hunter2-state-dsn-secret"  # ignored by trust auth; must never show


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver().start()
    yield peer
    peer.close()


def test_incidents_live_in_postgresql_across_a_restart(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    receiver: Receiver,
    pg_database: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    import psycopg

    dsn = f"{pg_database} password={PASSWORD}"
    config = core_config(
        tmp_path,
        mosquitto,
        state={"backend": "postgresql", "dsn_env": "CCWATCH_STATE_DSN", "pool": {"max_size": 3}},
        tickets=[{"type": "webhook", "name": "hook", "url": f"{receiver.url}/hook"}],
    )
    config["state"].pop("path")
    config["classification"]["stale_after"] = "60s"
    daemon = daemon_factory(config, env={"CCWATCH_STATE_DSN": dsn})
    ready = daemon.wait_http("/readyz").json()
    assert "postgresql://127.0.0.1:5432/ccwatch_test_" in json.dumps(ready)

    publisher.send("acd", agents(23))
    before = until_incident(daemon, "acd", lambda i: i["severity"] == "critical")
    wait_until(lambda: [r for r in receiver.accepted if r.json["event"] == "open"], timeout=15)
    # The pages read history, checklists and the outbox from PostgreSQL too.
    for path in ("/", "/api/overview", f"/incidents/{before['id']}", f"/api/incidents/{before['id']}"):
        assert daemon.get(path).status_code == 200, path
    detail = daemon.get(f"/api/incidents/{before['id']}").json()
    assert "23 of 100 agents" in json.dumps(detail)
    assert daemon.stop() == 0

    # While ccwatch is down the fault goes on; after the restart it continues the incident.
    publisher.send("acd", agents(23))
    daemon.start()
    daemon.wait_http("/readyz")
    publisher.send("acd", agents(25))
    wait_until(
        lambda: metric(daemon, "ccwatch_component_production_loss_ratio", {"component": "acd"})
        == 0.25,
        timeout=15,
    )
    after = active_for(daemon, "acd")
    assert after is not None and after["id"] == before["id"] and after["state"] == "open"

    # The CLI reads the same database while the daemon runs.
    listed = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path), "incidents",
         "list", "--state", "active", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**daemon.env, "CCWATCH_STATE_DSN": dsn},
    )  # fmt: skip
    assert [i["id"] for i in json.loads(listed.stdout)] == [before["id"]]
    daemon.stop()

    opens = [r for r in receiver.accepted if r.json["event"] == "open"]
    assert [r.headers["Idempotency-Key"] for r in opens] == [
        f"ccwatch:blr1:acd:{before['id']}:1"
    ], "the restart opened nothing twice"
    with psycopg.connect(pg_database) as db:
        rows = db.execute(
            "SELECT incident_id, count(*) FROM outbox WHERE event = 'open' GROUP BY incident_id"
        ).fetchall()
        active = db.execute(
            "SELECT count(*) FROM incidents WHERE component = 'acd'"
            " AND state NOT IN ('resolved', 'expired')"
        ).fetchone()
    assert dict(rows) == {before["id"]: 1} and active == (1,)
    assert PASSWORD not in daemon.log() and PASSWORD not in listed.stdout + listed.stderr
