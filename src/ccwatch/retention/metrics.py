"""Prometheus metrics of the retention job (get them through ``shared_metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows_deleted = Counter(
            "ccwatch_retention_rows_deleted_total",
            "Rows deleted by the retention job (partition drops are counted separately)",
            ["database", "table"],
            registry=registry,
        )
        self.partitions_dropped = Counter(
            "ccwatch_retention_partitions_dropped_total",
            "Partitions entirely older than the cutoff that were detached and dropped",
            ["database", "table"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "ccwatch_retention_batch_seconds",
            "Duration of one delete batch (one short transaction)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_retries = Counter(
            "ccwatch_retention_batch_retries_total",
            "Batches retried after a lock timeout, statement timeout or deadlock",
            ["database", "reason"],
            registry=registry,
        )
        self.runs = Counter(
            "ccwatch_retention_runs_total",
            "Retention runs by outcome (ok, cut_short by the window, failed)",
            ["database", "outcome"],
            registry=registry,
        )
        self.last_success = Gauge(
            "ccwatch_retention_last_success_timestamp_seconds",
            "Unix time of the last run that finished every table",
            ["database"],
            registry=registry,
        )
