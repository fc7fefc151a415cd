"""The retention job: every enabled database in turn, with metrics and incidents.

The daemon runs it on ``retention.schedule`` through the scheduler
(``retention_scheduled_job``); ``ccwatch retention run`` runs it once. A failed run
raises a minor incident (component ``retention:<database>``, kind ``retention``) that
the next successful run clears. A run the maintenance window cut short is neither: it
continues next time, and ``ccwatch_retention_last_success_timestamp_seconds`` moves
only when a run finished every table, which is what to alert on.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from ccwatch.errors import RetentionError
from ccwatch.incidents.external import ExternalIncidents
from ccwatch.metrics import shared_metrics
from ccwatch.retention.config import Clock, RetentionConfig, RetentionDatabase, utc_now
from ccwatch.retention.metrics import RetentionMetrics
from ccwatch.retention.report import DatabaseReport, RunReport
from ccwatch.scheduler import ScheduledJob
from ccwatch.severity import Severity

logger = logging.getLogger(__name__)

JOB_NAME = "retention"
INCIDENT_KIND = "retention"


class RetentionJob:
    def __init__(
        self,
        config: RetentionConfig,
        *,
        registry: CollectorRegistry | None = None,
        incidents: ExternalIncidents | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.metrics = shared_metrics(RetentionMetrics, registry) if registry else None
        self.incidents = incidents
        self.clock = clock

    def databases(self, name: str | None = None) -> list[RetentionDatabase]:
        """The enabled databases, or the one named; RetentionError for an unknown name."""
        if name is None:
            return self.config.enabled_databases
        for database in self.config.databases:
            if database.name == name:
                if not database.enabled:
                    raise RetentionError(f"database {name!r} is disabled (enabled: false)")
                return [database]
        known = ", ".join(d.name for d in self.config.databases) or "none configured"
        raise RetentionError(f"no retention database named {name!r} (known: {known})")

    async def run(
        self,
        *,
        dry_run: bool = False,
        database: str | None = None,
        ignore_window: bool = False,
    ) -> RunReport:
        # Deferred: the daemon and the CLI load libpq only when a database is cleaned.
        from ccwatch.retention.postgres import PostgresRetention

        report = RunReport()
        for entry in self.databases(database):
            cleaner = PostgresRetention(entry, self.config, metrics=self.metrics, clock=self.clock)
            result = await cleaner.run(dry_run=dry_run, ignore_window=ignore_window)
            report.databases.append(result)
            if not dry_run:
                await self._record(result)
        return report

    async def run_scheduled(self) -> None:
        """The scheduler's entry point: failures are reported, not raised."""
        report = await self.run()
        for result in report.databases:
            if result.outcome != "failed":
                logger.info(
                    "retention of %s: %s, %d rows deleted in %d batches (slowest %.0f ms), "
                    "%d partitions dropped, %.1fs",
                    result.database,
                    result.outcome,
                    result.rows_deleted,
                    result.batches,
                    result.slowest_batch_seconds * 1000,
                    sum(len(t.partitions_dropped) for t in result.tables),
                    result.duration_seconds,
                )

    async def _record(self, result: DatabaseReport) -> None:
        if self.metrics is not None:
            self.metrics.runs.labels(database=result.database, outcome=result.outcome).inc()
            if result.outcome == "ok":
                self.metrics.last_success.labels(database=result.database).set(
                    self.clock().timestamp()
                )
        if self.incidents is None:
            return
        component = f"retention:{result.database}"
        if result.outcome == "failed":
            await self.incidents.report(
                component=component,
                kind=INCIDENT_KIND,
                severity=Severity.MINOR,
                impact=f"database retention of {result.database} failed: {result.error}",
                detail={
                    "database": result.database,
                    "cutoff": result.cutoff,
                    "rows_deleted": result.rows_deleted,
                    "error": result.error,
                },
            )
        elif result.outcome == "ok":
            await self.incidents.clear(component=component, kind=INCIDENT_KIND)


def retention_scheduled_job(
    config: RetentionConfig,
    *,
    registry: CollectorRegistry | None = None,
    incidents: ExternalIncidents | None = None,
) -> ScheduledJob | None:
    """The daemon's cron job for ``retention.schedule``; None when no database is enabled."""
    if not config.enabled_databases:
        return None
    job = RetentionJob(config, registry=registry, incidents=incidents)
    return ScheduledJob(name=JOB_NAME, schedule=config.schedule, run=job.run_scheduled)


def retention_scheduled_jobs(
    config: RetentionConfig,
    *,
    registry: CollectorRegistry,
    incidents: ExternalIncidents | None,
) -> list[ScheduledJob]:
    """The daemon's retention job, if any database is enabled (for ``app.py``)."""
    job = retention_scheduled_job(config, registry=registry, incidents=incidents)
    return [job] if job is not None else []
