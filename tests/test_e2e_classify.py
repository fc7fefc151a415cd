"""End to end: small samples and expected staffing through a real Mosquitto and
``ccwatch run`` (README "Classification")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, Mosquitto
from tests.test_e2e_core import Publisher, active_for, core_config, until_incident
from tests.test_e2e_core import publisher as publisher  # the fixture

pytestmark = pytest.mark.slow


def zone_where_it_is_3am() -> str:
    """A fixed-offset IANA zone in which the local time is now 03:xx (Etc/GMT-5 is UTC+5)."""
    offset = (3 - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def test_a_total_outage_on_a_small_sample_opens_a_major_incident(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    # 15 of 15 calls rejected, below min_calls_offered (20): before, no incident at all.
    config = core_config(tmp_path, mosquitto)
    config["classification"] = {**config["classification"], "window": "1m"}  # a copy
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher.send("dialer", {"calls_offered": 15, "calls_rejected": 15, "up": True})
    incident = until_incident(daemon, "dialer", lambda i: i["severity"] == "major")
    assert (incident["priority"], incident["state"]) == ("P2", "open")
    assert incident["impact"] == (
        "15 of 15 calls rejected in the last 1m (100.0%), small sample: at least 79.6%"
    )
    assert incident["production_loss"] == pytest.approx(0.796, abs=1e-3)
    # Five more rejected calls reach the minimum: the share counts as measured (critical).
    publisher.send("dialer", {"calls_offered": 5, "calls_rejected": 5, "up": True})
    critical = until_incident(daemon, "dialer", lambda i: i["severity"] == "critical")
    assert critical["id"] == incident["id"]
    assert critical["impact"] == "20 of 20 calls rejected in the last 1m (100.0%)"


def test_night_staffing_keeps_a_small_night_shift_from_paging(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    zone = zone_where_it_is_3am()
    shifts = [
        {"from": "00:00", "expected": 10},
        {"from": "08:00", "expected": 100},
        {"from": "20:00", "expected": 40},
    ]
    daemon = daemon_factory(
        core_config(
            tmp_path,
            mosquitto,
            site_timezone=zone,
            components={"acd": {"seats": 100, "staffing": shifts}, "ivr": {"seats": 100}},
            # acd and ivr are two cases here, not one fault: each keeps its own incident.
            classification={"group_by": "dependencies"},
        )
    )
    daemon.wait_http("/readyz")
    # 3 a.m. site time: 8 of the 10 planned agents logged in is minor, not a P1.
    publisher.send("acd", {"agents_logged_in": 8, "up": True})
    acd = until_incident(daemon, "acd", lambda i: i["severity"] == "minor")
    assert acd["impact"] == "2 of 100 expected agents are not logged in (8 of 10 logged in, 2.0%)"
    # Without a staffing table the seats are expected: the same 8 agents are critical.
    publisher.send("ivr", {"agents_logged_in": 8, "up": True})
    ivr = until_incident(daemon, "ivr", lambda i: i["severity"] == "critical")
    assert ivr["impact"].startswith("92 of 100 expected agents are not logged in")
    # A payload that says how many it expects is taken at its word.
    publisher.send("acd", {"agents_logged_in": 8, "agents_expected": 100, "up": True})
    until_incident(daemon, "acd", lambda i: i["severity"] == "critical")
    assert active_for(daemon, "acd") is not None
