"""``component_processes``: the processes of every configured component are running.

The process names come from ``components.<name>.processes`` of config.yaml (the same
names ticket diagnostics report on), not from the checklist: a component added to
config.yaml is checked without editing the checklist. A name matches a process by its
name or the file name of its argv[0], as the ``process`` check and the diagnostics
match. The report has one line per component; a component with no ``processes``
configured is listed as such (a warning with ``warn_unconfigured: true``).
"""

from __future__ import annotations

import difflib

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, ProcessInfo, run_blocking
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel


class ComponentProcessesParams(StrictModel):
    components: list[str] | None = Field(None, description="default: every configured component")
    exclude: list[str] = Field(default_factory=list, description="components not to check")
    warn_unconfigured: bool = Field(
        False, description="warn about components without components.<name>.processes"
    )


def running_counts(names: list[str], processes: list[ProcessInfo]) -> dict[str, int]:
    """How many processes run under each name (process name or argv[0]'s file name)."""
    counts = dict.fromkeys(names, 0)
    for process in processes:
        candidates = {process.name}
        if process.cmdline:
            candidates.add(process.cmdline[0].rsplit("/", 1)[-1])
        for name in names:
            if name in candidates:
                counts[name] += 1
    return counts


async def run(params: ComponentProcessesParams, env: CheckEnv) -> Outcome:
    settings = env.config.component_settings
    configured = sorted(settings or env.config.components)
    wanted = params.components if params.components is not None else configured
    unknown = [name for name in wanted if name not in configured]
    if unknown:
        notes = []
        for name in unknown:
            close = difflib.get_close_matches(name, configured, n=1)
            notes.append(name + (f" (did you mean {close[0]!r}?)" if close else ""))
        return Outcome(
            Status.FAIL,
            f"not configured: {', '.join(notes)}",
            "every listed component is configured",
            "fix `components:` of the check or add the component to config.yaml",
        )
    wanted = [name for name in wanted if name not in params.exclude]
    names_of = {name: list(settings[name].processes) if name in settings else [] for name in wanted}
    checked = [name for name in wanted if names_of[name]]
    unconfigured = [name for name in wanted if not names_of[name]]
    threshold = "every process of components.<name>.processes runs"
    if not checked:
        if params.warn_unconfigured and unconfigured:
            return Outcome(
                Status.WARN,
                f"no processes configured for {', '.join(unconfigured)}",
                threshold,
                "list each component's processes under components.<name>.processes",
            )
        return Outcome.skipped(
            "no component has processes configured (components.<name>.processes)"
        )
    all_names = sorted({process for name in checked for process in names_of[name]})
    processes = await run_blocking(lambda: list(env.host.processes()))
    counts = running_counts(all_names, processes)
    lines: list[str] = []
    down: list[str] = []
    for name in wanted:
        if name in unconfigured:
            lines.append(f"{name}: no processes configured (components.{name}.processes)")
            continue
        found = [f"{process} {counts[process]} running" for process in names_of[name]]
        missing = [process for process in names_of[name] if counts[process] == 0]
        if missing:
            down.append(name)
            lines.append(f"{name}: NOT RUNNING {', '.join(missing)} ({', '.join(found)})")
        else:
            lines.append(f"{name}: {', '.join(found)}")
    detail = "\n".join(lines)
    if down:
        return Outcome(
            Status.FAIL,
            f"{len(down)} of {len(checked)} components missing processes: {', '.join(down)}",
            threshold,
            "start the missing processes (`systemctl status <unit>`, then its log)",
            detail,
        )
    if params.warn_unconfigured and unconfigured:
        return Outcome(
            Status.WARN,
            f"{len(checked)} components running; no processes configured for "
            f"{', '.join(unconfigured)}",
            threshold,
            "list each component's processes under components.<name>.processes",
            detail,
        )
    return Outcome(Status.OK, f"{len(checked)} components running", threshold, detail=detail)


CHECK = CheckType(
    "component_processes",
    ComponentProcessesParams,
    run,
    "the processes of every configured component run",
)
