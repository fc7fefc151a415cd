"""Checks that follow config.yaml rather than the checklist: ``component_processes``
(components.<name>.processes, real processes started here), ``retention`` with
``database: "*"`` (every retention database, real PostgreSQL), ``agent_capacity`` (the
latest metrics on a real Mosquitto)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ccwatch.checklists.checks.agent_capacity import capacity, read_sample
from ccwatch.checklists.checks.base import ProcessInfo
from ccwatch.checklists.result import Status
from tests.conftest import Mosquitto, free_port, wait_until
from tests.test_checklist_support import config, env, run
from tests.test_checks_network import publish_retained

# --- component_processes -----------------------------------------------------------------


@pytest.fixture
def acd_server(tmp_path: Path) -> Iterator[str]:
    """A real process named like a component's server (a copy of sleep under that name)."""
    name = "ccw-acd-test"
    program = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    process = subprocess.Popen([str(program), "60"])
    try:
        import psutil

        wait_until(lambda: psutil.Process(process.pid).name() == name)
        yield name
    finally:
        process.kill()
        process.wait()


def test_component_processes_follow_the_config(acd_server: str) -> None:
    cfg = config(
        components={
            "acd": {"seats": 100, "processes": [acd_server]},
            "dialer": {"processes": ["ccw-dialer-nope"]},
            "crm": {"processes": [acd_server, "ccw-crm-nope"]},  # a component added later
        }
    )
    outcome = run("component_processes", env(cfg))
    assert outcome.status is Status.FAIL
    assert outcome.value == "2 of 3 components missing processes: crm, dialer"
    lines = outcome.detail.splitlines()
    assert "acd: ccw-acd-test 1 running" in lines
    assert "crm: NOT RUNNING ccw-crm-nope (ccw-acd-test 1 running, ccw-crm-nope 0 running)" in lines
    assert "dialer: NOT RUNNING ccw-dialer-nope (ccw-dialer-nope 0 running)" in lines
    assert "ivr: no processes configured (components.ivr.processes)" in lines
    assert len(lines) == 6  # one line per configured component
    only_acd = run("component_processes", env(cfg), components=["acd"])
    assert (only_acd.status, only_acd.value) == (Status.OK, "1 components running")
    excluded = run("component_processes", env(cfg), exclude=["dialer", "crm"])
    assert excluded.status is Status.OK
    strict = run("component_processes", env(cfg), exclude=["dialer", "crm"], warn_unconfigured=True)
    assert strict.status is Status.WARN
    assert "no processes configured for ivr, reports, voice_logger" in strict.value


def test_component_processes_match_argv0_and_report_typos() -> None:
    java = ProcessInfo(10, "java", ("/opt/ameyo/bin/acdserver", "-Xmx4g"))
    cfg = config(components={"acd": {"processes": ["acdserver"]}})
    outcome = run("component_processes", env(cfg, processes=lambda: [java]))
    assert outcome.status is Status.OK
    typo = run("component_processes", env(cfg), components=["adc"])
    assert typo.status is Status.FAIL
    assert typo.value == "not configured: adc (did you mean 'acd'?)"
    nothing = run("component_processes", env(config()))
    assert nothing.status is Status.SKIPPED


# --- retention: every database -----------------------------------------------------------


def test_retention_checks_every_configured_database(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(pg_database) as connection:
        connection.execute("CREATE TABLE call_history (created_at timestamptz)")
        connection.execute("CREATE TABLE report_data (report_time timestamptz)")
        connection.execute("INSERT INTO call_history VALUES (now() - interval '200 days')")
        connection.execute("INSERT INTO report_data VALUES (now() - interval '120 days')")
    monkeypatch.setenv("CCWATCH_TEST_DSN", pg_database)

    def database(
        name: str, keep: int, table: str, column: str, **extra: object
    ) -> dict[str, object]:
        return {
            "name": name,
            "dsn_env": "CCWATCH_TEST_DSN",
            "keep_days": keep,
            "tables": [{"table": table, "column": column}],
            **extra,
        }

    cfg = config(
        retention={
            "databases": [
                database("ameyodb", 90, "call_history", "created_at"),
                database("reportsdb", 180, "report_data", "report_time"),
                database("archive", 365, "call_history", "created_at", enabled=False),
            ]
        }
    )
    outcome = run("retention", env(cfg), database="*")
    assert outcome.status is Status.FAIL
    assert outcome.value == "ameyodb: call_history: 1 rows older than the cutoff"
    lines = outcome.detail.splitlines()
    assert "reportsdb: ok: 0 rows older than the cutoff in 1 table(s)" in lines
    assert "archive: skipped: retention database 'archive' is disabled in config.yaml" in lines
    assert "ameyodb: call_history oldest" in outcome.detail
    # reportsdb keeps 180 days: its 120-day-old row is fine, ameyodb's 90 days are not.
    assert "ameyodb:" in outcome.threshold and "reportsdb:" in outcome.threshold
    with psycopg.connect(pg_database) as connection:
        connection.execute("DELETE FROM call_history")
    clean = run("retention", env(cfg), database="*")
    assert clean.status is Status.OK
    assert clean.value == "0 rows older than the cutoff in 2 database(s): ameyodb, reportsdb"
    none = run("retention", env(config()), database="*")
    assert none.status is Status.SKIPPED


# --- agent_capacity ----------------------------------------------------------------------


def test_capacity_prefers_unable_to_login_then_expected_staffing() -> None:
    assert capacity({"seats": 100, "agents_unable_to_login": 20}, None, False) == (
        80.0,
        100.0,
        "80 of 100 seats can log in",
    )
    assert capacity({"agents_unable_to_login": 3}, 50, False)[:2] == (47.0, 50.0)  # config seats
    assert capacity({"agents_logged_in": 9, "agents_expected": 10, "seats": 100}, None, False)[
        :2
    ] == (9.0, 10.0)
    # Before the first shift few agents are logged in; that alone says nothing by default.
    assert isinstance(capacity({"agents_logged_in": 5, "seats": 100}, None, False), str)
    assert capacity({"agents_logged_in": 5, "seats": 100}, None, True)[:2] == (5.0, 100.0)


def test_read_sample_native_and_telegraf() -> None:
    native = read_sample(b'{"ts": 1795000000, "seats": 100, "agents_unable_to_login": 4}')
    assert native is not None and native.stamp == 1_795_000_000.0
    assert native.figures == {"seats": 100.0, "agents_unable_to_login": 4.0}
    batch = json.dumps(
        {
            "metrics": [
                {"fields": {"agents_logged_in": 50, "agents_expected": 60}, "timestamp": 1},
                {"fields": {"up": 1}, "timestamp": 2},
            ]
        }
    ).encode()
    telegraf = read_sample(batch)
    assert telegraf is not None and telegraf.figures == {
        "agents_logged_in": 50.0,
        "agents_expected": 60.0,
    }
    assert read_sample(b'{"up": true, "seats": 100}') is None  # seats alone: no agent figure
    assert read_sample(b'{"agents_unable_to_login": true}') is None
    assert read_sample(b"[" * 10_000) is None


def test_agent_capacity_from_retained_metrics(mosquitto: Mosquitto) -> None:
    now = time.time()
    publish_retained(
        mosquitto,
        {
            # 25 of 100 cannot log in: 75% able, under seed 004's 80 -> fail
            "cc/blr1/acd/metrics": json.dumps(
                {"ts": now - 30, "seats": 100, "agents_unable_to_login": 25}
            ).encode(),
            # Telegraf: 95 logged in of 100 expected -> warn (under 98%)
            "cc/blr1/dialer/metrics": json.dumps(
                {
                    "name": "cc",
                    "tags": {"site": "blr1"},
                    "fields": {"agents_logged_in": 95, "agents_expected": 100},
                    "timestamp": int(now - 10),
                }
            ).encode(),
            "cc/blr1/ivr/metrics": json.dumps({"ts": now - 5, "up": True}).encode(),
        },
    )
    mqtt = {"host": mosquitto.host, "port": mosquitto.port}
    cfg = config(mqtt=mqtt, components={"acd": {"seats": 100}, "dialer": {"seats": 100}})
    outcome = run("agent_capacity", env(cfg), listen="300ms")
    assert outcome.status is Status.FAIL
    assert outcome.value == (
        "acd: 75% (75 of 100 seats can log in); dialer: 95% (95 logged in of 100 expected)"
    )
    lines = outcome.detail.splitlines()
    assert "ivr: no agent figures heard (no retained metrics, none live)" in lines
    assert len(lines) == 5
    assert outcome.threshold == "capacity fail below 80%, warn below 98%"
    lenient = run("agent_capacity", env(cfg), listen="300ms", warn_below_percent=90)
    assert lenient.status is Status.FAIL  # acd still under 80%
    publish_retained(
        mosquitto,
        {
            "cc/blr1/acd/metrics": json.dumps(
                {"ts": now - 20, "agents_unable_to_login": 1}  # seats from config.yaml
            ).encode()
        },
    )
    healthy = run("agent_capacity", env(cfg), components=["acd"], listen="300ms")
    assert (healthy.status, healthy.value) == (Status.OK, "acd: 99% (99 of 100 seats can log in)")


def test_agent_capacity_warns_on_old_or_missing_figures(mosquitto: Mosquitto) -> None:
    now = time.time()
    publish_retained(
        mosquitto,
        {
            "cc/blr1/acd/metrics": json.dumps(
                {"ts": now - 3600, "seats": 100, "agents_unable_to_login": 0}
            ).encode()
        },
    )
    mqtt = {"host": mosquitto.host, "port": mosquitto.port}
    cfg = config(mqtt=mqtt, components={"acd": {"seats": 100}, "dialer": {"seats": 50}})
    outcome = run("agent_capacity", env(cfg), listen="300ms")
    assert outcome.status is Status.WARN
    assert outcome.value == (
        "acd: newest agent figures too old to use (60 min old); "
        "dialer: no agent figures heard (no retained metrics, none live)"
    )
    # No seats configured and nobody publishing agent figures: nothing to judge.
    publish_retained(mosquitto, {"cc/blr1/acd/metrics": b""})  # clears the retained message
    nothing = run("agent_capacity", env(config(mqtt=mqtt)), listen="200ms")
    assert nothing.status is Status.SKIPPED


def test_agent_capacity_broker_down() -> None:
    cfg = config(mqtt={"host": "127.0.0.1", "port": free_port()})
    outcome = run("agent_capacity", env(cfg), listen="200ms")
    assert outcome.status is Status.FAIL
    assert "unreachable" in outcome.value


def test_agent_capacity_counts_a_live_message(mosquitto: Mosquitto) -> None:
    """A publisher that does not retain: its message arriving during ``listen`` counts."""
    mqtt = {"host": mosquitto.host, "port": mosquitto.port}
    cfg = config(mqtt=mqtt, components={"acd": {"seats": 100}})
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, paho.mqtt.publish as p\n"
            "for _ in range(100):\n"
            "    p.single('cc/blr1/acd/metrics', sys.argv[1], hostname='127.0.0.1',"
            f" port={mosquitto.port})\n"
            "    time.sleep(0.05)\n",
            json.dumps({"agents_unable_to_login": 2}),
        ]
    )
    try:
        outcome = run("agent_capacity", env(cfg), components=["acd"], listen="5s")
    finally:
        publisher.kill()
        publisher.wait()
    assert (outcome.status, outcome.value) == (Status.OK, "acd: 98% (98 of 100 seats can log in)")
