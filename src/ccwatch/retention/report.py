"""What one retention run did, per database and table, as text or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "cut_short", "failed"]


@dataclass
class TableReport:
    """One configured table (a partitioned table's partitions are summed into it)."""

    table: str
    rows_deleted: int = 0
    """Rows deleted batch by batch (in a dry run: rows that would be deleted)."""
    partitions_dropped: list[str] = field(default_factory=list)
    """Partitions entirely older than the cutoff, detached and dropped (dry run: would be)."""
    partition_rows: int = 0
    """Rows in those partitions (counted in a dry run only; a drop does not count them)."""
    rows_archived: int = 0
    batches: int = 0
    slowest_batch_seconds: float = 0.0
    retries: int = 0
    vacuumed: bool = False
    finished: bool = False


@dataclass
class DatabaseReport:
    database: str
    dry_run: bool
    cutoff: str
    started_at: str
    duration_seconds: float = 0.0
    tables: list[TableReport] = field(default_factory=list)
    cut_short: bool = False
    """The maintenance window closed before the run finished; the next run continues."""
    error: str | None = None

    @property
    def outcome(self) -> Outcome:
        if self.error is not None:
            return "failed"
        return "cut_short" if self.cut_short else "ok"

    @property
    def rows_deleted(self) -> int:
        return sum(table.rows_deleted for table in self.tables)

    @property
    def batches(self) -> int:
        return sum(table.batches for table in self.tables)

    @property
    def slowest_batch_seconds(self) -> float:
        return max((table.slowest_batch_seconds for table in self.tables), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome
        data["rows_deleted"] = self.rows_deleted
        data["batches"] = self.batches
        data["slowest_batch_seconds"] = self.slowest_batch_seconds
        return data


@dataclass
class RunReport:
    databases: list[DatabaseReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(database.outcome != "failed" for database in self.databases)

    def to_json(self) -> str:
        return json.dumps({"databases": [d.to_dict() for d in self.databases]}, indent=2)

    def to_text(self) -> str:
        if not self.databases:
            return "retention: no enabled database in the config"
        lines: list[str] = []
        for database in self.databases:
            verb = "would delete" if database.dry_run else "deleted"
            head = (
                f"{database.database}: {database.outcome}"
                f"{' (dry run)' if database.dry_run else ''}, cutoff {database.cutoff}, "
                f"{verb} {database.rows_deleted} rows in {database.duration_seconds:.1f}s"
            )
            if not database.dry_run:
                head += (
                    f", {database.batches} batches, slowest "
                    f"{database.slowest_batch_seconds * 1000:.0f} ms"
                )
            lines.append(head)
            if database.cut_short:
                lines.append("  the maintenance window closed; the next run continues")
            if database.error:
                lines.append(f"  error: {database.error}")
            for table in database.tables:
                detail = f"  {table.table}: {verb} {table.rows_deleted} rows"
                if table.partitions_dropped:
                    dropped = "would drop" if database.dry_run else "dropped"
                    detail += f"; {dropped} {len(table.partitions_dropped)} partition(s) "
                    detail += f"({', '.join(table.partitions_dropped)})"
                    if database.dry_run:
                        detail += f" holding {table.partition_rows} rows"
                if table.rows_archived:
                    detail += f"; archived {table.rows_archived}"
                if table.retries:
                    detail += f"; {table.retries} batch retries"
                if table.vacuumed:
                    detail += "; vacuumed"
                lines.append(detail)
        return "\n".join(lines)
