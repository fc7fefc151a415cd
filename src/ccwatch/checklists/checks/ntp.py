"""``ntp``: the clock's offset from NTP time.

Read from ``chronyc tracking`` when chrony is installed, else ``timedatectl
timesync-status`` (systemd-timesyncd), else ``timedatectl show`` (synchronized yes/no,
offset unknown). With none of them usable, the check is ``skipped`` with the reason.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, grade_high
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration

_CHRONY = re.compile(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", re.MULTILINE)
_CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+)$", re.MULTILINE)
_TIMESYNCD = re.compile(r"^\s*Offset:\s*([+-]?[\d.]+)(us|ms|s|min)\b", re.MULTILINE)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


class NtpParams(StrictModel):
    warn_offset: Duration | None = Field(timedelta(milliseconds=100))
    fail_offset: Duration | None = Field(timedelta(seconds=1))
    command_timeout: Duration = timedelta(seconds=3)


def parse_chrony(output: str) -> tuple[float, bool] | None:
    """(offset seconds, synchronised) from ``chronyc tracking``."""
    found = _CHRONY.search(output)
    if found is None:
        return None
    offset = float(found.group(1)) * (1 if found.group(2) == "fast" else -1)
    leap = _CHRONY_LEAP.search(output)
    return offset, leap is None or "not synchronised" not in leap.group(1).lower()


def parse_timesyncd(output: str) -> float | None:
    found = _TIMESYNCD.search(output)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else None


async def _read(env: CheckEnv, argv: list[str], timeout: float) -> str | None:
    try:
        result = await env.host.run_command(argv, timeout)
    except (OSError, TimeoutError):
        return None
    return result.output if result.exit_code == 0 else None


async def run(params: NtpParams, env: CheckEnv) -> Outcome:
    timeout = params.command_timeout.total_seconds()
    warn = params.warn_offset.total_seconds() if params.warn_offset is not None else None
    fail = params.fail_offset.total_seconds() if params.fail_offset is not None else None
    threshold = ", ".join(
        f"{word} above {format_duration(limit)}"
        for word, limit in (("fail", params.fail_offset), ("warn", params.warn_offset))
        if limit is not None
    )
    hint = "check the NTP servers are reachable (UDP 123) and the time service runs"
    tried: list[str] = []
    if env.host.which("chronyc"):
        output = await _read(env, ["chronyc", "-n", "tracking"], timeout)
        parsed = parse_chrony(output) if output else None
        if parsed is not None:
            offset, synchronised = parsed
            status = grade_high(abs(offset), warn, fail)
            if not synchronised:
                status = Status.FAIL
            value = f"offset {offset * 1000:+.1f} ms (chrony)" + (
                "" if synchronised else ", not synchronised"
            )
            return Outcome(status, value, threshold, hint)
        tried.append("chronyc tracking failed")
    if env.host.which("timedatectl"):
        output = await _read(env, ["timedatectl", "timesync-status"], timeout)
        timesyncd_offset = parse_timesyncd(output) if output else None
        if timesyncd_offset is not None:
            status = grade_high(abs(timesyncd_offset), warn, fail)
            return Outcome(
                status,
                f"offset {timesyncd_offset * 1000:+.1f} ms (systemd-timesyncd)",
                threshold,
                hint,
            )
        output = await _read(
            env, ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], timeout
        )
        if output is not None and output.strip() in ("yes", "no"):
            if output.strip() == "yes":
                return Outcome(Status.OK, "synchronized (offset not reported)", threshold)
            return Outcome(Status.FAIL, "clock not synchronized", threshold, hint)
        tried.append("timedatectl is present but does not answer (no systemd here?)")
    if not tried:
        tried.append("neither chronyc nor timedatectl is installed")
    return Outcome.skipped("; ".join(tried))


CHECK = CheckType("ntp", NtpParams, run, "clock offset from NTP (chrony or timesyncd)")
