"""Retention config: the safety floor, DSN rules, window and schedule are checked at load."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccwatch.config import Config, load_config, validate_data
from ccwatch.errors import ConfigError
from ccwatch.retention.config import RetentionConfig
from ccwatch.retention.job import retention_scheduled_job

REPO = Path(__file__).resolve().parent.parent


def database(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "ameyodb",
        "dsn": "host=127.0.0.1 dbname=ameyodb user=ccwatch",
        "keep_days": 90,
        "tables": [{"table": "call_history", "column": "created_at"}],
    }
    entry.update(overrides)
    return entry


def problems(retention: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_data(Config, {"site": "blr1", "retention": retention}, "config.yaml")
    return caught.value.problems


def load(retention: dict[str, Any]) -> RetentionConfig:
    config: Config = validate_data(Config, {"site": "blr1", "retention": retention}, "x")
    return config.retention


def test_keep_days_below_the_floor_is_refused_with_its_key_path() -> None:
    lines = problems({"databases": [database(), database(name="reportsdb", keep_days=9)]})
    assert len(lines) == 1
    assert lines[0].startswith("retention -> databases -> 2 -> keep_days: keep_days 9 is below")
    assert "min_keep_days (30)" in lines[0]


def test_the_floor_is_explicit_and_defaults_to_30_days() -> None:
    assert load({"databases": [database(keep_days=30)]}).databases[0].min_keep_days == 30
    lowered = load({"databases": [database(keep_days=7, min_keep_days=7)]})
    assert lowered.databases[0].keep_days == 7


def test_inline_dsn_with_a_password_is_refused_without_echoing_it() -> None:
    for dsn in (
        "host=db user=ccwatch password=hunter2secret dbname=ameyodb",
        "postgresql://ccwatch:hunter2secret@db/ameyodb",
    ):
        lines = problems({"databases": [database(dsn=dsn)]})
        assert lines[0].startswith("retention -> databases -> 1 -> dsn: an inline dsn must not")
        assert "hunter2secret" not in "\n".join(lines)


def test_dsn_from_env_must_be_set_unless_the_entry_is_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CCWATCH_TEST_RETENTION_DSN", raising=False)
    entry = database(dsn=None, dsn_env="CCWATCH_TEST_RETENTION_DSN")
    lines = problems({"databases": [entry]})
    assert "retention -> databases -> 1 -> dsn_env: environment variable" in lines[0]
    assert load({"databases": [{**entry, "enabled": False}]}).enabled_databases == []
    monkeypatch.setenv("CCWATCH_TEST_RETENTION_DSN", "host=127.0.0.1 dbname=x")
    assert load({"databases": [entry]}).enabled_databases[0].dsn_env == entry["dsn_env"]


def test_exactly_one_dsn_source() -> None:
    lines = problems({"databases": [database(dsn=None)]})
    assert "give exactly one of dsn, dsn_env, dsn_file (got none)" in lines[0]


@pytest.mark.parametrize(
    ("retention", "expected"),
    [
        (
            {"window": {"start": 1320, "end": "05:00"}, "databases": []},
            "retention -> window -> start: Value error, write the time of day in quotes",
        ),
        (
            {"schedule": {"cron": "61 1 * * *"}},
            "retention -> schedule -> cron: invalid cron expression '61 1 * * *'",
        ),
        (
            {"schedule": {"timezone": "Mars/Olympus"}},
            "retention -> schedule -> timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            {"databases": [database(tables=[{"table": "a.b.c", "column": "ts"}])]},
            "retention -> databases -> 1 -> tables -> 1 -> table: 'a.b.c'",
        ),
        (
            {"batch": {"min_size": 500, "initial_size": 100}},
            "retention -> batch: batch sizes must satisfy",
        ),
        (
            {"databases": [database(), database()]},
            "retention: database names must be unique; ameyodb repeats",
        ),
        (
            {"databases": [database(keep_days=90, grace_day=1)]},
            "retention -> databases -> 1 -> grace_day: unknown key; did you mean 'grace_days'?",
        ),
    ],
)
def test_invalid_settings_name_their_key(retention: dict[str, Any], expected: str) -> None:
    lines = problems(retention)
    assert any(
        line.replace("Value error, ", "").startswith(expected.replace("Value error, ", ""))
        for line in lines
    ), lines


def test_window_across_midnight() -> None:
    window = load({"window": {"start": "22:00", "end": "05:00", "timezone": "Asia/Kolkata"}})
    assert window.window is not None
    ist_23h = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)  # 23:00 IST
    ist_05h = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 05:00 IST: closed (end excluded)
    ist_12h = datetime(2026, 11, 23, 6, 30, tzinfo=UTC)
    assert window.window.is_open(ist_23h)
    assert not window.window.is_open(ist_05h)
    assert not window.window.is_open(ist_12h)


def test_cutoff_is_keep_plus_grace_days() -> None:
    entry = load({"databases": [database(keep_days=90, grace_days=1)]}).databases[0]
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert (now - entry.cutoff(now)).days == 91


def test_shipped_config_validates_without_env_and_schedules_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CCWATCH_AMEYODB_DSN", "CCWATCH_REPORTSDB_DSN"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(REPO / "config.yaml")
    by_name = {d.name: d for d in config.retention.databases}
    assert by_name["ameyodb"].keep_days == 90 and by_name["reportsdb"].keep_days == 180
    assert all(d.grace_days == 1 for d in by_name.values())
    assert retention_scheduled_job(config.retention) is None


def test_scheduled_job_follows_the_schedule() -> None:
    config = load(
        {
            "schedule": {"cron": "15 2 * * *", "timezone": "Asia/Kolkata"},
            "databases": [database()],
        }
    )
    job = retention_scheduled_job(config)
    assert job is not None
    assert job.name == "retention"
    assert (job.schedule.cron, str(job.schedule.timezone)) == ("15 2 * * *", "Asia/Kolkata")


def test_documented_example_in_yaml_form_loads() -> None:
    text = """
    schedule: {cron: "30 1 * * *", timezone: Asia/Kolkata}
    window: {start: "01:00", end: "05:00", timezone: Asia/Kolkata}
    batch: {target_duration: 200ms, pause: 20ms, lock_timeout: 500ms, statement_timeout: 10s}
    databases:
      - {name: ameyodb, dsn: "host=127.0.0.1 dbname=ameyodb", keep_days: 90,
         tables: [{table: public.call_history, column: created_at, batch_key: id}]}
    """
    config = load(yaml.safe_load(text))
    table = config.databases[0].tables[0]
    assert (table.schema_name, table.table_name, table.batch_key) == (
        "public",
        "call_history",
        "id",
    )
    assert config.batch.target_duration.total_seconds() == pytest.approx(0.2)
