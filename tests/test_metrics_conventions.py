"""/metrics keeps the Prometheus exporter conventions.

One running daemon (module scope) is given something to report in every area: components
sending metrics over MQTT (a critical incident opens, so SLA clocks run), a webhook
upstream that refuses events for good (dead letters) and one that does not answer
(retries), a missed checklist morning and a missed retention night (both caught up at
start). Its /metrics is parsed with prometheus_client's parser and each ``ccwatch_``
metric family is checked:

- counters expose ``<name>_total``; gauges and histograms do not end in ``_total``;
- base units only (seconds, bytes, ratio 0..1): no ``_milliseconds``, ``_minutes``,
  ``_percent`` …; times end in ``_seconds`` (``_timestamp_seconds`` for points in time);
  histograms name their unit;
- bounded cardinality: label names come from a fixed vocabulary (site, component,
  severity, reason, …) and no label value is an incident id, so the number of series is
  bounded by components times severities, not by the incidents ever opened.

Known violations are marked ``xfail(strict=True)`` per family: when one is fixed the case
passes, strict xfail turns that into a failure, and the mark is removed.
"""

from __future__ import annotations

import http.server
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ccwatch.compose import open_state
from ccwatch.state import transaction
from tests.conftest import (
    MOSQUITTO,
    PG_ADMIN_DSN,
    DaemonProcess,
    Mosquitto,
    base_config,
    free_port,
    wait_until,
)
from tests.test_e2e_core import Publisher

pytestmark = pytest.mark.slow

# Label names whose values are bounded by the configuration (components, upstreams,
# checklists, databases) or by the code (severities, reasons, outcomes, …).
BOUNDED_LABELS = {
    "site",
    "component",
    "severity",
    "reason",
    "change",
    "upstream",
    "event",
    "outcome",
    "kind",
    "level",
    "checklist",
    "check",
    "database",
    "source",  # an inbound: source (config)
    "table",
    "dependency",
    "target",  # the heartbeat's: url, alertmanager
    "sha256",  # ccwatch_config_info: one series, the loaded config
    "version",  # ccwatch_build_info
    "le",
}
NON_BASE_UNITS = re.compile(
    r"_(milli|micro|nano)?(seconds?_)?(ms|us|ns|millis|milliseconds|microseconds|"
    r"nanoseconds|minutes?|hours?|days?|kb|mb|gb|kilobytes|megabytes|gigabytes|percent|pct)"
    r"(_|$)"
)
TIME_WORDS = {"age", "duration", "lag", "latency", "remaining", "delay", "uptime", "elapsed"}

# Every ccwatch family the daemon under test exposes (counters without `_total`, as the
# parser names them). A family not listed here is still checked, by
# test_unlisted_families_keep_the_conventions.
FAMILIES = [
    "ccwatch_build_info",
    "ccwatch_config_info",
    "ccwatch_config_reload_failures",
    "ccwatch_config_last_reload_successful",
    "ccwatch_config_last_reload_success_timestamp_seconds",
    "ccwatch_dependency_ready",
    "ccwatch_mqtt_connected",
    "ccwatch_mqtt_reconnects",
    "ccwatch_ingest_messages",
    "ccwatch_ingest_rejected",
    "ccwatch_ingest_dropped",
    "ccwatch_ingest_queue_depth",
    "ccwatch_ingest_lag_seconds",
    "ccwatch_component_production_loss_ratio",
    "ccwatch_component_severity",
    "ccwatch_incidents_open",
    "ccwatch_incident_changes",
    "ccwatch_incident_write_failures",
    "ccwatch_outbox_depth",
    "ccwatch_outbox_oldest_age_seconds",
    "ccwatch_tickets_sent",
    "ccwatch_ticket_delivery_seconds",
    "ccwatch_sla_breaches",
    "ccwatch_sla_escalations",
    "ccwatch_incident_sla_remaining_seconds",
    "ccwatch_checklist_check_status",
    "ccwatch_checklist_last_run_timestamp_seconds",
    "ccwatch_checklist_duration_seconds",
    "ccwatch_checklist_email_failures",
    "ccwatch_retention_rows_deleted",
    "ccwatch_retention_partitions_dropped",
    "ccwatch_retention_batch_seconds",
    "ccwatch_retention_batch_retries",
    "ccwatch_retention_runs",
    "ccwatch_retention_last_success_timestamp_seconds",
    "ccwatch_heartbeat_sends",
    "ccwatch_heartbeat_last_success_timestamp_seconds",
]
LISTED = {f if isinstance(f, str) else str(f.values[0]) for f in FAMILIES}

CHECKLIST = """
schedule: {cron: "30 6 * * *", timezone: UTC}
email_when: never
checks:
  - {id: cpu, type: cpu_load, params: {warn_per_cpu: null, fail_per_cpu: null}}
  - {id: app_log, type: file_age, params: {path: /nonexistent/ccwatch.log}}
"""


@dataclass
class Scrape:
    families: dict[str, Any]
    incident_ids: set[str]
    text: str


class _Refuser(http.server.BaseHTTPRequestHandler):
    """An upstream that refuses every event for good (400): dead letters."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": "unknown routing"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str | None]:
    """A scratch database for the retention run, or None when PostgreSQL is unreachable
    (the retention families then come from a failed run only)."""
    try:
        import psycopg
    except ImportError:
        yield None
        return
    name = f"ccwatch_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        yield None
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}")
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE call_history (id bigserial PRIMARY KEY, created_at timestamptz)")
        conn.execute("CREATE INDEX ON call_history (created_at)")
        conn.execute(
            "INSERT INTO call_history (created_at) VALUES (%s), (%s)",
            (now - timedelta(days=120), now - timedelta(days=1)),
        )
    try:
        yield dsn
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str | None) -> Iterator[Scrape]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    workdir = tmp_path_factory.mktemp("conventions")
    (workdir / "mosquitto").mkdir()
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    refuser = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=refuser.serve_forever, daemon=True).start()
    daemon: DaemonProcess | None = None
    publisher: Publisher | None = None
    try:
        table = [{"table": "call_history", "column": "created_at"}]
        databases: list[dict[str, Any]] = [
            {
                "name": "reportsdb",
                "dsn": PG_ADMIN_DSN.replace("dbname=postgres", "dbname=ccwatch_missing_db"),
                "keep_days": 180,
                "tables": table,
            }
        ]
        if pg_dsn is not None:
            databases.append({"name": "ameyodb", "dsn": pg_dsn, "keep_days": 90, "tables": table})
        config = base_config(
            workdir,
            mqtt={"port": broker.port},
            classification={"open_after": "0s"},
            tickets=[
                {
                    "type": "webhook",
                    "name": "refusing",
                    "url": f"http://127.0.0.1:{refuser.server_address[1]}/events",
                },
                {
                    "type": "webhook",
                    "name": "silent",
                    "url": f"http://127.0.0.1:{free_port()}/events",
                    "timeout": "1s",
                },
            ],
            checklists={"dir": str(workdir / "checklists")},
            retention={
                "schedule": {"cron": "30 1 * * *", "timezone": "UTC"},
                "databases": databases,
            },
            # Pings the refuser: every send is an error.
            heartbeat={"url_env": "CCWATCH_TEST_HEARTBEAT_URL", "interval": "1s", "timeout": "1s"},
        )
        (workdir / "checklists").mkdir()
        (workdir / "checklists" / "daily.yaml").write_text(CHECKLIST)
        # The daemon was down at the last checklist morning and retention night: it
        # catches both up as it starts.
        store = open_state(Path(config["state"]["path"]))

        def missed(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                for job in ("checklist:daily", "retention"):
                    connection.execute(
                        "INSERT INTO scheduler_runs (job, last_run_at) VALUES (?, ?)",
                        (job, time.time() - 2 * 86400),
                    )

        store.run_sync(missed)
        store.close()
        (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        daemon = DaemonProcess(
            workdir / "config.yaml",
            {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "CCWATCH_TEST_HEARTBEAT_URL": f"http://127.0.0.1:{refuser.server_address[1]}/ping",
            },
            workdir / "ccwatch.log",
            listen=config["http"]["listen"],
        )
        daemon.env.pop("NOTIFY_SOCKET", None)
        daemon.start()

        # /healthz answers before the MQTT session is subscribed; what is published
        # before that is lost (the session is new), so wait for the subscription.
        def subscribed() -> bool:
            body = daemon.get("/readyz").json() if daemon else {}
            return bool(body.get("dependencies", {}).get("mqtt", {}).get("ready"))

        wait_until(subscribed, timeout=60, interval=0.1)
        publisher = Publisher(broker)
        publisher.send("acd", {"seats": 100, "agents_unable_to_take_calls": 23, "up": True})
        publisher.send("dialer", {"calls_offered": 400, "calls_rejected": 48, "up": True})
        publisher.send("ivr", b"not json")  # a rejection

        missing: list[str] = []

        def everything_reported() -> str | None:
            text: str = daemon.get("/metrics").text if daemon else ""
            wanted = (
                "ccwatch_incident_sla_remaining_seconds{",
                'ccwatch_tickets_sent_total{event="open",outcome="dead",upstream="refusing"}',
                'outcome="retry",upstream="silent"',
                "ccwatch_checklist_last_run_timestamp_seconds{",
                'ccwatch_retention_runs_total{database="reportsdb",outcome="failed"}',
                'ccwatch_ingest_rejected_total{reason="not_json"} 1.0',
                'ccwatch_component_severity{component="acd",site="blr1"} 3.0',
                'ccwatch_component_severity{component="dialer",site="blr1"} 2.0',
            )
            missing[:] = [w for w in wanted if w not in text]
            return None if missing else text

        # Generous: the start-up catch-up of retention retries a locked table with backoff.
        try:
            text = wait_until(everything_reported, timeout=120, interval=0.2)
        except AssertionError:
            log = (workdir / "ccwatch.log").read_text(errors="replace")[-6000:]
            raise AssertionError(f"/metrics still lacks {missing}; daemon log ends:\n{log}") from None
        incidents = daemon.get("/api/incidents", params={"state": "active"}).json()["incidents"]
        assert incidents, "no incident opened"
        families = {family.name: family for family in text_string_to_metric_families(text)}
        yield Scrape(families, {incident["id"] for incident in incidents}, text)
    finally:
        if publisher is not None:
            publisher.close()
        if daemon is not None:
            daemon.stop()
        refuser.shutdown()
        broker.stop()


def problems(family: Any, incident_ids: set[str]) -> list[str]:
    """What in one metric family breaks the exporter conventions."""
    name: str = family.name
    found: list[str] = []
    samples: list[Sample] = family.samples
    if not name.startswith("ccwatch_"):
        found.append("not in the ccwatch_ namespace")
    if family.type == "counter":
        if name.endswith("_total"):
            found.append("counter exposed as <name>_total_total")
        bad = {s.name for s in samples if not s.name.endswith(("_total", "_created"))}
        if bad:
            found.append(f"counter samples without _total: {sorted(bad)}")
    elif name.endswith("_total"):
        found.append(f"a {family.type} named _total (only counters are)")
    if family.type in {"histogram", "summary"} and not name.endswith(("_seconds", "_bytes")):
        found.append(f"{family.type} without a base unit suffix (_seconds, _bytes)")
    if NON_BASE_UNITS.search(name):
        found.append("not in base units (seconds, bytes, ratio)")
    words = set(name.split("_"))
    if words & TIME_WORDS and not name.endswith("_seconds"):
        found.append("a time that does not end in _seconds")
    if "timestamp" in words and not name.endswith("_timestamp_seconds"):
        found.append("a point in time that does not end in _timestamp_seconds")
    if name.endswith("_ratio"):
        outside = [s.value for s in samples if not 0 <= s.value <= 1]
        if outside:
            found.append(f"a ratio outside 0..1: {outside}")
    if words & {"percent", "percentage"}:
        found.append("a percentage: expose a _ratio (0..1)")
    for sample in samples:
        unbounded = set(sample.labels) - BOUNDED_LABELS
        if unbounded:
            found.append(f"label names outside the bounded set: {sorted(unbounded)}")
        ids = [v for v in sample.labels.values() if any(i in v for i in incident_ids)]
        if ids:
            found.append(f"incident ids as label values: {sample.name}{sample.labels}")
        if family.type == "counter" and sample.value < 0:
            found.append(f"negative counter {sample.name}{sample.labels}")
    return sorted(set(found))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_keeps_the_exporter_conventions(scrape: Scrape, name: str) -> None:
    assert name in scrape.families, f"{name} is not exposed (renamed? update FAMILIES)"
    assert problems(scrape.families[name], scrape.incident_ids) == []


def test_unlisted_families_keep_the_conventions(scrape: Scrape) -> None:
    unlisted = {n for n in scrape.families if n.startswith("ccwatch_")} - LISTED
    found = {n: problems(scrape.families[n], scrape.incident_ids) for n in sorted(unlisted)}
    assert {n: p for n, p in found.items() if p} == {}


def test_the_check_sees_what_it_checks(scrape: Scrape) -> None:
    """The daemon under test reported in every area, with the labels the checks read."""
    assert scrape.incident_ids
    sla = scrape.families["ccwatch_incident_sla_remaining_seconds"].samples
    assert sla, "no SLA clock runs"
    sent = {
        (s.labels["upstream"], s.labels["outcome"])
        for s in scrape.families["ccwatch_tickets_sent"].samples
    }
    assert {("refusing", "dead"), ("silent", "retry")} <= sent
    components = {
        s.labels["component"] for s in scrape.families["ccwatch_component_severity"].samples
    }
    assert {"acd", "dialer"} <= components
    assert scrape.families["ccwatch_retention_runs"].samples


def test_the_checker_catches_each_kind_of_violation() -> None:
    """problems() on hand-written expositions: each convention, broken once."""
    exposition = """\
# TYPE ccwatch_events_total counter
ccwatch_events_total{incident="0f3a9c1e"} 1
# TYPE ccwatch_outbox_total gauge
ccwatch_outbox_total 3
# TYPE ccwatch_delivery_milliseconds histogram
ccwatch_delivery_milliseconds_bucket{le="+Inf"} 1
ccwatch_delivery_milliseconds_sum 1
ccwatch_delivery_milliseconds_count 1
# TYPE ccwatch_queue_age gauge
ccwatch_queue_age 5
# TYPE ccwatch_loss_ratio gauge
ccwatch_loss_ratio{component="acd"} 23
# TYPE ccwatch_last_run_timestamp gauge
ccwatch_last_run_timestamp 1.7e9
"""
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    assert problems(families["ccwatch_events"], {"0f3a9c1e"}) == [
        "incident ids as label values: ccwatch_events_total{'incident': '0f3a9c1e'}",
        "label names outside the bounded set: ['incident']",
    ]
    assert problems(families["ccwatch_outbox_total"], set()) == [
        "a gauge named _total (only counters are)"
    ]
    assert problems(families["ccwatch_delivery_milliseconds"], set()) == [
        "histogram without a base unit suffix (_seconds, _bytes)",
        "not in base units (seconds, bytes, ratio)",
    ]
    assert problems(families["ccwatch_queue_age"], set()) == [
        "a time that does not end in _seconds"
    ]
    assert problems(families["ccwatch_loss_ratio"], set()) == ["a ratio outside 0..1: [23]"]
    assert problems(families["ccwatch_last_run_timestamp"], set()) == [
        "a point in time that does not end in _timestamp_seconds"
    ]
