"""``mqtt_freshness`` reads ``ts`` as ingest does (one parser, ``ccwatch.mqtt``) and is not
fooled by a retained message dated in the future. (Broker basics: test_checks_network.)"""

from __future__ import annotations

import json
import time

from ccwatch.checklists.checks.mqtt_freshness import payload_time
from ccwatch.checklists.result import Status
from tests.conftest import Mosquitto
from tests.test_checklist_support import config, env, run
from tests.test_checks_network import publish_retained

NOW = 1_795_430_000.0


def test_payload_time_reads_every_epoch_unit_and_rfc3339_with_offset() -> None:
    for stamp in (NOW, int(NOW * 1e3), int(NOW * 1e6), int(NOW * 1e9)):
        # The old reader took µs and ns for seconds, dates thousands of years ahead.
        assert payload_time(json.dumps({"ts": stamp}).encode()) == NOW
    telegraf = json.dumps({"fields": {"up": 1}, "timestamp": int(NOW)}).encode()
    assert payload_time(telegraf) == NOW
    assert payload_time(b'{"ts": "2026-11-23T15:30:00+05:30"}') == 1_795_428_000.0


def test_payload_time_is_none_for_what_ingest_would_refuse() -> None:
    assert payload_time(b'{"ts": "2026-11-23T10:00:00"}') is None  # naive: old reader took it
    assert payload_time(b"[" * 20_000) is None  # RecursionError before
    assert payload_time(json.dumps({"ts": 10**400}).encode()) is None  # OverflowError before
    assert payload_time(b'{"ts": true}') is None
    assert payload_time(b'{"up": true}') is None
    assert payload_time(b"not json") is None


def test_a_retained_ts_in_the_future_is_not_fresh(mosquitto: Mosquitto) -> None:
    now = time.time()
    publish_retained(
        mosquitto,
        {
            "cc/blr1/acd/metrics": json.dumps({"ts": "2099-01-01T00:00:00Z", "up": True}).encode(),
            "cc/blr1/dialer/metrics": json.dumps({"ts": now - 5, "up": True}).encode(),
        },
    )
    cfg = config(mqtt={"host": mosquitto.host, "port": mosquitto.port})
    outcome = run("mqtt_freshness", env(cfg), components=["acd", "dialer"], listen="300ms")
    assert outcome.status is Status.FAIL
    assert outcome.value == "1 of 2 components stale: acd"
    assert "acd: retained ts is more than mqtt.max_clock_skew in the future" in outcome.detail
