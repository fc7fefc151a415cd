"""Fault tests: ``ccwatch run`` + a real Mosquitto + a local ticket receiver.

- The receiver is down while incidents open, escalate and resolve; when it comes back,
  every event arrives, once per idempotency key, in order per incident.
- ccwatch is SIGKILLed at random points around an incident opening, again and again:
  the receiver never sees a second ``open`` ticket for an incident, and nothing is lost.
- Acknowledgement over the API (token required) and the CLI reaches the upstream.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DaemonProcess, Mosquitto, base_config, wait_until
from tests.test_e2e_core import Publisher, agents
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow

TOKEN = "ccw-api-t0ken-for-tests-2026"
HOLDS = {"open_after": "0s", "resolve_after": "1s", "stale_after": "1h", "window": "5s"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver().start()
    yield peer
    peer.close()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


def ticket_config(
    tmp_path: Path, broker: Mosquitto, receiver: Receiver, components: list[str]
) -> dict[str, Any]:
    return base_config(
        tmp_path,
        mqtt={"port": broker.port, "reconnect_max": "1s"},
        http={"token_env": "CCWATCH_TEST_HTTP_TOKEN"},
        classification=HOLDS,
        components={name: {"seats": 100} for name in components},
        tickets=[{"type": "webhook", "url": receiver.url + "/tickets", "retry_max": "500ms"}],
        logging={"level": "info"},
    )


def outbox(state_db: Path) -> list[tuple[str, str, int, str, str]]:
    """(incident_id, event, seq, idempotency_key, status) of every webhook row."""
    with sqlite3.connect(state_db, timeout=10) as conn:
        rows = conn.execute(
            "SELECT incident_id, event, seq, idempotency_key, status FROM outbox"
            " WHERE upstream = 'webhook' ORDER BY id"
        ).fetchall()
    return [tuple(row) for row in rows]


def accepted_in_order(receiver: Receiver) -> dict[str, list[int]]:
    """Per incident, the seqs the receiver accepted, in arrival order."""
    by_incident: dict[str, list[int]] = {}
    for request in receiver.accepted:
        body = request.json
        by_incident.setdefault(body["incident_id"], []).append(body["seq"])
    return by_incident


def test_upstream_down_during_open_escalate_resolve_then_back(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    receiver: Receiver,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    receiver.stop()
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd", "ivr"])
    # Incidents of their own per component (not one site fault): grouping by dependencies.
    config["classification"] = {**config["classification"], "group_by": "dependencies"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")  # subscribed: nothing published from here on is lost
    state_db = Path(config["state"]["path"])
    for component in ("acd", "ivr"):
        publisher.send(component, agents(5))  # major: open
    wait_until(lambda: len({row[0] for row in outbox(state_db)}) == 2, timeout=20)
    for component in ("acd", "ivr"):
        publisher.send(component, agents(30))  # critical: escalate
    wait_until(lambda: [row[1] for row in outbox(state_db)].count("escalate") == 2, timeout=20)
    for component in ("acd", "ivr"):
        publisher.send(component, agents(0))

    # resolve_after is 1 s; keep reporting healthy until both resolve events are queued.
    def resolved() -> bool:
        for component in ("acd", "ivr"):
            publisher.send(component, agents(0))
        return [row[1] for row in outbox(state_db)].count("resolve") == 2

    wait_until(resolved, timeout=20, interval=0.3)
    assert receiver.requests == []
    rows = outbox(state_db)
    assert {row[4] for row in rows} == {"pending"}
    readyz = daemon.get("/readyz").json()
    assert readyz["dependencies"]["upstream:webhook"]["ready"] is False

    receiver.start()
    wait_until(lambda: {row[4] for row in outbox(state_db)} == {"delivered"}, timeout=20)
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == len(rows)  # every event, once per key
    assert set(keys) == {row[3] for row in rows}
    for incident, seqs in accepted_in_order(receiver).items():
        assert seqs == sorted(seqs), f"incident {incident} delivered out of order: {seqs}"
        events = [r.json["event"] for r in receiver.accepted if r.json["incident_id"] == incident]
        assert events[0] == "open" and events[-1] == "resolve" and "escalate" in events
    wait_until(lambda: daemon.get("/readyz").status_code == 200, timeout=10)
    metrics = daemon.get("/metrics").text
    assert 'ccwatch_outbox_depth{upstream="webhook"} 0.0' in metrics
    assert (
        'ccwatch_tickets_sent_total{event="open",outcome="delivered",upstream="webhook"} 2.0'
        in metrics
    )


def test_sigkill_around_an_incident_opening_never_duplicates_or_loses_a_ticket(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    receiver: Receiver,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    rounds = 10
    components = [f"line{n}" for n in range(rounds)]
    config = ticket_config(tmp_path, mosquitto, receiver, components)
    # Incidents of their own per component (not one site fault): grouping by dependencies.
    config["classification"] = {**config["classification"], "group_by": "dependencies"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN}, start=False)
    state_db = Path(config["state"]["path"])
    rng = random.Random(20261123)
    for component in components:
        daemon.start(wait=None)
        # Kill at a random point: before, during or after the incident and its outbox row
        # are written, or while the webhook request is in flight.
        deadline = time.monotonic() + rng.uniform(0.3, 2.5)
        while time.monotonic() < deadline:
            publisher.send(component, agents(25))
            time.sleep(0.05)
        daemon.kill()
        daemon.start()

        def ticket_opened(component: str = component) -> bool:
            publisher.send(component, agents(25))  # the telemetry keeps coming
            return any(
                r.json["component"] == component and r.json["event"] == "open"
                for r in receiver.accepted
            )

        wait_until(ticket_opened, timeout=30, interval=0.2)
        daemon.kill()
    daemon.start()
    wait_until(lambda: {row[4] for row in outbox(state_db)} == {"delivered"}, timeout=30)
    daemon.stop()

    rows = outbox(state_db)
    opens: dict[str, set[str]] = {}
    for request in receiver.accepted:
        body = request.json
        if body["event"] == "open":
            opens.setdefault(body["component"], set()).add(body["dedup_key"])
    # One ticket per incident: one open dedup key per component, never a second ticket.
    assert sorted(opens) == components
    assert all(len(keys) == 1 for keys in opens.values()), opens
    # Nothing lost: every outbox event reached the receiver (a retry may repeat a key,
    # which the receiver deduplicates; the outbox holds each key once).
    assert {row[3] for row in rows} <= set(receiver.keys())
    assert len({row[3] for row in rows}) == len(rows)
    with sqlite3.connect(state_db) as conn:
        per_component = conn.execute(
            "SELECT component, COUNT(*) FROM incidents GROUP BY component"
        ).fetchall()
    assert all(count == 1 for _, count in per_component), per_component


def test_acknowledge_over_the_api_and_the_cli(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    receiver: Receiver,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd", "dialer"])
    # Incidents of their own per component (not one site fault): grouping by dependencies.
    config["classification"] = {**config["classification"], "group_by": "dependencies"}
    env = {"CCWATCH_TEST_HTTP_TOKEN": TOKEN}
    daemon = daemon_factory(config, env=env)
    daemon.wait_http("/readyz")
    publisher.send("acd", agents(25))
    publisher.send("dialer", agents(25))

    def incident_of(component: str) -> dict[str, Any] | None:
        found = daemon.get("/api/incidents", params={"state": "active"}).json()["incidents"]
        return next((i for i in found if i["component"] == component), None)

    def with_sla(component: str) -> dict[str, Any] | None:
        incident = incident_of(component)
        return incident if incident and incident["sla"]["first_response_due"] else None

    acd = wait_until(lambda: with_sla("acd"), timeout=20)
    dialer = wait_until(lambda: with_sla("dialer"), timeout=20)
    assert acd["sla"]["resolution_due"] is not None  # critical: 6 h
    url = f"{daemon.base_url}/api/incidents/{acd['id']}/ack"
    assert httpx.post(url, json={"by": "asha"}, timeout=5).status_code == 401
    wrong = httpx.post(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    missing = f"{daemon.base_url}/api/incidents/nope/ack"
    assert httpx.post(missing, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    response = httpx.post(
        url, json={"by": "asha"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "acknowledged"
    assert response.json()["acknowledged_by"] == "asha"

    cli = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path), "incidents", "ack",
         dialer["id"][:8], "--by", "ravi"],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "acknowledged by ravi" in cli.stdout

    def acknowledged_upstream() -> set[str]:
        return {
            r.json["component"]
            for r in receiver.accepted
            if r.json["event"] == "acknowledge" and r.json["state"] == "acknowledged"
        }

    wait_until(lambda: acknowledged_upstream() == {"acd", "dialer"}, timeout=20)
    listed = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path), "tickets", "list",
         "--format", "json"],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert {row["status"] for row in json.loads(listed.stdout)} == {"delivered"}
