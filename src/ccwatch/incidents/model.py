"""The incident record as the store keeps it and the API shows it (README, "Tickets")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccwatch.incidents.lifecycle import ActiveIncident, State
from ccwatch.severity import Severity

if TYPE_CHECKING:
    from ccwatch.state import Row


def rfc3339(timestamp: float | None) -> str | None:
    """Epoch seconds → ``2026-11-23T10:00:00Z`` (UTC, to the millisecond when not whole)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float
    change: str
    severity: Severity
    state: str
    production_loss: float
    detail: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "change": self.change,
            "severity": self.severity.label,
            "state": self.state,
            "production_loss": round(self.production_loss, 6),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    """One row of ``incidents``; times are epoch seconds."""

    id: str
    site: str
    component: str
    kind: str
    severity: Severity
    peak_severity: Severity
    state: State
    production_loss: float
    peak_loss: float
    impact: str
    opened_at: float
    updated_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    first_response_due: float | None = None
    resolution_due: float | None = None
    rca_due: float | None = None
    seq: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def priority(self) -> str:
        return self.severity.priority

    @property
    def dedup_key(self) -> str:
        """One per incident, stable across restarts and retries: upstreams dedupe on it."""
        return f"ccwatch:{self.site}:{self.component}:{self.id}"

    @property
    def summary(self) -> str:
        """One line for a ticket title, e.g. ``P1 critical: acd at blr1: 23 of 100 …``."""
        return (
            f"{self.priority} {self.severity.label}: {self.component} at {self.site}: {self.impact}"
        )

    @property
    def metrics(self) -> dict[str, Any]:
        value = self.data.get("metrics", {})
        return value if isinstance(value, dict) else {}

    @classmethod
    def from_row(cls, row: Row) -> Incident:
        return cls(
            id=row["id"],
            site=row["site"],
            component=row["component"],
            kind=row["kind"],
            severity=Severity(row["severity"]),
            peak_severity=Severity(row["peak_severity"]),
            state=row["state"],
            production_loss=row["production_loss"],
            peak_loss=row["peak_loss"],
            impact=row["impact"],
            opened_at=row["opened_at"],
            updated_at=row["updated_at"],
            acknowledged_at=row["acknowledged_at"],
            acknowledged_by=row["acknowledged_by"],
            resolved_at=row["resolved_at"],
            first_response_due=row["first_response_due"],
            resolution_due=row["resolution_due"],
            rca_due=row["rca_due"],
            seq=row["seq"],
            data=json.loads(row["data"] or "{}"),
        )

    def as_active(self) -> ActiveIncident:
        """The lifecycle's view, to continue this incident after a restart."""
        return ActiveIncident(
            id=self.id,
            site=self.site,
            component=self.component,
            kind=self.kind,
            severity=self.severity,
            state=self.state,
            production_loss=self.production_loss,
            peak_loss=self.peak_loss,
            peak_severity=self.peak_severity,
            impact=self.impact,
            opened_at=self.opened_at,
            updated_at=self.updated_at,
            acknowledged=self.acknowledged_at is not None,
            resolved_at=self.resolved_at,
            metrics=self.metrics,
            nodata_since=_number(self.data.get("nodata_since")),
            reopen_count=int(_number(self.data.get("reopen_count")) or 0),
            affected=_names(self.data.get("affected_components")),
            nodata_spans=_spans(self.data.get("nodata_spans")),
            waiting_since=_number(self.data.get("waiting_since")),
            waiting_spans=_spans(self.data.get("waiting_spans")),
            calls=_calls(self.data.get("calls")),
        )

    def sla(self) -> dict[str, str | None]:
        return {
            "first_response_due": rfc3339(self.first_response_due),
            "resolution_due": rfc3339(self.resolution_due),
            "rca_due": rfc3339(self.rca_due),
        }

    def to_api(self, timeline: list[TimelineEntry] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "site": self.site,
            "component": self.component,
            "kind": self.kind,
            "severity": self.severity.label,
            "priority": self.priority,
            "state": self.state,
            "production_loss": round(self.production_loss, 6),
            "peak_loss": round(self.peak_loss, 6),
            "peak_severity": self.peak_severity.label,
            "impact": self.impact,
            "summary": self.summary,
            "dedup_key": self.dedup_key,
            "opened_at": rfc3339(self.opened_at),
            "updated_at": rfc3339(self.updated_at),
            "acknowledged_at": rfc3339(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": rfc3339(self.resolved_at),
            "sla": self.sla(),
            "seq": self.seq,
            "metrics": self.metrics,
            # Maintenance windows and SLA exemption (README, "Maintenance windows").
            "in_maintenance": bool(self.data.get("in_maintenance")),
            "maintenance": self.data.get("maintenance"),
            "upstream_deferred": bool(self.data.get("upstream_deferred")),
            "sla_exempt": self.data.get("sla_exempt"),
            # One ticket per fault: components whose faults joined this incident.
            "affected_components": list(_names(self.data.get("affected_components"))),
            "site_wide": bool(self.data.get("site_wide")),
            # A service desk says the vendor waits on us (the resolution clock holds).
            "waiting_since": rfc3339(_number(self.data.get("waiting_since"))),
        }
        if timeline is not None:
            body["timeline"] = [entry.to_api() for entry in timeline]
        return body


def _spans(value: object) -> tuple[tuple[float, float], ...]:
    """Hold spans ``[[start, end], ...]`` from the record's data (anything else: none)."""
    if not isinstance(value, list):
        return ()
    found: list[tuple[float, float]] = []
    for item in value:
        if isinstance(item, list) and len(item) == 2:
            start, end = _number(item[0]), _number(item[1])
            if start is not None and end is not None:
                found.append((start, end))
    return tuple(found)


def _calls(value: object) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    numbers = {str(k): _number(v) for k, v in value.items()}
    return {k: v for k, v in numbers.items() if v is not None} or None


def _names(value: object) -> tuple[str, ...]:
    """A list of component names from the record's data (anything else: none)."""
    if not isinstance(value, list):
        return ()
    return tuple(str(name) for name in value if isinstance(name, str))
