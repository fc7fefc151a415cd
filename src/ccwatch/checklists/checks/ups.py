"""``ups``: the UPS that powers the host, read from NUT with ``upsc <ups>@<host>``.

Grades ``ups.status`` (NUT's flags): ``OL`` (on line power) passes; ``OB`` (on battery),
``RB`` (replace battery), ``BYPASS``, ``OVER`` (overload) and ``ALARM`` warn; ``LB``
(low battery), ``FSD`` (forced shutdown) and ``OFF`` fail. ``battery.charge`` (%) and
``battery.runtime`` (seconds) are graded against their thresholds when the UPS reports
them; the worst grade wins. Where NUT is not installed (no ``upsc`` command) the check
is skipped and says so; an ``upsc`` error (unknown UPS, driver not connected, data
stale, upsd down) fails. ``upsc`` runs through the checks' command runner (no shell,
its own process group, killed at ``command_timeout``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from ccwatch.checklists.checks.base import (
    CheckEnv,
    CheckType,
    describe_os_error,
    format_age,
    grade_low,
    thresholds,
)
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration
from ccwatch.redact import redact_then_cut

FAIL_FLAGS = {"LB": "low battery", "FSD": "forced shutdown", "OFF": "output off"}
WARN_FLAGS = {
    "OB": "on battery",
    "RB": "replace battery",
    "BYPASS": "on bypass",
    "OVER": "overloaded",
    "ALARM": "alarm",
}


class UpsParams(StrictModel):
    ups: str = Field("ups", pattern=r"^[A-Za-z0-9._-]+$", description="name in NUT's ups.conf")
    host: str = Field("localhost", pattern=r"^[A-Za-z0-9._:\[\]-]+$")
    port: int | None = Field(None, ge=1, le=65535, description="upsd port (default 3493)")
    warn_charge_below: float | None = Field(50, ge=0, le=100, description="percent")
    fail_charge_below: float | None = Field(20, ge=0, le=100, description="percent")
    warn_runtime_below: Duration | None = timedelta(minutes=10)
    fail_runtime_below: Duration | None = timedelta(minutes=5)
    command_timeout: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _ordered(self) -> UpsParams:
        if (
            self.warn_charge_below is not None
            and self.fail_charge_below is not None
            and self.fail_charge_below > self.warn_charge_below
        ):
            raise ValueError("fail_charge_below is above warn_charge_below")
        if (
            self.warn_runtime_below is not None
            and self.fail_runtime_below is not None
            and self.fail_runtime_below > self.warn_runtime_below
        ):
            raise ValueError("fail_runtime_below is above warn_runtime_below")
        return self

    @property
    def target(self) -> str:
        return f"{self.ups}@{self.host}" + (f":{self.port}" if self.port else "")


def parse_upsc(output: str) -> dict[str, str]:
    """``upsc``'s ``name: value`` lines as a dict (other lines, such as the
    "Init SSL without certificate database" notice, are ignored)."""
    variables: dict[str, str] = {}
    for line in output.splitlines():
        name, separator, value = line.partition(": ")
        if separator and name and " " not in name:
            variables[name] = value.strip()
    return variables


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def grade_status(flags: list[str]) -> tuple[Status, list[str]]:
    """The grade of ``ups.status``'s flags and the words for the ones that matter."""
    words = [FAIL_FLAGS[f] for f in flags if f in FAIL_FLAGS]
    words += [WARN_FLAGS[f] for f in flags if f in WARN_FLAGS]
    if any(f in FAIL_FLAGS for f in flags):
        return Status.FAIL, words
    if any(f in WARN_FLAGS for f in flags):
        return Status.WARN, words
    if "OL" in flags:
        return Status.OK, ["on line power"]
    return Status.WARN, ["status unknown"]


def _threshold(params: UpsParams) -> str:
    limits = (("fail", params.fail_runtime_below), ("warn", params.warn_runtime_below))
    runtime = [f"{word} below {format_duration(limit)}" for word, limit in limits if limit]
    charge = thresholds("%", params.warn_charge_below, params.fail_charge_below, "below")
    return f"status OL; charge {charge}; runtime {', '.join(runtime) or 'none'}"


async def run(params: UpsParams, env: CheckEnv) -> Outcome:
    upsc = env.host.which("upsc")
    if upsc is None:
        return Outcome.skipped("NUT not installed (no upsc command): UPS not checked")
    threshold = _threshold(params)
    try:
        result = await env.host.run_command(
            [upsc, params.target], params.command_timeout.total_seconds()
        )
    except TimeoutError:
        return Outcome(
            Status.FAIL,
            f"upsc {params.target}: no answer within {format_duration(params.command_timeout)}",
            threshold,
            "check that upsd runs and answers (`systemctl status nut-server`)",
        )
    except OSError as exc:
        return Outcome(
            Status.FAIL,
            f"upsc: cannot run: {describe_os_error(exc)}",
            threshold,
            "check that the ccwatch user may execute upsc",
        )
    variables = parse_upsc(result.output)
    status_text = variables.get("ups.status")
    if result.exit_code != 0 or status_text is None:
        lines = result.output.strip().splitlines()
        said = redact_then_cut(lines[-1], 160) if lines else f"exit code {result.exit_code}"
        return Outcome(
            Status.FAIL,
            f"upsc {params.target}: {said}",
            threshold,
            "check NUT: the UPS name in ups.conf, the driver (`upsdrvctl start`) and upsd "
            f"(`upsc -l {params.host}` lists the UPSes it knows)",
        )
    flags = status_text.split()
    grade, words = grade_status(flags)
    parts = [f"{status_text} ({', '.join(words)})"]
    grades = [grade]
    charge = _number(variables.get("battery.charge"))
    if charge is not None:
        grades.append(grade_low(charge, params.warn_charge_below, params.fail_charge_below))
        parts.append(f"charge {charge:g}%")
    runtime = _number(variables.get("battery.runtime"))
    if runtime is not None:
        warn = params.warn_runtime_below
        fail = params.fail_runtime_below
        grades.append(
            grade_low(
                runtime,
                warn.total_seconds() if warn is not None else None,
                fail.total_seconds() if fail is not None else None,
            )
        )
        parts.append(f"runtime {format_age(runtime)}")
    worst = min(grades, key=lambda status: status.report_rank)
    detail = "\n".join(
        f"{name}: {variables[name]}"
        for name in ("device.mfr", "device.model", "ups.load", "input.voltage", "battery.date")
        if name in variables
    )
    value = f"{params.target}: " + ", ".join(parts)
    if worst is Status.OK:
        return Outcome(Status.OK, value, threshold, detail=detail)
    on_battery = "OB" in flags or "LB" in flags
    hint = (
        "the host runs on battery: check the mains supply and plan a clean shutdown"
        if on_battery
        else "check the UPS (battery, load, alarms) on its panel or with `upsc`"
    )
    return Outcome(worst, value, threshold, hint, detail)


CHECK = CheckType("ups", UpsParams, run, "the UPS is on line power with charge (NUT upsc)")
