"""Shared bits of the checklist tests (no tests here): a config, a CheckEnv with fixture
probes, running one check."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ccwatch.checklists.checks import REGISTRY, CheckEnv, HostProbes
from ccwatch.checklists.result import Outcome
from ccwatch.config import Config

NOW = 1_795_000_000.0  # 2026-11-19, a fixed clock for age arithmetic


def config(**overrides: Any) -> Config:
    data: dict[str, Any] = {"site": "blr1", **overrides}
    return Config.model_validate(data)


def env(cfg: Config | None = None, clock: float | None = None, **probes: Any) -> CheckEnv:
    host = dataclasses.replace(HostProbes(), **probes)
    return CheckEnv(
        config=(cfg or config()).check_settings(),
        host=host,
        clock=(lambda: clock) if clock is not None else time.time,
    )


def params(check_type: str, **values: Any) -> BaseModel:
    return REGISTRY[check_type].params.model_validate(values)


def run(check_type: str, check_env: CheckEnv | None = None, **values: Any) -> Outcome:
    check = REGISTRY[check_type]
    outcome: Outcome = asyncio.run(check.run(params(check_type, **values), check_env or env()))
    return outcome


def write_checklist(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path
