"""Prometheus metrics of the checklist runs (get them through ``shared_metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.checklists.result import ChecklistRun


class ChecklistMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.check_status = Gauge(
            "ccwatch_checklist_check_status",
            "Last status of a checklist check: 0 ok, 1 warn, 2 fail, 3 error (skipped: no series)",
            ["checklist", "check"],
            registry=registry,
        )
        self.last_run = Gauge(
            "ccwatch_checklist_last_run_timestamp_seconds",
            "Unix time the checklist last ran",
            ["checklist"],
            registry=registry,
        )
        self.duration = Gauge(
            "ccwatch_checklist_duration_seconds",
            "Wall time of the checklist's last run",
            ["checklist"],
            registry=registry,
        )
        self.email_failures = Counter(
            "ccwatch_checklist_email_failures_total",
            "Checklist reports the SMTP relay did not take",
            ["checklist"],
            registry=registry,
        )
        self._series: dict[str, set[str]] = {}

    def observe(self, run: ChecklistRun) -> None:
        current: set[str] = set()
        for result in run.results:
            value = result.status.metric_value
            if value is not None:
                self.check_status.labels(checklist=run.checklist, check=result.id).set(value)
                current.add(result.id)
        # Checks skipped now, or removed from the file, leave no stale series behind.
        for gone in self._series.get(run.checklist, set()) - current:
            self.check_status.remove(run.checklist, gone)
        self._series[run.checklist] = current
        self.last_run.labels(checklist=run.checklist).set(run.started_at)
        self.duration.labels(checklist=run.checklist).set(run.duration_seconds)
