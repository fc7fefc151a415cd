"""``backup_age``: the newest file matching a pattern in a folder is recent enough.

Seed 004 makes monthly voice-log archives the client's job; this proves one was made.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import ByteSize, Field

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    format_age,
    format_bytes,
    grade_age,
    run_blocking,
)
from ccwatch.checklists.checks.files import newest_match
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration


class BackupAgeParams(StrictModel):
    directory: Path
    pattern: str = Field("*", description="glob relative to directory; ** matches folders")
    fail_age: Duration = Field(timedelta(days=35), description="fail when the newest is older")
    warn_age: Duration | None = None
    min_size: ByteSize = Field(
        ByteSize(1), description="smaller files are not backups (empty, partial)"
    )


async def run(params: BackupAgeParams, env: CheckEnv) -> Outcome:
    threshold = f"newest {params.pattern} younger than {format_duration(params.fail_age)}"
    if not await run_blocking(params.directory.is_dir):
        return Outcome(
            Status.FAIL,
            f"{params.directory} does not exist",
            threshold,
            f"mount the backup volume at {params.directory} or fix the path",
        )
    newest = await run_blocking(newest_match, params.directory, params.pattern, params.min_size)
    if newest is None:
        return Outcome(
            Status.FAIL,
            f"no {params.pattern} in {params.directory}",
            threshold,
            "no backup was ever written here: check the backup job and its target folder",
        )
    path, stat = newest
    age = env.clock() - stat.st_mtime
    status = grade_age(age, params.warn_age, params.fail_age)
    return Outcome(
        status,
        f"{path.name} ({format_bytes(stat.st_size)}) is {format_age(age)} old",
        threshold,
        "the backup job has not run: check its schedule and log",
    )


CHECK = CheckType("backup_age", BackupAgeParams, run, "the newest backup file is recent")
