"""End to end: a real Mosquitto, ``ccwatch run`` as a subprocess, payloads in, incidents out."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DaemonProcess, Mosquitto, base_config, wait_until

pytestmark = pytest.mark.slow

FAST_HOLDS = {
    "open_after": "0s",
    "resolve_after": "1s",
    "stale_after": "3s",
    "window": "5s",
}


class Publisher:
    """A QoS 1 publisher, as a contact center's exporter would be."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10), "cannot connect to the test broker"

    def send(self, component: str, body: dict[str, Any] | bytes, kind: str = "metrics") -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        info = self.client.publish(f"cc/blr1/{component}/{kind}", payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


def agents(unable: int) -> dict[str, Any]:
    return {"seats": 100, "agents_unable_to_take_calls": unable, "up": True}


def core_config(
    tmp_path: Path, broker: Mosquitto, mqtt: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    classification = {**FAST_HOLDS, **overrides.pop("classification", {})}
    return base_config(
        tmp_path,
        mqtt={"port": broker.port, "reconnect_max": "1s", **(mqtt or {})},
        classification=classification,
        **overrides,
    )


def incidents(daemon: DaemonProcess, **params: str) -> list[dict[str, Any]]:
    response = daemon.get("/api/incidents", params=params)
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()["incidents"]
    return found


def active_for(daemon: DaemonProcess, component: str) -> dict[str, Any] | None:
    for incident in incidents(daemon, state="active"):
        if incident["component"] == component:
            return incident
    return None


def until_incident(
    daemon: DaemonProcess,
    component: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 15,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        incident = active_for(daemon, component)
        return incident if incident is not None and predicate(incident) else None

    found: dict[str, Any] = wait_until(check, timeout=timeout, interval=0.1)
    return found


def metric(daemon: DaemonProcess, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(daemon.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return None


def test_incident_opens_escalates_on_the_same_id_and_resolves_after_the_hold(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(core_config(tmp_path, mosquitto))
    daemon.wait_http("/readyz")
    publisher.send("acd", agents(5))
    major = until_incident(daemon, "acd", lambda i: i["severity"] == "major")
    assert (major["priority"], major["state"]) == ("P2", "open")
    assert major["impact"] == "5 of 100 agents cannot take calls (5.0%)"

    publisher.send("acd", agents(23))
    critical = until_incident(daemon, "acd", lambda i: i["severity"] == "critical")
    assert critical["id"] == major["id"], "escalation must update the same incident"
    assert critical["impact"] == "23 of 100 agents cannot take calls (23.0%)"
    assert metric(daemon, "ccwatch_component_severity", {"component": "acd"}) == 3
    assert metric(daemon, "ccwatch_incidents_open", {"severity": "critical"}) == 1
    page = daemon.get("/").text
    assert "Open incidents (1)" in page and "23 of 100 agents cannot take calls" in page

    # Recovery: clean data until the resolve hold has passed.
    def resolved() -> bool:
        publisher.send("acd", agents(0))
        return daemon.get(f"/api/incidents/{major['id']}").json()["state"] == "resolved"

    wait_until(resolved, timeout=15, interval=0.2)
    detail = daemon.get(f"/api/incidents/{major['id']}").json()
    changes = [e["change"] for e in detail["timeline"] if e["change"] != "rca_draft"]
    assert changes == ["opened", "escalated", "resolved"]  # (+ the RCA draft of a critical)
    assert detail["peak_loss"] == pytest.approx(0.23) and detail["resolved_at"]
    assert set(detail["sla"]) == {"first_response_due", "resolution_due", "rca_due"}
    missing = daemon.get("/api/incidents/no-such-id")
    assert missing.status_code == 404 and "no incident" in missing.json()["error"]
    assert "Open incidents</h2><p>None." in daemon.get("/").text


def test_silence_puts_the_incident_in_nodata_and_raises_telemetry_lost(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(core_config(tmp_path, mosquitto))
    daemon.wait_http("/readyz")
    publisher.send("dialer", {"calls_offered": 400, "calls_rejected": 48})
    opened = until_incident(daemon, "dialer", lambda i: i["severity"] == "major")
    assert opened["impact"] == "48 of 400 calls rejected in the last 5s (12.0%)"
    nodata = until_incident(daemon, "dialer", lambda i: i["state"] == "nodata")
    assert nodata["id"] == opened["id"] and nodata["resolved_at"] is None
    lost = until_incident(daemon, "telemetry", lambda i: True)
    assert (lost["severity"], lost["kind"]) == ("minor", "telemetry_lost")
    # Data again: the same incident is open again and telemetry is back.
    publisher.send("dialer", {"calls_offered": 400, "calls_rejected": 48})
    until_incident(daemon, "dialer", lambda i: i["state"] == "open" and i["id"] == opened["id"])
    wait_until(lambda: active_for(daemon, "telemetry") is None)


def test_restart_keeps_the_incident_and_messages_sent_while_down_arrive(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = core_config(
        tmp_path,
        mosquitto,
        tickets=[{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
    )
    # The dialer's fault is a second incident here, not part of acd's (grouping by site
    # would add it to acd's incident, opened less than group_window before).
    config["classification"] = {**FAST_HOLDS, "stale_after": "60s", "group_by": "dependencies"}
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher.send("acd", agents(23))
    before = until_incident(daemon, "acd", lambda i: i["severity"] == "critical")
    assert daemon.stop() == 0

    # While ccwatch is down: the dialer starts rejecting calls (QoS 1, persistent session).
    publisher.send("dialer", {"calls_offered": 400, "calls_rejected": 100})
    publisher.send("acd", agents(23))
    daemon.start()
    dialer = until_incident(daemon, "dialer", lambda i: True)
    assert dialer["severity"] == "critical"
    after = active_for(daemon, "acd")
    assert after is not None and after["id"] == before["id"] and after["state"] == "open"
    assert after["opened_at"] == before["opened_at"]

    # The CLI reads the same state while the daemon runs.
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccwatch.cli",
            "-c",
            str(daemon.config_path),
            "incidents",
            "list",
            "--state",
            "active",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {i["id"] for i in json.loads(listed.stdout)} == {before["id"], dialer["id"]}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccwatch.cli",
            "-c",
            str(daemon.config_path),
            "incidents",
            "show",
            before["id"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "23 of 100 agents cannot take calls" in shown.stdout and "opened" in shown.stdout
    daemon.stop()

    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        opens = db.execute(
            "SELECT incident_id, COUNT(*) FROM outbox WHERE event = 'open' GROUP BY incident_id"
        ).fetchall()
        active = db.execute(
            "SELECT COUNT(*) FROM incidents WHERE component = 'acd' AND state != 'resolved'"
        ).fetchone()[0]
    assert dict(opens) == {before["id"]: 1, dialer["id"]: 1}, "nothing opened twice"
    assert active == 1


def test_malformed_payloads_are_counted_by_reason_and_change_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(core_config(tmp_path, mosquitto, mqtt={"max_payload_bytes": 1024}))
    daemon.wait_http("/readyz")
    bad: list[tuple[str, bytes | dict[str, Any], str]] = [
        ("acd", b"{oops", "not_json"),
        ("acd", {"seats": "lots"}, "schema"),
        ("acd", {"seats": 100, "agents_unable_to_take_calls": -3}, "negative"),
        ("acd", {"calls_offered": 10, "calls_rejected": 50}, "inconsistent"),
        ("acd", {"seats": 100, "agents_logged_in": 150}, "inconsistent"),
        ("acd", b'{"seats": 100, "agents_unable_to_take_calls": NaN}', "nan"),
        ("acd", json.dumps({"up": False, "pad": "x" * 2000}).encode(), "too_large"),
        ("fax", {"up": False}, "unknown_component"),
    ]
    for component, body, _ in bad * 3:
        publisher.send(component, body)
    expected: dict[str, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 3

    def counted() -> bool:
        return all(
            metric(daemon, "ccwatch_ingest_rejected_total", {"reason": reason}) == count
            for reason, count in expected.items()
        )

    wait_until(counted, timeout=15)
    assert incidents(daemon) == [], "a rejected message must not move an incident"
    log = daemon.log()
    assert log.count("(not_json)") == 1, "each reason is logged once a minute, not per message"

    publisher.send("acd", agents(3))
    valid = until_incident(daemon, "acd", lambda i: True)
    assert (valid["severity"], valid["impact"]) == (
        "major",
        "3 of 100 agents cannot take calls (3.0%)",
    )
    assert daemon.process is not None and daemon.process.poll() is None


def test_broker_restart_reconnects_and_resubscribes(
    tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_factory(core_config(tmp_path, mosquitto))
    daemon.wait_http("/readyz")
    assert metric(daemon, "ccwatch_mqtt_connected") == 1
    mosquitto.stop()
    wait_until(lambda: metric(daemon, "ccwatch_mqtt_connected") == 0)
    assert daemon.get("/readyz").status_code == 503
    mosquitto.start()
    daemon.wait_http("/readyz", timeout=20)
    reconnects = metric(daemon, "ccwatch_mqtt_reconnects_total")
    assert reconnects is not None and reconnects >= 1
    publisher = Publisher(mosquitto)
    try:
        publisher.send("ivr", b"offline", kind="status")
        down = until_incident(daemon, "ivr", lambda i: True)
        assert (down["severity"], down["impact"]) == ("critical", "ivr is down (100.0%)")
    finally:
        publisher.close()


def test_simulate_fast_scenario_opens_and_resolves_the_story(
    tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    config = core_config(tmp_path, mosquitto)
    config["classification"] = {**FAST_HOLDS, "window": "3s", "stale_after": "5s"}
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    simulated = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccwatch.cli",
            "-c",
            str(daemon.config_path),
            "simulate",
            "--scenario",
            "fast",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ACD outage" in simulated.stdout and "done" in simulated.stdout

    def story() -> dict[str, dict[str, Any]] | None:
        found = {i["component"]: i for i in incidents(daemon) if i["kind"] == "production_loss"}
        if {"acd", "dialer"} <= set(found) and all(
            found[c]["state"] == "resolved" for c in ("acd", "dialer")
        ):
            return found
        return None

    found = wait_until(story, timeout=20)
    assert set(found) == {"acd", "dialer"}, "normal traffic must not open anything"
    assert (found["acd"]["severity"], found["acd"]["impact"]) == (
        "critical",
        "23 of 100 agents cannot take calls (23.0%)",
    )
    assert found["dialer"]["severity"] == "major" and "calls rejected" in found["dialer"]["impact"]
