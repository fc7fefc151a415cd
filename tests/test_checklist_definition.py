"""Checklist files: validation with key paths, `check-config`, and the shipped daily.yaml."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ccwatch.checklists.checks import REGISTRY, CheckEnv
from ccwatch.checklists.definition import load_checklist_file
from ccwatch.checklists.result import Status
from ccwatch.checklists.runner import run_checklist
from ccwatch.config import load_config
from ccwatch.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.test_checklist_support import write_checklist

BROKEN = """
schedule: {cron: "61 6 * * *", timezone: Asia/Bangalore}
recipients: [it-team]
checks:
  - id: disk_root
    type: disk
    params: {path: /, fail_free_percnt: 10}
  - id: memory
    type: memroy
  - {id: sip, type: tcp_port, params: {port: 70000}}
  - {id: pg, type: postgres, params: {dsn: "host=db password=hunter2"}}
  - {id: cert, type: certificate, params: {}}
  - {id: errors, type: log_errors, params: {path: /var/log/x.log, pattern: "(unclosed"}}
  - {id: slow, type: disk, timeout: 5 minutes}
  - {id: cmd, type: command, params: {argv: []}}
  - {id: acd, type: process}
"""


def test_every_problem_is_named_by_its_key_path(tmp_path: Path) -> None:
    path = write_checklist(tmp_path, "daily", BROKEN)
    with pytest.raises(ConfigError) as caught:
        load_checklist_file(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == [
        "schedule -> cron: invalid cron expression '61 6 * * *': Error validating expression "
        "'61': the last value (61) is higher than the maximum value (59) (5 fields: minute hour "
        "day-of-month month day-of-week, e.g. '30 6 * * *')",
        "schedule -> timezone: unknown time zone 'Asia/Bangalore'; use an IANA name such as "
        "'Asia/Kolkata' or 'UTC'",
        "recipients -> 1: 'it-team' is not an e-mail address (name@example.com)",
        "checks -> 1 -> params -> fail_free_percnt: unknown key; did you mean 'fail_free_percent'?",
        "checks -> 2: unknown check type 'memroy'; did you mean 'memory'?",
        "checks -> 3 -> params -> port: Input should be less than or equal to 65535",
        "checks -> 4 -> params -> dsn: the DSN carries a password; secrets are never written "
        "inline: use password_env or password_file",
        "checks -> 5 -> params: give either `file` (a PEM file) or `host` (with `port`)",
        "checks -> 6 -> params -> pattern: invalid regular expression: missing ), unterminated "
        "subpattern at position 0",
        "checks -> 7 -> timeout: invalid duration '5 minutes'; write a number and a unit (ms, s, "
        "m, h, d, w), e.g. '30s', '5m', '1h30m'",
        "checks -> 8 -> params -> argv: List should have at least 1 item after validation, not 0",
        "checks -> 9 -> params: required key is missing",
    ]


def test_duplicate_ids_and_yaml_syntax(tmp_path: Path) -> None:
    dup = write_checklist(
        tmp_path, "dup", "checks:\n  - {id: a, type: memory}\n  - {id: a, type: swap}\n"
    )
    with pytest.raises(ConfigError, match=r"checks -> 2 -> id: 'a' is already the id of check 1"):
        load_checklist_file(dup)
    bad = write_checklist(tmp_path, "bad", "checks:\n  - id: a\n   type: memory\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line 3"):
        load_checklist_file(bad)


def test_name_defaults_to_the_file_name_and_check_defaults(tmp_path: Path) -> None:
    path = write_checklist(tmp_path, "nightly", "checks:\n  - {id: mem, type: memory}\n")
    checklist = load_checklist_file(path)
    assert checklist.name == "nightly"
    check = checklist.checks[0]
    assert (check.severity, check.open_incident, check.timeout) == ("fail", False, None)
    assert check.params == REGISTRY["memory"].params()


def _config_with_checklists(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        write_checklist(tmp_path / "lists", name, text)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({"site": "blr1", "checklists": {"dir": "lists"}}))
    return config_path


def test_check_config_prints_checklist_errors_with_file_and_path(tmp_path: Path) -> None:
    config_path = _config_with_checklists(
        tmp_path,
        {"daily": "checks:\n  - {id: d, type: disk, params: {path: /, fail_free_percent: 120}}\n"},
    )
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(config_path), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{tmp_path / 'lists' / 'daily.yaml'}: checks -> 1 -> params -> fail_free_percent: "
        "Input should be less than or equal to 100"
    )


def test_problems_of_several_files_are_all_listed(tmp_path: Path) -> None:
    config_path = _config_with_checklists(
        tmp_path,
        {
            "a": "checks:\n  - {id: x, type: nope}\n",
            "b": "name: a\nchecks:\n  - {id: x, type: memory}\n",
            "c": "checks: []\n",
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert caught.value.source == str(tmp_path / "lists")
    assert caught.value.problems == [
        "a.yaml: checks -> 1: unknown check type 'nope'; one of: " + ", ".join(sorted(REGISTRY)),
        "c.yaml: checks: List should have at least 1 item after validation, not 0",
    ]


def test_duplicate_checklist_names_are_refused(tmp_path: Path) -> None:
    config_path = _config_with_checklists(
        tmp_path,
        {
            "a": "checks:\n  - {id: x, type: memory}\n",
            "b": "name: a\nchecks:\n  - {id: x, type: swap}\n",
        },
    )
    with pytest.raises(ConfigError, match="name: 'a' is also the name of"):
        load_config(config_path)


SHIPPED_CONFIG = REPO_ROOT / "config.yaml"


def test_shipped_daily_checklist_covers_every_check_type() -> None:
    config = load_config(SHIPPED_CONFIG)
    (daily,) = [c for c in config.checklists.definitions if c.name == "daily"]
    assert {check.type for check in daily.checks} == set(REGISTRY)
    assert daily.schedule is not None


def test_shipped_daily_checklist_runs_here_without_errors() -> None:
    """Checks may fail about this host, but none may be unable to run."""
    config = load_config(SHIPPED_CONFIG)
    (daily,) = [c for c in config.checklists.definitions if c.name == "daily"]
    run = asyncio.run(run_checklist(daily, CheckEnv(config=config.check_settings())))
    errors = [(r.id, r.value) for r in run.results if r.status is Status.ERROR]
    assert errors == []
    assert [r.id for r in run.results] == [c.id for c in daily.checks]
