"""``ccwatch classify`` and ``ccwatch incidents list|show`` as support staff use them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from ccwatch.cli import cli
from ccwatch.compose import open_state
from ccwatch.config import load_config
from ccwatch.incidents.lifecycle import Lifecycle, LifecycleSettings, Reading
from ccwatch.incidents.repository import outbox_rows, write_transition
from ccwatch.severity import Severity
from tests.conftest import free_port


def run(*args: str, config: Path | None = None) -> tuple[int, str]:
    options = ["-c", str(config)] if config else ["-c", "/nonexistent/config.yaml"]
    result = CliRunner().invoke(cli, [*options, *args])
    return result.exit_code, result.output


def test_classify_the_seed_examples_by_hand() -> None:
    code, out = run("classify", "--seats", "100", "--unable-to-take-calls", "23")
    assert code == 0
    assert "severity: critical (P1)" in out and "23 of 100 agents cannot take calls (23.0%)" in out
    code, out = run(
        "classify", "--calls-offered", "400", "--calls-rejected", "79", "--format", "json"
    )
    body = json.loads(out)
    assert (body["severity"], body["priority"], body["production_loss"]) == ("major", "P2", 0.1975)
    code, out = run(
        "classify", "--seats", "100", "--agents-expected", "100", "--agents-logged-in", "80"
    )
    assert "severity: critical" in out
    code, out = run("classify", "--component", "reports", "--down")
    assert "severity: major" in out, "reports is capped at major"


def test_classify_uses_the_config_thresholds_and_seats(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "blr1",
                "components": {"acd": {"seats": 50}},
                "classification": {"critical_at": 0.5, "major_above": 0.1},
            }
        )
    )
    code, out = run("classify", "--unable-to-take-calls", "20", config=config)
    assert code == 0 and "severity: major" in out and "20 of 50 agents" in out


def test_classify_refuses_contradictions() -> None:
    code, out = run("classify", "--calls-offered", "10", "--calls-rejected", "11")
    assert code == 2 and "cannot exceed" in out
    code, out = run("classify", "--unable-to-take-calls", "5")
    assert code == 2 and "--seats" in out


def test_incidents_list_and_show_read_the_state_database(
    tmp_path: Path, state_section: dict[str, Any], state_backend: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"site": "blr1", "state": state_section}))
    if state_backend == "sqlite":
        code, out = run("incidents", "list", config=config)
        assert code == 1 and "no state database" in out

    store = open_state(load_config(config).state)
    lifecycle = Lifecycle("blr1", LifecycleSettings(open_after=0), new_id=lambda: "a1b2c3d4e5f6")
    impact = "23 of 100 agents cannot take calls (23.0%)"
    [opened] = lifecycle.observe("acd", Reading(Severity.CRITICAL, 0.23, impact), 1_795_000_000)
    store.run_sync(lambda conn: write_transition(conn, opened, []))
    store.close()

    code, out = run("incidents", "list", config=config)
    assert code == 0 and "a1b2c3d4e5f6" in out and "P1" in out and impact in out
    code, out = run("incidents", "list", "--state", "resolved", config=config)
    assert "no incidents in state resolved" in out
    code, out = run("incidents", "show", "a1b2c3", config=config)
    assert code == 0 and "critical" in out and "opened" in out
    code, out = run("incidents", "show", "a1b2c3d4e5f6", "--format", "json", config=config)
    body = json.loads(out)
    assert body["dedup_key"] == "ccwatch:blr1:acd:a1b2c3d4e5f6"
    assert [e["change"] for e in body["timeline"]] == ["opened"]
    code, out = run("incidents", "show", "zzzzzz", config=config)
    assert code == 3 and "no incident" in out
    # LIKE wildcards in a prefix are characters, not patterns.
    for pattern in ("%%%%%%", "______", "a1b2c%"):
        code, out = run("incidents", "show", pattern, config=config)
        assert code == 3 and "no incident" in out, pattern


def test_incidents_ack_without_a_daemon_goes_through_an_incident_service(
    tmp_path: Path, state_section: dict[str, Any]
) -> None:
    """No daemon listens: the CLI acknowledges through an incident service of its own
    (the same door as the API), so the timeline and the event are the same."""
    config = tmp_path / "config.yaml"
    port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "site": "blr1",
                "state": state_section,
                "http": {"listen": f"127.0.0.1:{port}"},
                "tickets": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
            }
        )
    )
    store = open_state(load_config(config).state)
    lifecycle = Lifecycle("blr1", LifecycleSettings(open_after=0), new_id=lambda: "feedbeef0001")
    [opened] = lifecycle.observe("acd", Reading(Severity.MAJOR, 0.05, "5 of 100"), 1_795_000_000)
    store.run_sync(lambda conn: write_transition(conn, opened, []))
    store.close()

    code, out = run("incidents", "ack", "feedbe", "--by", "ravi", config=config)
    assert code == 0 and "acknowledged by ravi" in out, out
    code, out = run("incidents", "show", "feedbeef0001", "--format", "json", config=config)
    body = json.loads(out)
    assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "ravi")
    assert [e["change"] for e in body["timeline"]] == ["opened", "acknowledged"]
    store = open_state(load_config(config).state)
    try:
        events = store.run_sync(lambda c: [r["event"] for r in outbox_rows(c)])
    finally:
        store.close()
    assert events == ["acknowledge"]  # the open was written before any upstream existed
    code, out = run("incidents", "ack", "feedbeef0001", config=config)
    assert code == 0  # a second acknowledgement keeps the first
    code, out = run("incidents", "ack", "nope-nope", config=config)
    assert code == 3
