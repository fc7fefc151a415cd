"""``disk``: free space (percent and bytes) and free inodes on a mount."""

from __future__ import annotations

from pydantic import ByteSize, Field

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    format_bytes,
    grade_low,
    run_blocking,
    thresholds,
)
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel


class DiskParams(StrictModel):
    path: str = Field("/", description="a path on the mount to check")
    warn_free_percent: float | None = Field(20, ge=0, le=100)
    fail_free_percent: float | None = Field(10, ge=0, le=100)
    fail_free_bytes: ByteSize | None = Field(None, description="e.g. 5GiB")
    fail_free_inodes_percent: float | None = Field(5, ge=0, le=100)


async def run(params: DiskParams, env: CheckEnv) -> Outcome:
    try:
        space = await run_blocking(env.host.disk_space, params.path)
    except FileNotFoundError:
        return Outcome(
            Status.FAIL, "path does not exist", "", f"mount the filesystem at {params.path}"
        )
    free_percent = 100.0 * space.free_bytes / space.total_bytes if space.total_bytes else 0.0
    status = grade_low(free_percent, params.warn_free_percent, params.fail_free_percent)
    if params.fail_free_bytes is not None and space.free_bytes < params.fail_free_bytes:
        status = Status.FAIL
    value = (
        f"{free_percent:.1f}% free ({format_bytes(space.free_bytes)} of "
        f"{format_bytes(space.total_bytes)})"
    )
    threshold = thresholds("%", params.warn_free_percent, params.fail_free_percent, "below")
    if params.fail_free_bytes is not None:
        threshold += f", fail below {format_bytes(params.fail_free_bytes)}"
    hint = f"free space on {params.path}: rotate or compress logs, move old recordings/backups"
    if space.inodes_total and params.fail_free_inodes_percent is not None:
        inodes_percent = 100.0 * space.inodes_free / space.inodes_total
        value += f", inodes {inodes_percent:.1f}% free"
        threshold += f"; inodes fail below {params.fail_free_inodes_percent:g}%"
        if inodes_percent < params.fail_free_inodes_percent:
            status = Status.FAIL
            hint = (
                f"{params.path} is running out of inodes: delete many small files "
                "(spool, session or temp files)"
            )
    return Outcome(status, value, threshold, hint)


CHECK = CheckType("disk", DiskParams, run, "free space and inodes on a mount")
