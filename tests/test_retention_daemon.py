"""The daemon runs retention on its cron schedule; a broken database never stops it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

from ccwatch.compose import open_state
from tests.conftest import DaemonProcess, base_config, wait_until

REPO = Path(__file__).resolve().parent.parent


def test_daemon_starts_with_the_shipped_retention_section(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["retention"]
    env = {"CCWATCH_AMEYODB_DSN": "", "CCWATCH_REPORTSDB_DSN": ""}
    daemon = daemon_factory(base_config(tmp_path, retention=shipped), env=env)
    assert daemon.get("/healthz").status_code == 200
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_scheduled_run_cleans_one_database_and_reports_the_broken_one(
    tmp_path: Path, pg_database: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE call_history (id bigserial PRIMARY KEY, created_at timestamptz)")
        conn.execute("CREATE INDEX ON call_history (created_at)")
        conn.execute(
            "INSERT INTO call_history (created_at) VALUES (%s), (%s), (%s)",
            (now - timedelta(days=120), now - timedelta(days=95), now - timedelta(days=10)),
        )
    table = [{"table": "call_history", "column": "created_at"}]
    retention: dict[str, Any] = {
        "schedule": {"cron": "30 1 * * *", "timezone": "UTC"},
        "databases": [
            {"name": "ameyodb", "dsn": pg_database, "keep_days": 90, "tables": table},
            {
                "name": "reportsdb",
                "dsn": pg_database.replace("dbname=", "dbname=missing_"),
                "keep_days": 180,
                "tables": table,
            },
        ],
    }
    config = base_config(tmp_path, retention=retention)
    # The daemon was down at the last 01:30: it catches that run up as it starts.
    store = open_state(Path(config["state"]["path"]))
    store.run_sync(
        lambda c: c.execute(
            "INSERT INTO scheduler_runs (job, last_run_at) VALUES ('retention', ?)",
            ((now - timedelta(days=2)).timestamp(),),
        )
    )
    store.close()
    daemon = daemon_factory(config)

    def ran() -> str | None:
        text = daemon.get("/metrics").text
        return text if 'ccwatch_retention_runs_total{database="reportsdb"' in text else None

    metrics = wait_until(ran, timeout=30, interval=0.2)
    assert 'ccwatch_retention_runs_total{database="ameyodb",outcome="ok"} 1.0' in metrics
    assert 'ccwatch_retention_runs_total{database="reportsdb",outcome="failed"} 1.0' in metrics
    assert (
        'ccwatch_retention_rows_deleted_total{database="ameyodb",table="call_history"} 2.0'
        in metrics
    )
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM call_history").fetchone() == (1,)
    assert daemon.get("/healthz").status_code == 200
    incidents = daemon.get("/api/incidents").json()
    assert "retention:reportsdb" in str(incidents)
    assert "retention:ameyodb" not in str(incidents)
