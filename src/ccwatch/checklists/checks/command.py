"""``command``: run an allow-listed command; its exit code decides, its first lines are shown.

The checklist file is the allow-list: a command runs only as written there, as an argv
list (no shell, no expansion), with a minimal environment, stdin closed, in its own
process group that is killed at the timeout. Nothing from MQTT or HTTP ever reaches
it.
"""

from __future__ import annotations

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, describe_os_error
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.redact import redact_then_cut


class CommandParams(StrictModel):
    argv: list[str] = Field(min_length=1, description="program and arguments; no shell")
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0])
    warn_exit_codes: list[int] = Field(default_factory=list)
    output_lines: int = Field(5, ge=0, le=50, description="first lines of output in the report")


async def run(params: CommandParams, env: CheckEnv) -> Outcome:
    program = params.argv[0]
    shown = " ".join(params.argv)
    threshold = f"exit code {' or '.join(map(str, params.ok_exit_codes))}"
    if "/" not in program and env.host.which(program) is None:
        return Outcome(
            Status.FAIL,
            f"{program}: command not found",
            threshold,
            f"install {program} or write its full path in the checklist",
        )
    # The runner's per-check timeout bounds this; run_command kills the group on cancel.
    try:
        result = await env.host.run_command(params.argv, None)
    except OSError as exc:
        return Outcome(
            Status.FAIL,
            f"{shown}: cannot run: {describe_os_error(exc)}",
            threshold,
            "check the path and that the ccwatch user may execute it",
        )
    lines = result.output.strip().splitlines()
    # Redact first, cut after: a secret straddling the cut would keep its first part.
    first = "\n".join(redact_then_cut(line, 200) for line in lines[: params.output_lines])
    shown_line = redact_then_cut(lines[0], 120) if lines else ""
    value = f"exit code {result.exit_code}" + (f": {shown_line}" if lines else "")
    if result.exit_code in params.ok_exit_codes:
        return Outcome(Status.OK, value, threshold, detail=first)
    status = Status.WARN if result.exit_code in params.warn_exit_codes else Status.FAIL
    return Outcome(status, value, threshold, f"run `{shown}` by hand and read its output", first)


CHECK = CheckType("command", CommandParams, run, "an allow-listed command's exit code")
