"""The dead-man's switch of the real daemon: a broker of the test's own (stopped and started
again), a local healthchecks.io-style receiver, and the real Alertmanager."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_adapters import _alerts
from tests.test_adapters import alertmanager as alertmanager  # the fixture
from tests.test_e2e_core import Publisher, agents, core_config
from tests.test_heartbeat import CHECK, healthchecks
from tests.test_tickets_support import Received, Receiver

pytestmark = pytest.mark.slow

URL_ENV = "CCWATCH_TEST_HEARTBEAT_URL"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(validator=healthchecks).start()
    yield server
    server.close()


def pings(receiver: Receiver, after: float = 0.0) -> list[Received]:
    return [r for r in list(receiver.accepted) if r.path == f"/{CHECK}" and r.at > after]


def fails(receiver: Receiver, after: float = 0.0) -> list[Received]:
    return [r for r in list(receiver.accepted) if r.path == f"/{CHECK}/fail" and r.at > after]


def start(
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
    mosquitto: Mosquitto,
    receiver: Receiver,
    **heartbeat: Any,
) -> DaemonProcess:
    config = core_config(
        tmp_path, mosquitto, heartbeat={"url_env": URL_ENV, "interval": "1s", "timeout": "1s", **heartbeat}
    )
    return daemon_factory(config, env={URL_ENV: f"{receiver.url}/{CHECK}"})


def test_pings_while_healthy_fails_without_the_broker_and_resumes(
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
    mosquitto: Mosquitto,
    receiver: Receiver,
) -> None:
    daemon = start(daemon_factory, tmp_path, mosquitto, receiver, max_stall=None)
    wait_until(lambda: len(pings(receiver)) >= 2, timeout=15)
    assert fails(receiver) == []

    mosquitto.stop()
    stopped = time.time()
    (first, *_) = wait_until(lambda: fails(receiver, after=stopped), timeout=15)
    assert first.body.decode().startswith("ccwatch blr1: MQTT broker not connected")
    wait_until(lambda: len(fails(receiver, after=stopped)) >= 2, timeout=15)
    assert pings(receiver, after=first.at) == []  # no "healthy" while the broker is gone

    mosquitto.start()
    restarted = time.time()
    wait_until(lambda: pings(receiver, after=restarted), timeout=20)

    metrics = daemon.get("/metrics").text
    assert 'ccwatch_heartbeat_sends_total{outcome="fail",target="url"}' in metrics
    assert "ccwatch_heartbeat_last_success_timestamp_seconds" in metrics
    log = daemon.log()
    assert "heartbeat: ccwatch is unhealthy" in log and "healthy again" in log
    assert CHECK not in log  # the ping URL is a secret


def test_a_stalled_ingest_fails_until_a_message_is_processed(
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
    mosquitto: Mosquitto,
    receiver: Receiver,
) -> None:
    start(daemon_factory, tmp_path, mosquitto, receiver, max_stall="2s")
    (first, *_) = wait_until(lambda: fails(receiver), timeout=20)
    assert b"ingest stalled: no MQTT message processed since the start" in first.body

    publisher = Publisher(mosquitto)
    try:
        published = time.time()
        publisher.send("acd", agents(0))
        wait_until(lambda: pings(receiver, after=published), timeout=15)
    finally:
        publisher.close()


def watchdogs(base: str) -> list[dict[str, Any]]:
    return [a for a in _alerts(base) if a["labels"].get("alertname") == "Watchdog"]


def test_the_watchdog_alert_fires_in_alertmanager_while_healthy(
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
    mosquitto: Mosquitto,
    alertmanager: str,
) -> None:
    config = core_config(
        tmp_path,
        mosquitto,
        tickets=[{"type": "alertmanager", "name": "am", "url": alertmanager, "labels": {"team": "cc"}}],
        heartbeat={"alertmanager": "am", "interval": "1s", "timeout": "1s", "max_stall": None},
    )
    daemon_factory(config)
    (watchdog,) = wait_until(lambda: watchdogs(alertmanager), timeout=20)
    assert watchdog["labels"] == {
        "alertname": "Watchdog",
        "site": "blr1",
        "severity": "none",
        "team": "cc",
    }
    assert watchdog["status"]["state"] == "active"

    # Unhealthy: ccwatch stops sending and Alertmanager lets the alert expire.
    mosquitto.stop()
    wait_until(lambda: watchdogs(alertmanager) == [], timeout=20)
    mosquitto.start()
    wait_until(lambda: watchdogs(alertmanager), timeout=20)
