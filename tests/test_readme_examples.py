"""The YAML examples in README.md are valid config, so a copied example works."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccwatch.config import Config, validate_data
from ccwatch.sla import SlaConfig

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
