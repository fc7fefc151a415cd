"""Running a checklist: every enabled check at once, each under its own timeout.

A check that times out or raises is reported as ``error`` with the reason; it never
stops the other checks or the run. ``severity: warn`` turns a failure into a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ccwatch.checklists.checks import REGISTRY, CheckEnv
from ccwatch.checklists.definition import Checklist, CheckSpecBase
from ccwatch.checklists.result import ChecklistRun, CheckResult, Outcome, Status
from ccwatch.durations import format_duration
from ccwatch.errors import CheckError

logger = logging.getLogger(__name__)


async def run_check(spec: CheckSpecBase, env: CheckEnv, default_timeout: float) -> CheckResult:
    """One check, its outcome folded into a result; never raises (except cancellation)."""
    timeout = spec.timeout.total_seconds() if spec.timeout is not None else default_timeout
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            outcome = await REGISTRY[spec.type].run(spec.params, env)
    except TimeoutError:
        outcome = Outcome(
            Status.ERROR,
            f"timed out after {format_duration(spec.timeout) if spec.timeout else f'{timeout:g}s'}",
            hint="the check hangs: look at what it talks to, or raise its `timeout`",
        )
    except CheckError as exc:
        outcome = Outcome(Status.ERROR, str(exc), hint="fix the check's parameters")
    except Exception as exc:
        # A bug or an unexpected host condition: report it, keep the run going.
        logger.warning(
            "check %s (%s) raised %s: %s; reported as error",
            spec.id,
            spec.type,
            type(exc).__name__,
            exc,
        )
        outcome = Outcome(
            Status.ERROR,
            f"{type(exc).__name__}: {exc}",
            hint="the check could not run; see the ccwatch log",
        )
    status = outcome.status
    if status is Status.FAIL and spec.severity == "warn":
        status = Status.WARN
    return CheckResult(
        id=spec.id,
        type=spec.type,
        description=spec.description,
        status=status,
        value=outcome.value,
        threshold=outcome.threshold,
        hint=outcome.hint if status is not Status.OK else "",
        detail=outcome.detail,
        duration_seconds=time.perf_counter() - started,
    )


async def run_checklist(checklist: Checklist, env: CheckEnv) -> ChecklistRun:
    """Run the enabled checks concurrently; results keep the file's order."""
    started_at = env.clock()
    started = time.perf_counter()
    default_timeout = checklist.timeout.total_seconds()
    results = await asyncio.gather(
        *(run_check(spec, env, default_timeout) for spec in checklist.enabled_checks())
    )
    return ChecklistRun(
        checklist=checklist.name,
        site=env.config.site,
        started_at=started_at,
        duration_seconds=time.perf_counter() - started,
        results=list(results),
    )
