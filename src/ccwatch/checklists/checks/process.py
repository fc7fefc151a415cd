"""``process``: named processes are running, between ``min_count`` and ``max_count``."""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from ccwatch.checklists.checks.base import CheckEnv, CheckType, ProcessInfo, run_blocking
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel


class ProcessParams(StrictModel):
    name: str = Field(min_length=1, description="process name, or the file name of argv[0]")
    cmdline_contains: str | None = Field(
        None,
        description="only count processes whose command line contains this (java -jar acd.jar)",
    )
    min_count: int = Field(1, ge=0)
    max_count: int | None = Field(None, ge=0)
    service: str | None = Field(None, description="systemd unit named in the hint")

    @model_validator(mode="after")
    def _ordered_bounds(self) -> ProcessParams:
        if self.max_count is not None and self.max_count < self.min_count:
            raise ValueError(f"max_count ({self.max_count}) is below min_count ({self.min_count})")
        return self


def matches(params: ProcessParams, process: ProcessInfo) -> bool:
    program = os.path.basename(process.cmdline[0]) if process.cmdline else ""
    if params.name not in (process.name, program):
        return False
    return params.cmdline_contains is None or params.cmdline_contains in " ".join(process.cmdline)


async def run(params: ProcessParams, env: CheckEnv) -> Outcome:
    processes = await run_blocking(lambda: list(env.host.processes()))
    count = sum(1 for process in processes if matches(params, process))
    bounds = f"at least {params.min_count}"
    if params.max_count is not None:
        bounds += f", at most {params.max_count}"
    value = f"{count} running"
    label = params.name + (f" ({params.cmdline_contains})" if params.cmdline_contains else "")
    if count < params.min_count:
        unit = params.service or params.name
        return Outcome(
            Status.FAIL,
            value,
            bounds,
            f"{label} is not running enough instances: check `systemctl status {unit}` "
            f"and its log, then start it",
        )
    if params.max_count is not None and count > params.max_count:
        return Outcome(
            Status.FAIL,
            value,
            bounds,
            f"too many {label} processes: look for stuck or duplicate instances (`ps -ef`)",
        )
    return Outcome(Status.OK, value, bounds)


CHECK = CheckType("process", ProcessParams, run, "named processes are running (count bounds)")
