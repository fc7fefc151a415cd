"""Hostile MQTT payloads through the real broker into a running daemon (issue 10, "Bad
MQTT input"): each is counted under its reason, logs no traceback, changes no incident,
and leaves the component working for the messages after it. Each failed before."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import Publisher, core_config, incidents, metric, until_incident

pytestmark = pytest.mark.slow


def rejected(daemon: DaemonProcess, reason: str) -> float | None:
    return metric(daemon, "ccwatch_ingest_rejected_total", {"reason": reason})


def test_deep_json_huge_numbers_and_future_ts_are_rejected_and_harmless(
    tmp_path: Path,
    mosquitto: Mosquitto,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    # acd and the dialer each show they still work with an incident of their own.
    config = core_config(tmp_path, mosquitto, classification={"group_by": "dependencies"})
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher = Publisher(mosquitto)
    try:
        check_bad_input(daemon, publisher)
    finally:
        publisher.close()


def check_bad_input(daemon: DaemonProcess, publisher: Publisher) -> None:
    huge = 10**400
    # json.dumps writes 10**400 as its 401 digits, as a hostile publisher would.
    schema = [
        ("acd", b"[" * 20_000),  # RecursionError in json.loads before
        ("acd", json.dumps({"up": True, "ts": huge}).encode()),  # OverflowError before
        # Stored in the window before: every later acd message then failed to classify.
        ("acd", json.dumps({"agents_expected": huge, "agents_logged_in": 0}).encode()),
    ]
    # Stored as the window's newest bucket before: later (current) calls were ignored.
    future = json.dumps(
        {"ts": "2099-01-01T00:00:00Z", "calls_offered": 100, "calls_rejected": 0}
    ).encode()
    for _ in range(3):
        for component, body in schema:
            publisher.send(component, body)
        publisher.send("dialer", future)
    wait_until(
        lambda: rejected(daemon, "schema") == 9 and rejected(daemon, "clock_skew") == 3,
        timeout=15,
    )
    assert incidents(daemon) == [], "a rejected message must not move an incident"

    # The components still work: acd classifies, and the dialer's current calls count.
    publisher.send("acd", {"seats": 100, "agents_unable_to_take_calls": 3, "up": True})
    acd = until_incident(daemon, "acd", lambda i: True)
    assert acd["impact"] == "3 of 100 agents cannot take calls (3.0%)"
    now = time.time()
    publisher.send("dialer", {"ts": now, "calls_offered": 100, "calls_rejected": 15, "up": True})
    dialer = until_incident(daemon, "dialer", lambda i: True)
    assert dialer["severity"] == "major" and "calls rejected" in dialer["impact"]

    log = daemon.log()
    assert "Traceback" not in log and "a ccwatch bug" not in log
    assert log.count("(clock_skew)") == 1, "logged once a minute per reason, then counted"
    assert daemon.process is not None and daemon.process.poll() is None
