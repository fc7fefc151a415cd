"""The checklist job of the daemon: run on schedule, keep history, metrics, incidents, e-mail.

``ChecklistService.run_and_report(checklist)`` is one complete run; ``jobs()`` gives the
scheduler one ``ScheduledJob`` per checklist with a ``schedule:``. The service gets the
checklists ``load_config`` validated, the ``CheckSettings`` checks may read, the
``email:`` relay and its collaborators; it never sees the root config. A check with
``open_incident: true`` reports an incident (component ``checklist:<check id>``, kind
``checklist``) while it fails and clears it when it passes again; a check that could not
run (error) or was skipped leaves the incident as it is.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, tzinfo
from email.message import EmailMessage
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from ccwatch.checklists.config import ChecklistsConfig, CheckSettings
from ccwatch.checklists.history import last_run, save_run
from ccwatch.checklists.metrics import ChecklistMetrics
from ccwatch.checklists.result import ChecklistRun, Status
from ccwatch.errors import ConfigError, UpstreamError
from ccwatch.incidents.external import ExternalIncidents
from ccwatch.metrics import shared_metrics
from ccwatch.notify.config import EmailConfig
from ccwatch.scheduler import ScheduledJob
from ccwatch.severity import Severity
from ccwatch.state import StateStore

if TYPE_CHECKING:
    # The checklists come validated from ``load_config``; running and reporting them loads
    # the check types and the report on the first run (see ``checklists.config``).
    from ccwatch.checklists.checks import CheckEnv, HostProbes
    from ccwatch.checklists.definition import Checklist

logger = logging.getLogger(__name__)

SendEmail = Callable[[EmailConfig, EmailMessage], Awaitable[None]]
INCIDENT_KIND = "checklist"


def report_zone(checklist: Checklist) -> tzinfo:
    """The checklist's schedule time zone, else the host's."""
    if checklist.schedule is not None:
        return checklist.schedule.timezone
    return datetime.now().astimezone().tzinfo or UTC


def recipients(checklist: Checklist, email: EmailConfig | None) -> list[str]:
    if checklist.recipients:
        return list(checklist.recipients)
    return list(email.to) if email is not None else []


async def send_report(
    run: ChecklistRun,
    checklist: Checklist,
    email: EmailConfig | None,
    send: SendEmail | None = None,
) -> list[str]:
    """E-mail the report through ``email`` (the ``email:`` section); returns the
    recipients. Raises UpstreamError, or ConfigError when there is no ``email:`` section
    or nobody to send to."""
    if email is None:
        raise ConfigError("config", ["email: is not configured; add an `email:` section"])
    to = recipients(checklist, email)
    if not to:
        raise ConfigError(
            checklist.name, ["recipients: nobody to send to; set `recipients` or `email.to`"]
        )
    if send is None:
        from ccwatch.notify.email import send_email

        send = send_email
    from ccwatch.checklists.report import email_message

    message = email_message(run, email.from_address, to, report_zone(checklist))
    await send(email, message)
    return to


class ChecklistService:
    def __init__(
        self,
        checklists: Sequence[Checklist],
        settings: CheckSettings,
        email: EmailConfig | None,
        store: StateStore,
        registry: CollectorRegistry,
        *,
        incidents: ExternalIncidents | None = None,
        host: HostProbes | None = None,
        clock: Callable[[], float] = time.time,
        send: SendEmail | None = None,
    ) -> None:
        self.checklists = list(checklists)
        self.email = email
        self.store = store
        self.metrics = shared_metrics(ChecklistMetrics, registry)
        self.incidents = incidents
        self.settings = settings
        self.host = host
        self.clock = clock
        self._env: CheckEnv | None = None
        self.send = send

    @property
    def env(self) -> CheckEnv:
        """What the checks may use; built with the first run (with the check types)."""
        if self._env is None:
            from ccwatch.checklists.checks import CheckEnv, HostProbes

            self._env = CheckEnv(
                config=self.settings, host=self.host or HostProbes(), clock=self.clock
            )
        return self._env

    def restore_metrics(self) -> None:
        """Show the last stored results until the next run, so a restart leaves no gap."""
        for checklist in self.checklists:
            previous = self.store.run_sync(functools.partial(last_run, checklist=checklist.name))
            if previous is not None:
                self.metrics.observe(previous)

    async def run_and_report(self, checklist: Checklist, trigger: str = "schedule") -> ChecklistRun:
        from ccwatch.checklists.runner import run_checklist

        run = await run_checklist(checklist, self.env)
        self.metrics.observe(run)
        await self._sync_incidents(checklist, run)
        emailed = await self._email(checklist, run)
        await self.store.run(functools.partial(save_run, run=run, trigger=trigger, emailed=emailed))
        logger.info("checklist %s ran: %s", checklist.name, _counts_text(run))
        return run

    async def _email(self, checklist: Checklist, run: ChecklistRun) -> bool:
        wanted = checklist.email_when == "always" or (
            checklist.email_when == "problems"
            and any(r.status in (Status.FAIL, Status.ERROR, Status.WARN) for r in run.results)
        )
        if not wanted:
            return False
        try:
            to = await send_report(run, checklist, self.email, self.send)
        except ConfigError as exc:
            logger.warning(
                "checklist %s report not e-mailed: %s", checklist.name, "; ".join(exc.problems)
            )
            return False
        except UpstreamError as exc:
            self.metrics.email_failures.labels(checklist=checklist.name).inc()
            logger.error(
                "checklist %s report not e-mailed: %s; it is kept in the state database, and "
                "`ccwatch checklist run %s --email` sends a fresh one",
                checklist.name,
                exc,
                checklist.name,
            )
            return False
        logger.info("checklist %s report e-mailed to %s", checklist.name, ", ".join(to))
        return True

    async def _sync_incidents(self, checklist: Checklist, run: ChecklistRun) -> None:
        if self.incidents is None:
            return
        specs = {spec.id: spec for spec in checklist.checks}
        for result in run.results:
            spec = specs[result.id]
            if not spec.open_incident:
                continue
            component = f"checklist:{result.id}"
            try:
                if result.status is Status.FAIL:
                    await self.incidents.report(
                        component=component,
                        kind=INCIDENT_KIND,
                        severity=Severity.parse(spec.incident_severity),
                        impact=f"daily check {result.id} failed: {result.value}",
                        detail={
                            "checklist": checklist.name,
                            "type": result.type,
                            "threshold": result.threshold,
                            "hint": result.hint,
                        },
                    )
                elif result.status in (Status.OK, Status.WARN):
                    await self.incidents.clear(component=component, kind=INCIDENT_KIND)
            except Exception as exc:
                logger.error(
                    "checklist %s: cannot update the incident of check %s: %s",
                    checklist.name,
                    result.id,
                    exc,
                )

    def jobs(self) -> list[ScheduledJob]:
        return [
            ScheduledJob(
                name=f"checklist:{checklist.name}",
                schedule=checklist.schedule,
                run=functools.partial(self._scheduled_run, checklist),
            )
            for checklist in self.checklists
            if checklist.schedule is not None
        ]

    async def _scheduled_run(self, checklist: Checklist) -> None:
        await self.run_and_report(checklist, trigger="schedule")


def checklist_scheduled_jobs(
    checklists: ChecklistsConfig,
    settings: CheckSettings,
    email: EmailConfig | None,
    *,
    store: StateStore,
    registry: CollectorRegistry,
    incidents: ExternalIncidents | None,
) -> list[ScheduledJob]:
    """The scheduled jobs of every checklist (the daemon's composition root calls this).

    ``checklists`` is ``config.checklists`` as ``load_config`` returned it (files read and
    validated); the last stored results are shown in the metrics until the next run.
    """
    service = ChecklistService(
        checklists.definitions, settings, email, store, registry, incidents=incidents
    )
    service.restore_metrics()
    if email is None and any(
        c.schedule is not None and c.email_when != "never" for c in checklists.definitions
    ):
        logger.warning("checklist reports are not e-mailed: config.yaml has no `email:` section")
    return service.jobs()



def _counts_text(run: ChecklistRun) -> str:
    return ", ".join(f"{count} {status.value}" for status, count in run.counts.items() if count)
