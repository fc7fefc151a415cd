"""The YAML examples in README.md are valid config, so a copied example works."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccwatch.config import Config, validate_data
from ccwatch.severity import Severity
from ccwatch.sla import IncidentTimes, SlaConfig, due_times

README = Path(__file__).resolve().parent.parent / "README.md"


def yaml_blocks(first_key: str) -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    loaded = [yaml.safe_load(block) for block in blocks]
    return [block for block in loaded if isinstance(block, dict) and first_key in block]


def test_every_sla_example_is_a_valid_policy() -> None:
    examples = yaml_blocks("sla")
    assert len(examples) >= 3  # seed 004 (default), seed 000, seed 002
    for example in examples:
        policy = SlaConfig.model_validate(example["sla"])
        assert policy.model_dump()


def test_the_escalation_example_validates_with_its_upstream_and_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CCWATCH_PAGERDUTY_ROUTING_KEY", "R0UTINGKEY0123456789abcdef")
    [example] = yaml_blocks("escalation")
    data = {
        "site": "blr1",
        "tickets": [{"type": "pagerduty", "routing_key_env": "CCWATCH_PAGERDUTY_ROUTING_KEY"}],
        "email": {"host": "127.0.0.1", "port": 25, "starttls": False, "from": "cc@example.com"},
        **example,
    }
    config: Config = validate_data(Config, data, "README escalation example")
    assert [level.name for level in config.escalation.levels][:2] == ["L1 support", "L2 support"]


def test_the_retention_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_AMEYODB_DSN", "host=127.0.0.1 dbname=ameyodb user=ccwatch")
    [example] = yaml_blocks("retention")
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README retention example")
    assert config.retention.databases[0].keep_days == 90


def test_the_seed_000_example_follows_the_seed() -> None:
    """P1: RCA within 24 h of the incident (not of its resolution); P3: 24 business hours."""
    [example] = [block for block in yaml_blocks("sla") if "always" in block["sla"]["calendars"]]
    policy = SlaConfig.model_validate(example["sla"])
    opened = datetime(2026, 11, 21, 3, tzinfo=UTC)  # Friday 22:00 in New York
    p1 = IncidentTimes(Severity.CRITICAL, opened, resolved_at=opened + timedelta(hours=10))
    assert due_times(policy, p1)["rca"] == opened + timedelta(hours=24)
    p3 = due_times(policy, IncidentTimes(Severity.MINOR, opened))
    # Three 09:00-17:00 New York days: Monday to Wednesday 17:00 (22:00 UTC).
    assert p3["first_response"] == datetime(2026, 11, 25, 22, tzinfo=UTC)


def test_the_postgresql_state_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_STATE_DSN", "host=127.0.0.1 dbname=ccwatch user=ccwatch")
    [example] = yaml_blocks("state")
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README state example")
    assert config.state.backend == "postgresql" and config.state.pool is not None
