"""What a check returns (``Outcome``) and what a checklist run produced (``ChecklistRun``)."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(enum.StrEnum):
    """``ok`` < ``skipped`` < ``warn`` < ``fail`` < ``error`` in how loudly a report shows them."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def metric_value(self) -> int | None:
        """The value of ``ccwatch_checklist_check_status``; skipped checks have no series."""
        return {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3}.get(self)

    @property
    def report_rank(self) -> int:
        """Failures first, then errors, warnings, skipped and passed checks."""
        order = (Status.FAIL, Status.ERROR, Status.WARN, Status.SKIPPED, Status.OK)
        return order.index(self)


@dataclass(frozen=True)
class Outcome:
    """What one check found: a status, the measured value beside its threshold, and a hint.

    ``value`` and ``threshold`` are short human strings ("8.2% free", "at least 10% free");
    ``hint`` says what to do about a problem (the runner drops it from passing checks);
    ``detail`` holds extra lines (command output, stale components).
    """

    status: Status
    value: str = ""
    threshold: str = ""
    hint: str = ""
    detail: str = ""

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls(Status.SKIPPED, value=reason)


@dataclass(frozen=True)
class CheckResult:
    id: str
    type: str
    description: str
    status: Status
    value: str
    threshold: str
    hint: str
    detail: str
    duration_seconds: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class ChecklistRun:
    checklist: str
    site: str
    started_at: float
    duration_seconds: float
    results: list[CheckResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[Status, int]:
        counted = Counter(result.status for result in self.results)
        return {status: counted.get(status, 0) for status in Status}

    @property
    def failed(self) -> bool:
        """True when a check failed or could not run: what makes the CLI exit 1."""
        counts = self.counts
        return counts[Status.FAIL] + counts[Status.ERROR] > 0

    def ordered(self) -> list[CheckResult]:
        """Failures first (the order of the checklist file within each status)."""
        return sorted(self.results, key=lambda result: result.status.report_rank)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checklist": self.checklist,
            "site": self.site,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 3),
            "counts": {status.value: count for status, count in self.counts.items()},
            "results": [result.as_dict() for result in self.ordered()],
        }
