"""Ingest guards against the real broker and daemon: seats whichever way they arrive, and
samples that are already old when they arrive."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import (
    Publisher,
    active_for,
    core_config,
    incidents,
    metric,
    publisher,  # noqa: F401 - fixture
    until_incident,
)

pytestmark = pytest.mark.slow


def test_counts_above_the_configured_seats_are_rejected_like_inline_ones(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = core_config(tmp_path, mosquitto, components={"acd": {"seats": 100}})
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher.send("acd", {"agents_unable_to_take_calls": 150, "up": True})
    publisher.send("acd", {"seats": 100, "agents_unable_to_take_calls": 150, "up": True})
    wait_until(
        lambda: metric(daemon, "ccwatch_ingest_rejected_total", {"reason": "inconsistent"}) == 2
    )
    assert incidents(daemon) == [], "150 of 100 agents is a broken exporter, not a P1"
    publisher.send("acd", {"agents_unable_to_take_calls": 23, "up": True})
    opened = until_incident(daemon, "acd", lambda i: True)
    assert opened["impact"] == "23 of 100 agents cannot take calls (23.0%)"


def test_a_retained_sample_from_yesterday_opens_nothing_at_start(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    yesterday = datetime.fromtimestamp(time.time() - 86400, UTC).isoformat()
    old = {"ts": yesterday, "seats": 100, "agents_unable_to_take_calls": 40, "up": True}
    info = publisher.client.publish("cc/blr1/acd/metrics", json.dumps(old), qos=1, retain=True)
    info.wait_for_publish(10)
    daemon = daemon_factory(core_config(tmp_path, mosquitto))
    daemon.wait_http("/readyz")
    wait_until(
        lambda: metric(daemon, "ccwatch_ingest_stale_samples_total", {"component": "acd"}) == 1
    )
    assert incidents(daemon) == [], "a day-old retained sample must not open a P1"
    publisher.send("acd", {"seats": 100, "agents_unable_to_take_calls": 40, "up": True})
    opened = until_incident(daemon, "acd", lambda i: True)
    assert opened["severity"] == "critical"
    assert active_for(daemon, "acd") is not None
