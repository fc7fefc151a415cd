"""How jobs outside the MQTT pipeline (checklist, retention) raise and clear incidents.

The incident service implements this protocol; jobs receive it as a constructor
argument and never import the incident machinery. ``RecordingIncidents`` is the
in-package implementation tests use to see what a job reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ccwatch.severity import Severity


class ExternalIncidents(Protocol):
    async def report(
        self,
        *,
        component: str,
        kind: str,
        severity: Severity,
        impact: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Open (or update) the one incident of this component+kind."""

    async def clear(self, *, component: str, kind: str) -> None:
        """Resolve the incident of this component+kind, if one is open."""


@dataclass
class RecordingIncidents:
    """Keeps what was reported, newest last; ``open`` maps (component, kind) to the report."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    open: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def report(
        self,
        *,
        component: str,
        kind: str,
        severity: Severity,
        impact: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        entry = {
            "component": component,
            "kind": kind,
            "severity": severity,
            "impact": impact,
            "detail": detail or {},
        }
        self.reports.append(entry)
        self.open[(component, kind)] = entry

    async def clear(self, *, component: str, kind: str) -> None:
        self.open.pop((component, kind), None)
