"""SLA policies, business calendars and escalation (pure: the time is passed in)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ccwatch.configbase import StrictModel


class SlaConfig(StrictModel):
    policy: dict[str, Any] = Field(default_factory=dict)


class EscalationConfig(StrictModel):
    levels: list[dict[str, Any]] = Field(default_factory=list)
