"""``memory``: available memory (what can be allocated without swapping)."""

from __future__ import annotations

from pydantic import Field

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    format_bytes,
    grade_low,
    run_blocking,
    thresholds,
)
from ccwatch.checklists.result import Outcome
from ccwatch.configbase import StrictModel


class MemoryParams(StrictModel):
    warn_available_percent: float | None = Field(20, ge=0, le=100)
    fail_available_percent: float | None = Field(10, ge=0, le=100)


async def run(params: MemoryParams, env: CheckEnv) -> Outcome:
    memory = await run_blocking(env.host.virtual_memory)
    percent = 100.0 * memory.available_bytes / memory.total_bytes if memory.total_bytes else 0.0
    status = grade_low(percent, params.warn_available_percent, params.fail_available_percent)
    return Outcome(
        status,
        f"{percent:.1f}% available ({format_bytes(memory.available_bytes)} of "
        f"{format_bytes(memory.total_bytes)})",
        thresholds("%", params.warn_available_percent, params.fail_available_percent, "below"),
        "find the largest processes (`ps aux --sort=-rss | head`) and restart a leaking one",
    )


CHECK = CheckType("memory", MemoryParams, run, "available memory")
