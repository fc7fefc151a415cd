"""Retention against a real PostgreSQL: each test gets its own database (``pg_database``)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ccwatch.cli import cli
from ccwatch.config import Config, validate_data
from ccwatch.incidents.external import RecordingIncidents
from ccwatch.retention.config import RetentionConfig
from ccwatch.retention.job import RetentionJob
from ccwatch.retention.report import DatabaseReport

# Inside the default test window (01:00-05:00 UTC); keep_days 90 + grace 1.
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=91)


def retention_config(
    dsn: str, tables: list[dict[str, Any]] | None = None, **extra: Any
) -> RetentionConfig:
    batch = {"pause": "0", "initial_size": 50, "min_size": 10, "max_size": 500}
    batch.update(extra.pop("batch", {}))
    data: dict[str, Any] = {
        "batch": batch,
        "databases": [
            {
                "name": "ameyodb",
                "dsn": dsn,
                "keep_days": 90,
                "tables": tables or [{"table": "call_history", "column": "created_at"}],
            }
        ],
        **extra,
    }
    config: Config = validate_data(Config, {"site": "blr1", "retention": data}, "test")
    return config.retention


def run_once(
    config: RetentionConfig, clock: Callable[[], datetime] = lambda: NOW, **kwargs: Any
) -> DatabaseReport:
    job = RetentionJob(config, clock=clock)
    return asyncio.run(job.run(**kwargs)).databases[0]


@pytest.fixture
def db(pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE call_history (
                id bigserial PRIMARY KEY,
                created_at timestamptz NOT NULL,
                agent text
            );
            CREATE INDEX call_history_created_at ON call_history (created_at);
            """
        )
        yield conn


def insert_rows(conn: psycopg.Connection[Any], stamps: list[datetime], agent: str = "a") -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO call_history (created_at, agent) VALUES (%s, %s)",
            [(stamp, agent) for stamp in stamps],
        )


def spread(start: datetime, end: datetime, count: int) -> list[datetime]:
    step = (end - start) / count
    return [start + step * i for i in range(count)]


def stamps_left(conn: psycopg.Connection[Any]) -> list[datetime]:
    return [row[0] for row in conn.execute("SELECT created_at FROM call_history ORDER BY 1")]


# --- what is kept ------------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    offsets=st.lists(
        st.one_of(
            st.just(0),
            st.integers(min_value=-3 * 86_400_000_000, max_value=3 * 86_400_000_000),
            st.integers(min_value=-3, max_value=3),
        ),
        max_size=60,
    ),
    batch_size=st.integers(min_value=1, max_value=7),
)
def test_rows_at_or_after_the_cutoff_are_kept(
    db: psycopg.Connection[Any], pg_database: str, offsets: list[int], batch_size: int
) -> None:
    db.execute("TRUNCATE call_history")
    stamps = [CUTOFF + timedelta(microseconds=offset) for offset in offsets]
    insert_rows(db, stamps)
    config = retention_config(
        pg_database, batch={"initial_size": batch_size, "min_size": 1, "max_size": batch_size}
    )
    report = run_once(config)
    assert report.outcome == "ok", report.error
    assert stamps_left(db) == sorted(s for s in stamps if s >= CUTOFF)
    assert report.rows_deleted == sum(1 for s in stamps if s < CUTOFF)


def test_dry_run_counts_and_deletes_nothing_cli_json(
    db: psycopg.Connection[Any], pg_database: str, tmp_path: Path
) -> None:
    # The CLI reads the real clock; rows sit 6 h away from any cutoff it may compute.
    now = datetime.now(UTC)
    insert_rows(db, spread(now - timedelta(days=200, hours=6), now, 400))
    expired = sum(1 for s in stamps_left(db) if s < now - timedelta(days=91))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "site": "blr1",
                "retention": {
                    "databases": [
                        {
                            "name": "ameyodb",
                            "dsn": pg_database,
                            "keep_days": 90,
                            "tables": [{"table": "call_history", "column": "created_at"}],
                        }
                    ]
                },
            }
        )
    )
    runner = CliRunner()
    result = runner.invoke(
        cli, ["-c", str(config_path), "retention", "run", "--dry-run", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["databases"][0]
    assert report["dry_run"] is True and report["outcome"] == "ok"
    assert report["tables"][0]["rows_deleted"] == expired > 0
    assert len(stamps_left(db)) == 400

    text = runner.invoke(cli, ["-c", str(config_path), "retention", "run", "--dry-run"])
    assert text.exit_code == 0 and f"would delete {expired} rows" in text.output

    unknown = runner.invoke(cli, ["-c", str(config_path), "retention", "run", "--database", "x"])
    assert unknown.exit_code == 2 and "no retention database named 'x'" in unknown.output

    real = runner.invoke(
        cli, ["-c", str(config_path), "retention", "run", "--ignore-window", "--format", "json"]
    )
    assert real.exit_code == 0, real.output
    assert json.loads(real.output)["databases"][0]["rows_deleted"] == expired
    assert len(stamps_left(db)) == 400 - expired


# --- errors ------------------------------------------------------------------------------


def test_missing_table_or_column_is_a_clear_error_and_a_minor_incident(
    db: psycopg.Connection[Any], pg_database: str
) -> None:
    insert_rows(db, [NOW - timedelta(days=100)])
    registry = CollectorRegistry()
    incidents = RecordingIncidents()

    def job(tables: list[dict[str, Any]]) -> DatabaseReport:
        config = retention_config(pg_database, tables)
        runner = RetentionJob(config, registry=registry, incidents=incidents, clock=lambda: NOW)
        return asyncio.run(runner.run()).databases[0]

    missing_table = job(
        [
            {"table": "call_history", "column": "created_at"},
            {"table": "public.cdr", "column": "ts"},
        ]
    )
    assert missing_table.outcome == "failed"
    assert missing_table.error == "ameyodb: table public.cdr does not exist (looked in public)"
    assert len(stamps_left(db)) == 1, "nothing is deleted when one table is wrong"
    assert incidents.open[("retention:ameyodb", "retention")]["severity"].label == "minor"

    missing_column = job([{"table": "call_history", "column": "started_at"}])
    assert missing_column.error is not None
    assert "table call_history: column 'started_at' does not exist" in missing_column.error
    assert "created_at" in missing_column.error  # lists the columns there are

    unindexed = job([{"table": "call_history", "column": "created_at", "batch_key": "agent"}])
    assert unindexed.error is not None and "batch_key 'agent' must be NOT NULL" in unindexed.error

    fixed = job([{"table": "call_history", "column": "created_at"}])
    assert fixed.outcome == "ok" and fixed.rows_deleted == 1
    assert incidents.open == {}, "the next successful run clears the incident"
    assert (
        registry.get_sample_value(
            "ccwatch_retention_rows_deleted_total", {"database": "ameyodb", "table": "call_history"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "ccwatch_retention_runs_total", {"database": "ameyodb", "outcome": "failed"}
        )
        == 3
    )
    assert (
        registry.get_sample_value(
            "ccwatch_retention_last_success_timestamp_seconds", {"database": "ameyodb"}
        )
        == NOW.timestamp()
    )
    assert (registry.get_sample_value("ccwatch_retention_batch_seconds_count") or 0) >= 1


def test_unreachable_database_fails_the_run_without_raising(pg_database: str) -> None:
    dsn = pg_database.replace("dbname=", "dbname=does_not_exist_")
    report = run_once(retention_config(dsn))
    assert report.outcome == "failed"
    assert report.error is not None and report.error.startswith("ameyodb: cannot connect")


# --- window, batching, concurrency -------------------------------------------------------


def test_window_stops_a_run_mid_way_and_the_next_run_finishes(
    db: psycopg.Connection[Any], pg_database: str
) -> None:
    insert_rows(db, spread(NOW - timedelta(days=120), NOW - timedelta(days=92), 600))
    insert_rows(db, spread(NOW - timedelta(days=30), NOW, 100))
    config = retention_config(
        pg_database,
        window={"start": "01:00", "end": "05:00", "timezone": "UTC"},
        batch={"initial_size": 50, "min_size": 50, "max_size": 50},
    )
    calls = 0

    def closing_clock() -> datetime:
        # The window closes after a few batches have started.
        nonlocal calls
        calls += 1
        return NOW if calls <= 5 else NOW.replace(hour=5, minute=1)

    first = run_once(config, closing_clock)
    assert first.outcome == "cut_short" and first.cut_short
    assert 0 < first.rows_deleted < 600
    assert len(stamps_left(db)) == 700 - first.rows_deleted
    assert not first.tables[0].vacuumed

    outside = run_once(config, lambda: NOW.replace(hour=12))
    assert outside.outcome == "cut_short" and outside.rows_deleted == 0

    second = run_once(config)
    assert second.outcome == "ok"
    assert first.rows_deleted + second.rows_deleted == 600
    assert min(stamps_left(db)) >= CUTOFF and len(stamps_left(db)) == 100


def test_concurrent_writer_keeps_inserting_during_cleanup(
    db: psycopg.Connection[Any], pg_database: str
) -> None:
    db.execute(
        """
        INSERT INTO call_history (created_at, agent)
        SELECT %s::timestamptz - make_interval(secs => g), 'old'
        FROM generate_series(1, 20000) g
        """,
        (CUTOFF,),
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    inserted = 0

    def writer() -> None:
        nonlocal inserted
        try:
            with psycopg.connect(pg_database, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute(
                        "INSERT INTO call_history (created_at, agent) VALUES (now(), 'live')"
                    )
                    inserted += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = run_once(retention_config(pg_database, batch={"max_size": 1000}))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert errors == []
    assert report.outcome == "ok" and report.rows_deleted == 20000
    assert inserted > 0
    live = db.execute("SELECT count(*) FROM call_history WHERE agent = 'live'").fetchone()
    assert live is not None and live[0] == inserted
    assert db.execute("SELECT count(*) FROM call_history WHERE agent = 'old'").fetchone() == (0,)


def test_a_held_lock_makes_batches_time_out_and_retry_not_hang(
    db: psycopg.Connection[Any], pg_database: str
) -> None:
    insert_rows(db, spread(NOW - timedelta(days=120), NOW - timedelta(days=95), 100))
    tight = {"lock_timeout": "100ms", "max_retries": 2}
    incidents = RecordingIncidents()

    with psycopg.connect(pg_database) as holder:
        holder.execute("LOCK TABLE call_history IN ACCESS EXCLUSIVE MODE")
        config = retention_config(pg_database, batch=tight)
        job = RetentionJob(config, incidents=incidents, clock=lambda: NOW)
        held = asyncio.run(job.run()).databases[0]
        assert held.outcome == "failed"
        assert held.error is not None and "gave up after 3 attempts (lock_timeout" in held.error
        assert held.tables[0].retries == 3
        assert ("retention:ameyodb", "retention") in incidents.open

        # Released while the cleanup is retrying: the batch goes through.
        release = threading.Timer(0.4, holder.rollback)
        release.start()
        patient = retention_config(pg_database, batch={**tight, "max_retries": 10})
        retried = run_once(patient)
        release.join()
    assert retried.outcome == "ok", retried.error
    assert retried.tables[0].retries >= 1 and retried.rows_deleted == 100
    assert stamps_left(db) == []


def test_schema_qualified_names_and_batch_key(
    db: psycopg.Connection[Any], pg_database: str
) -> None:
    db.execute(
        """
        CREATE SCHEMA "Reports";
        CREATE TABLE "Reports"."Daily Totals" (id bigint PRIMARY KEY, "At" timestamp NOT NULL);
        """
    )
    db.execute(
        """
        INSERT INTO "Reports"."Daily Totals"
        SELECT g, %s::timestamp + make_interval(hours => g - 100) FROM generate_series(1, 200) g;
        """,
        (CUTOFF.replace(tzinfo=None),),
    )
    tables = [{"table": "Reports.Daily Totals", "column": "At", "batch_key": "id"}]
    batch = {"initial_size": 10, "max_size": 10}
    report = run_once(retention_config(pg_database, tables, batch=batch))
    assert report.outcome == "ok", report.error
    assert report.rows_deleted == 99 and report.batches >= 10
    left = db.execute('SELECT min(id), count(*) FROM "Reports"."Daily Totals"').fetchone()
    assert left == (100, 101), "the row exactly at the cutoff (id 100) is kept"


# --- archive -----------------------------------------------------------------------------


def test_archive_holds_exactly_the_deleted_rows_per_day(
    db: psycopg.Connection[Any], pg_database: str, tmp_path: Path
) -> None:
    old = spread(CUTOFF - timedelta(days=3), CUTOFF, 150)
    insert_rows(db, old, agent='tricky, "quoted"\nagent')
    db.execute("UPDATE call_history SET agent = NULL WHERE id % 10 = 0")
    insert_rows(db, [CUTOFF, NOW])
    archive = tmp_path / "archive"
    config = retention_config(
        pg_database, archive_dir=str(archive), batch={"initial_size": 40, "max_size": 40}
    )
    report = run_once(config)
    assert report.outcome == "ok", report.error
    assert report.rows_deleted == report.tables[0].rows_archived == 150

    files = sorted((archive / "ameyodb" / "call_history").glob("*.csv.gz"))
    assert [f.name for f in files] == [
        f"{(CUTOFF - timedelta(days=d)).date()}.csv.gz" for d in (3, 2, 1, 0)
    ]
    archived: list[list[str]] = []
    for path in files:
        rows = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
        assert rows[0] == ["id", "created_at", "agent"]
        day = path.name.removesuffix(".csv.gz")
        assert all(row[1].startswith(day) for row in rows[1:])
        archived.extend(rows[1:])
    assert len(archived) == 150
    assert sorted(int(row[0]) for row in archived) == list(range(1, 151))
    assert sum(1 for row in archived if row[2] == "") == 15  # NULLs
    assert sum(1 for row in archived if row[2] == 'tricky, "quoted"\nagent') == 135
    assert [s for s in stamps_left(db)] == [CUTOFF, NOW]


def test_archive_count_mismatch_rolls_the_batch_and_the_files_back(
    db: psycopg.Connection[Any], pg_database: str, tmp_path: Path
) -> None:
    insert_rows(db, spread(CUTOFF - timedelta(days=2), CUTOFF, 20))
    # A trigger that silently skips some deletes: the archive would hold rows still there.
    db.execute(
        """
        CREATE FUNCTION keep_even() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF OLD.id % 2 = 0 THEN RETURN NULL; END IF; RETURN OLD; END $$;
        CREATE TRIGGER keep_even BEFORE DELETE ON call_history
            FOR EACH ROW EXECUTE FUNCTION keep_even();
        """
    )
    archive = tmp_path / "archive"
    report = run_once(retention_config(pg_database, archive_dir=str(archive)))
    assert report.outcome == "failed"
    assert report.error is not None and "archived 20 rows but the delete matched 10" in report.error
    assert len(stamps_left(db)) == 20, "the batch was rolled back"
    assert list(archive.rglob("*.csv.gz")) == [], "and so were the archive files"


# --- partitions --------------------------------------------------------------------------


@pytest.mark.parametrize("with_default", [False, True])
def test_old_partitions_are_dropped_and_the_cutoff_partition_row_deleted(
    pg_database: str, with_default: bool
) -> None:
    month = timedelta(days=30)
    start = CUTOFF - 3 * month - timedelta(days=10)  # events_3 holds the cutoff
    bounds = [start + month * i for i in range(6)]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)"
        )
        for index, (low, high) in enumerate(itertools.pairwise(bounds)):
            conn.execute(
                f"CREATE TABLE events_{index} PARTITION OF events FOR VALUES FROM "
                f"('{low.isoformat()}') TO ('{high.isoformat()}')"
            )
        if with_default:
            conn.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
        conn.execute("CREATE INDEX ON events (at)")
        conn.execute(
            "INSERT INTO events SELECT g, %s::timestamptz + make_interval(hours => g) "
            "FROM generate_series(0, 24 * 140) g",
            (start,),
        )
        if with_default:
            conn.execute("INSERT INTO events VALUES (-1, %s), (-2, %s)", (start - month, NOW))
        # Rows exactly at, and just before, the cutoff in the partition that holds it.
        conn.execute(
            "INSERT INTO events VALUES (-3, %s), (-4, %s)",
            (CUTOFF, CUTOFF - timedelta(microseconds=1)),
        )
        total_before = conn.execute("SELECT count(*) FROM events").fetchone()

        tables = [{"table": "events", "column": "at"}]
        config = retention_config(pg_database, tables)
        dry = run_once(config, dry_run=True)
        assert dry.tables[0].partitions_dropped == [
            "public.events_0",
            "public.events_1",
            "public.events_2",
        ]
        registry = CollectorRegistry()
        report = asyncio.run(
            RetentionJob(config, registry=registry, clock=lambda: NOW).run()
        ).databases[0]
        assert report.outcome == "ok", report.error
        assert report.tables[0].partitions_dropped == dry.tables[0].partitions_dropped
        assert report.tables[0].vacuumed
        # 10 days of hourly rows and id -4, plus id -1 in the DEFAULT partition if any
        assert report.rows_deleted == 24 * 10 + 1 + int(with_default)
        assert (
            registry.get_sample_value(
                "ccwatch_retention_partitions_dropped_total",
                {"database": "ameyodb", "table": "events"},
            )
            == 3
        )
        left = {
            row[0]
            for row in conn.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE 'events%%' AND relkind IN ('r', 'p')"
            )
        }
        assert "events_0" not in left and "events_3" in left
        assert conn.execute("SELECT count(*) FROM events WHERE at < %s", (CUTOFF,)).fetchone() == (
            0,
        )
        at_cutoff = conn.execute("SELECT id FROM events WHERE at = %s ORDER BY id", (CUTOFF,))
        assert at_cutoff.fetchall() == [(-3,), (2400,)]
        expected_left = conn.execute("SELECT count(*) FROM events").fetchone()
        assert total_before is not None and expected_left is not None
        assert (
            report.rows_deleted + dry.tables[0].partition_rows + expected_left[0] == total_before[0]
        )
