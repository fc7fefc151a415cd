"""``cpu_load``: the load average divided by the number of CPUs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, grade_high, run_blocking, thresholds
from ccwatch.checklists.result import Outcome
from ccwatch.configbase import StrictModel

_PERIODS = {"1m": 0, "5m": 1, "15m": 2}


class CpuLoadParams(StrictModel):
    period: Literal["1m", "5m", "15m"] = "15m"
    warn_per_cpu: float | None = Field(1.0, ge=0)
    fail_per_cpu: float | None = Field(2.0, ge=0)


async def run(params: CpuLoadParams, env: CheckEnv) -> Outcome:
    averages = await run_blocking(env.host.load_average)
    cpus = env.host.cpu_count() or 1
    load = averages[_PERIODS[params.period]]
    per_cpu = load / cpus
    status = grade_high(per_cpu, params.warn_per_cpu, params.fail_per_cpu)
    return Outcome(
        status,
        f"{per_cpu:.2f} per CPU ({params.period} load {load:.2f} on {cpus} CPUs)",
        thresholds(" per CPU", params.warn_per_cpu, params.fail_per_cpu, "above"),
        "find what is busy (`top -o %CPU`): a runaway report or a stuck process",
    )


CHECK = CheckType("cpu_load", CpuLoadParams, run, "load average per CPU")
