"""The shipped config.yaml: its tickets/sla/escalation examples load and cover every type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ccwatch.config import load_config
from ccwatch.tickets.adapters import ADAPTERS

SHIPPED = Path(__file__).resolve().parent.parent / "config.yaml"


def test_shipped_config_has_an_example_of_every_adapter_type() -> None:
    config = load_config(SHIPPED)
    assert {upstream.type for upstream in config.tickets} == set(ADAPTERS)
    assert config.sla.enabled and set(config.sla.severities) == {"critical", "major", "minor"}
    # Seed 003's path ships enabled, recording only until targets are configured.
    assert config.escalation.enabled
    assert [level.name for level in config.escalation.levels][:3] == [
        "Tier 1",
        "Tier 2",
        "Engineering",
    ]
    assert not any(level.has_targets for level in config.escalation.levels)


def test_shipped_config_validates_on_a_fresh_machine_without_secrets() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CCWATCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(SHIPPED), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_enabling_the_examples_asks_for_their_secrets(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    for upstream in data["tickets"]:
        upstream["enabled"] = True
    data["escalation"]["enabled"] = True
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CCWATCH_")},
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        "tickets -> 1 -> secret_env: environment variable CCWATCH_WEBHOOK_SECRET" in result.stderr
    )
    assert "tickets -> 2 -> routing_key_env" in result.stderr
