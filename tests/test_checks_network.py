"""Checks that talk to real services: a TCP listener, a TLS server with a certificate
made here, Mosquitto, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest

from ccwatch.checklists.checks.certificate import first_pem_certificate, not_after
from ccwatch.checklists.result import Status
from tests.conftest import Mosquitto, free_port
from tests.test_checklist_support import config, env, run

# --- tcp_port --------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_tcp_port_open_and_closed(listener: int) -> None:
    opened = run("tcp_port", port=listener)
    assert opened.status is Status.OK
    assert opened.value.startswith(f"127.0.0.1:{listener}: connected in")
    closed = run("tcp_port", port=free_port(), service="the SIP server")
    assert closed.status is Status.FAIL
    assert "Connection refused" in closed.value
    assert "start the SIP server" in closed.hint


# --- certificate -----------------------------------------------------------------------


def make_certificate(folder: Path, days: int) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / f"cert-{days}.pem", folder / f"key-{days}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=console.test",
            "-days",
            str(days),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def openssl_enddate(cert: Path) -> datetime:
    out = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(cert)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    text = out.strip().removeprefix("notAfter=").replace("  ", " ")
    return datetime.strptime(text, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def test_not_after_agrees_with_openssl(tmp_path: Path) -> None:
    for days in (5, 400, 20000):  # 20000 days: past 2050, GeneralizedTime
        cert, _ = make_certificate(tmp_path, days)
        assert not_after(first_pem_certificate(cert.read_bytes())) == openssl_enddate(cert)


def test_certificate_file_thresholds(tmp_path: Path) -> None:
    long_lived, _ = make_certificate(tmp_path, 400)
    short, _ = make_certificate(tmp_path, 5)
    ok = run("certificate", file=str(long_lived))
    assert ok.status is Status.OK
    assert "(400 days left)" in ok.value or "(399 days left)" in ok.value
    expiring = run("certificate", file=str(short))
    assert expiring.status is Status.FAIL
    assert "renew" in expiring.hint
    garbage = tmp_path / "not-a-cert.pem"
    garbage.write_text("hello")
    broken = run("certificate", file=str(garbage))
    assert broken.status is Status.FAIL
    assert "no PEM certificate" in broken.value


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    cert, key = make_certificate(tmp_path, 20)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_certificate_served_by_host_port(tls_server: int) -> None:
    outcome = run("certificate", host="127.0.0.1", port=tls_server, server_name="console.test")
    assert outcome.status is Status.WARN  # 20 days left: below the 30-day warning
    assert outcome.value.startswith(f"127.0.0.1:{tls_server} expires")
    refused = run("certificate", host="127.0.0.1", port=free_port())
    assert refused.status is Status.FAIL
    assert "Connection refused" in refused.value


# --- mqtt_freshness --------------------------------------------------------------------


def publish_retained(broker: Mosquitto, messages: dict[str, bytes]) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic, payload in messages.items():
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_mqtt_freshness_from_retained_messages(mosquitto: Mosquitto) -> None:
    now = time.time()
    publish_retained(
        mosquitto,
        {
            "cc/blr1/acd/metrics": json.dumps({"ts": now - 30, "agents_logged_in": 78}).encode(),
            "cc/blr1/ivr/metrics": json.dumps({"ts": now - 3600, "up": True}).encode(),
            "cc/blr1/dialer/metrics": json.dumps(
                {"name": "cc", "fields": {"up": 1}, "timestamp": int(now - 10)}
            ).encode(),
            "cc/blr1/voice_logger/status": b"offline",
        },
    )
    cfg = config(mqtt={"host": mosquitto.host, "port": mosquitto.port})
    fresh = run("mqtt_freshness", env(cfg), components=["acd", "dialer"], listen="5s")
    assert fresh.status is Status.OK  # both retained and fresh: no need to wait 5 s
    stale = run("mqtt_freshness", env(cfg), listen="200ms")
    assert stale.status is Status.FAIL
    assert stale.value == "3 of 5 components stale: ivr, reports, voice_logger"
    assert "ivr: last published 60 min ago" in stale.detail
    assert "voice_logger: reports offline" in stale.detail
    assert "reports: nothing heard" in stale.detail


def test_mqtt_freshness_counts_live_messages(mosquitto: Mosquitto) -> None:
    cfg = config(mqtt={"host": mosquitto.host, "port": mosquitto.port})

    async def scenario() -> Status:
        from ccwatch.checklists.checks import REGISTRY

        check = REGISTRY["mqtt_freshness"]
        task = asyncio.create_task(
            check.run(
                check.params.model_validate({"components": ["acd"], "listen": "10s"}), env(cfg)
            )
        )
        await asyncio.sleep(0.5)
        await asyncio.to_thread(
            publish_retained, mosquitto, {"cc/blr1/acd/metrics": b'{"agents_logged_in": 3}'}
        )
        return (await task).status

    assert asyncio.run(scenario()) is Status.OK


def test_mqtt_freshness_broker_down_is_a_failure() -> None:
    cfg = config(mqtt={"host": "127.0.0.1", "port": free_port()})
    outcome = run("mqtt_freshness", env(cfg))
    assert outcome.status is Status.FAIL
    assert "unreachable" in outcome.value


# --- postgres and retention ------------------------------------------------------------


def test_postgres_healthy_and_long_transaction(pg_database: str) -> None:
    healthy = run("postgres", dsn=pg_database)
    assert healthy.status is Status.OK, healthy
    assert "SELECT 1 in" in healthy.value and "size" in healthy.value
    with psycopg.connect(pg_database) as blocker:
        blocker.execute("SELECT 1")  # opens a transaction and keeps it open
        time.sleep(1.1)
        stuck = run("postgres", dsn=pg_database, max_transaction_age="1s")
    assert stuck.status is Status.FAIL
    assert "pg_terminate_backend" in stuck.hint


def test_postgres_replication_lag_without_a_replica_fails(pg_database: str) -> None:
    outcome = run("postgres", dsn=pg_database, max_replication_lag="30s")
    assert outcome.status is Status.FAIL
    assert "no replica connected" in outcome.value


def test_postgres_unreachable_and_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    down = run("postgres", dsn=f"host=127.0.0.1 port={port} user=postgres dbname=postgres")
    assert down.status is Status.FAIL
    assert down.value.startswith("cannot connect")
    monkeypatch.setenv("CCWATCH_TEST_PG_PASSWORD", "s3cret-value")
    with_password = run(
        "postgres",
        dsn="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        password_env="CCWATCH_TEST_PG_PASSWORD",
    )
    assert with_password.status is not Status.ERROR
    assert "s3cret" not in with_password.value + with_password.hint


def _history_db(dsn: str, ages_days: list[int]) -> None:
    with psycopg.connect(dsn) as connection:
        connection.execute("CREATE TABLE call_history (id serial, created_at timestamptz)")
        for age in ages_days:
            connection.execute(
                "INSERT INTO call_history (created_at) VALUES (now() - make_interval(days => %s))",
                (age,),
            )


def test_retention_explicit_tables(pg_database: str) -> None:
    _history_db(pg_database, [1, 30, 89, 95, 120])
    tables = [{"table": "call_history", "column": "created_at"}]
    outcome = run("retention", dsn=pg_database, keep_days=90, grace_days=1, tables=tables)
    assert outcome.status is Status.FAIL
    assert outcome.value == "call_history: 2 rows older than the cutoff"
    assert "ccwatch retention run" in outcome.hint
    clean = run("retention", dsn=pg_database, keep_days=180, tables=tables)
    assert (clean.status, clean.value) == (Status.OK, "0 rows older than the cutoff in 1 table(s)")
    typo = run(
        "retention",
        dsn=pg_database,
        keep_days=90,
        tables=[{"table": "call_histroy", "column": "created_at"}],
    )
    assert (typo.status, typo.value) == (Status.FAIL, "not found: call_histroy")


def test_retention_reuses_the_retention_config(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history_db(pg_database, [10, 200])
    monkeypatch.setenv("CCWATCH_TEST_AMEYODB_DSN", pg_database)
    cfg = config(
        retention={
            "databases": [
                {
                    "name": "ameyodb",
                    "dsn_env": "CCWATCH_TEST_AMEYODB_DSN",
                    "keep_days": 90,
                    "tables": [{"table": "public.call_history", "column": "created_at"}],
                }
            ]
        }
    )
    outcome = run("retention", env(cfg), database="ameyodb")
    assert outcome.status is Status.FAIL
    assert outcome.value.startswith("public.call_history: 1 rows")
    skipped = run("retention", env(cfg), database="ameyo_db")
    assert skipped.status is Status.SKIPPED
    assert "did you mean 'ameyodb'?" in skipped.value


def test_retention_allows_rows_that_expired_since_the_last_cleanup(
    pg_database: str, tmp_path: Path
) -> None:
    """After a good nightly cleanup rows keep expiring; the morning check must not fail."""
    with psycopg.connect(pg_database) as connection:
        connection.execute("CREATE TABLE call_history (id serial, created_at timestamptz)")
        connection.execute(
            "INSERT INTO call_history (created_at) VALUES (now() - interval '91 days 6 hours')"
        )
    tables = [{"table": "call_history", "column": "created_at"}]
    morning = run("retention", dsn=pg_database, keep_days=90, grace_days=1, tables=tables)
    assert morning.status is Status.OK, morning
    strict = run("retention", dsn=pg_database, keep_days=90, tables=tables, slack="0")
    assert strict.status is Status.FAIL


def test_retention_reads_the_dsn_file_of_the_retention_config(
    pg_database: str, tmp_path: Path
) -> None:
    _history_db(pg_database, [200])
    dsn_file = tmp_path / "ameyodb.dsn"
    dsn_file.write_text(pg_database + "\n")
    cfg = config(
        retention={
            "databases": [
                {
                    "name": "ameyodb",
                    "dsn_file": str(dsn_file),
                    "keep_days": 90,
                    "tables": [{"table": "call_history", "column": "created_at"}],
                }
            ]
        }
    )
    outcome = run("retention", env(cfg), database="ameyodb")
    assert outcome.status is Status.FAIL
    assert outcome.value.startswith("call_history: 1 rows")
