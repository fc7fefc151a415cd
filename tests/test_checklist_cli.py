"""`ccwatch checklist run|list`: output and exit codes (0 ok, 1 a check failed, 2 config)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

from ccwatch.cli import cli
from tests.conftest import free_port
from tests.test_checklist_support import write_checklist

PASSING = (
    "checks:\n  - {id: cpu, type: cpu_load, params: {warn_per_cpu: null, fail_per_cpu: null}}\n"
)


def failing(port: int) -> str:
    return (
        "checks:\n"
        "  - {id: cpu, type: cpu_load, params: {warn_per_cpu: null, fail_per_cpu: null}}\n"
        f"  - {{id: sip, type: tcp_port, params: {{port: {port}}}}}\n"
    )


def ccwatch(tmp_path: Path, *args: str, extra: dict[str, object] | None = None) -> Result:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump({"site": "blr1", "checklists": {"dir": "lists"}, **(extra or {})})
    )
    return CliRunner().invoke(cli, ["-c", str(config_path), "checklist", *args])


def test_passing_checklist_exits_0(tmp_path: Path) -> None:
    write_checklist(tmp_path / "lists", "daily", PASSING)
    result = ccwatch(tmp_path, "run", "daily")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("blr1 daily checklist, ")
    assert "OK      cpu (cpu_load)" in result.stdout


def test_a_failing_check_exits_1_and_json_reports_it(tmp_path: Path) -> None:
    write_checklist(tmp_path / "lists", "daily", failing(free_port()))
    result = ccwatch(tmp_path, "run", "--format", "json")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["fail"] == 1
    assert report["results"][0]["id"] == "sip"


def test_several_checklists_run_all_and_list(tmp_path: Path) -> None:
    write_checklist(tmp_path / "lists", "daily", PASSING)
    write_checklist(
        tmp_path / "lists",
        "weekly",
        "schedule: {cron: '0 7 * * 1', timezone: Asia/Kolkata}\n" + PASSING,
    )
    result = ccwatch(tmp_path, "run", "--format", "json")
    assert result.exit_code == 0
    assert [r["checklist"] for r in json.loads(result.stdout)] == ["daily", "weekly"]
    listed = ccwatch(tmp_path, "list")
    assert listed.stdout.splitlines()[1].split()[:2] == ["weekly", "0"]


def test_config_problems_exit_2(tmp_path: Path) -> None:
    write_checklist(tmp_path / "lists", "daily", "checks:\n  - {id: x, type: dsk}\n")
    result = ccwatch(tmp_path, "run")
    assert result.exit_code == 2
    assert (
        "daily.yaml: checks -> 1: unknown check type 'dsk'; did you mean 'disk'?" in result.stderr
    )
    write_checklist(tmp_path / "lists", "daily", PASSING)
    unknown = ccwatch(tmp_path, "run", "nightly")
    assert unknown.exit_code == 2
    assert "no checklist named 'nightly'; there are: daily" in unknown.stderr
    no_email = ccwatch(tmp_path, "run", "--email")
    assert no_email.exit_code == 2
    assert "--email needs an `email:` section" in no_email.stderr


def test_email_relay_down_exits_1(tmp_path: Path) -> None:
    write_checklist(tmp_path / "lists", "daily", PASSING)
    relay = {
        "email": {
            "host": "127.0.0.1",
            "port": free_port(),
            "starttls": False,
            "from": "ccwatch@example.com",
            "to": ["it@example.com"],
            "timeout": "2s",
        }
    }
    result = ccwatch(tmp_path, "run", "--email", extra=relay)
    assert result.exit_code == 1
    assert "daily: report not e-mailed: SMTP 127.0.0.1:" in result.stderr
