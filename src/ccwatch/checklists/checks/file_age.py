"""``file_age``: a file (typically a log) was written recently."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, format_age, grade_age, run_blocking
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration


class FileAgeParams(StrictModel):
    path: Path
    fail_age: Duration = Field(timedelta(hours=1), description="fail when not written for longer")
    warn_age: Duration | None = None
    writer: str | None = Field(None, description="what writes the file, named in the hint")


async def run(params: FileAgeParams, env: CheckEnv) -> Outcome:
    threshold = f"written within {format_duration(params.fail_age)}"
    writer = params.writer or "the program that writes it"
    try:
        stat = await run_blocking(params.path.stat)
    except FileNotFoundError:
        return Outcome(
            Status.FAIL,
            f"{params.path} does not exist",
            threshold,
            f"check that {writer} runs and logs to {params.path}",
        )
    age = env.clock() - stat.st_mtime
    status = grade_age(age, params.warn_age, params.fail_age)
    return Outcome(
        status,
        f"last written {format_age(age)} ago",
        threshold,
        f"{writer} has stopped writing {params.path}: is it hung?",
    )


CHECK = CheckType("file_age", FileAgeParams, run, "a file was modified recently")
