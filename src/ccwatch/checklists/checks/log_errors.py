"""``log_errors``: lines matching a pattern in a log file within the last 24 h (``window``).

A line's time is read from its start (``timestamp_regex``, ISO 8601 by default, naive
times are local); lines without one (stack traces) belong to the line above. Only the
last ``max_bytes`` of the file are read, so a huge log costs a bounded amount of time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ByteSize, Field, field_validator

from ccwatch.checklists.checks.base import CheckEnv, CheckType, grade_high, run_blocking, thresholds
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration
from ccwatch.redact import redact_then_cut

ISO_TIMESTAMP = r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"


class LogErrorsParams(StrictModel):
    path: Path
    pattern: str = Field(r"\b(ERROR|FATAL|CRITICAL)\b", description="regular expression")
    window: Duration = timedelta(hours=24)
    warn_above: int | None = Field(0, ge=0, description="warn when more lines match")
    fail_above: int | None = Field(100, ge=0, description="fail when more lines match")
    timestamp_regex: str = Field(ISO_TIMESTAMP, description="group 1 is the line's time")
    timestamp_format: str | None = Field(None, description="strptime format; default ISO 8601")
    max_bytes: ByteSize = Field(
        ByteSize(64 * 1024 * 1024), description="read at most this much (tail)"
    )

    @field_validator("pattern", "timestamp_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


def _parse_time(text: str, fmt: str | None) -> datetime | None:
    try:
        parsed = (
            datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text.replace(",", "."))
        )
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.astimezone()


def count_matches(params: LogErrorsParams, since: float) -> tuple[int, list[str], bool]:
    """(matching lines since ``since``, the last few of them, whether timestamps were seen)."""
    pattern = re.compile(params.pattern)
    stamp = re.compile(params.timestamp_regex)
    with params.path.open("rb") as file:
        size = file.seek(0, 2)
        start = max(0, size - params.max_bytes)
        file.seek(start)
        data = file.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start:
        lines = lines[1:]  # the first line is cut
    # Lines above the first timestamp continue an entry older than what we read.
    has_times = any(stamp.search(line) for line in lines)
    count, seen_time, in_window = 0, False, not has_times
    last: list[str] = []
    for line in lines:
        found = stamp.search(line)
        if found:
            when = _parse_time(found.group(1), params.timestamp_format)
            if when is not None:
                seen_time = True
                in_window = when.timestamp() >= since
        if in_window and pattern.search(line):
            count += 1
            last = [*last[-2:], line]
    return count, [redact_then_cut(line, 200) for line in last], seen_time  # redact, then cut


async def run(params: LogErrorsParams, env: CheckEnv) -> Outcome:
    window = format_duration(params.window)
    threshold = thresholds(" lines", params.warn_above, params.fail_above, "above")
    if not await run_blocking(params.path.is_file):
        return Outcome(
            Status.FAIL,
            f"{params.path} does not exist",
            threshold,
            "check the log path, and that the program logs there",
        )
    since = env.clock() - params.window.total_seconds()
    count, last, seen_time = await run_blocking(count_matches, params, since)
    status = grade_high(count, params.warn_above, params.fail_above)
    value = f"{count} lines matching /{params.pattern}/ in the last {window}"
    if not seen_time:
        value += " (no timestamps recognised: counted the whole file)"
    return Outcome(
        status,
        value,
        threshold,
        f"read the errors in {params.path} (latest below)",
        detail="\n".join(last),
    )


CHECK = CheckType("log_errors", LogErrorsParams, run, "count of error lines in a log, last 24 h")
