"""``swap``: how much swap is in use (a box that swaps drops calls)."""

from __future__ import annotations

from pydantic import Field

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    format_bytes,
    grade_high,
    run_blocking,
    thresholds,
)
from ccwatch.checklists.result import Outcome
from ccwatch.configbase import StrictModel


class SwapParams(StrictModel):
    warn_used_percent: float | None = Field(25, ge=0, le=100)
    fail_used_percent: float | None = Field(60, ge=0, le=100)


async def run(params: SwapParams, env: CheckEnv) -> Outcome:
    swap = await run_blocking(env.host.swap_memory)
    if swap.total_bytes == 0:
        return Outcome.skipped("no swap configured on this host")
    used = swap.total_bytes - swap.available_bytes
    percent = 100.0 * used / swap.total_bytes
    status = grade_high(percent, params.warn_used_percent, params.fail_used_percent)
    return Outcome(
        status,
        f"{percent:.1f}% used ({format_bytes(used)} of {format_bytes(swap.total_bytes)})",
        thresholds("%", params.warn_used_percent, params.fail_used_percent, "above"),
        "the host is short of memory: check the memory check and the largest processes",
    )


CHECK = CheckType("swap", SwapParams, run, "swap in use")
