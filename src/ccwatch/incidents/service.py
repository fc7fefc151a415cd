"""The incident service: the lifecycle's decisions made durable, and the incident API.

``IncidentService`` owns the site's ``Lifecycle`` (pure) and writes every transition
through the repository (incident + timeline + outbox in one transaction). It is also
what other features call:

- ``acknowledge(incident_id, by)`` — the ack flow (API/CLI of the tickets feature);
- ``record_event(incident_id, event, change, ...)`` — e.g. an SLA escalation step;
- ``report(...)`` / ``clear(...)`` — ``ExternalIncidents`` for the checklist and
  retention jobs (no holds: a job's result is already a decision);
- ``event_extras`` — a hook ``(incident, event) -> {"sla": …, "diagnostics": …}`` merged
  into every outbox body (sync or async), set at construction or later;
- ``add_listener(fn)`` — called with ``(incident, change)`` after each committed change
  (wake the outbox dispatcher, measure latency in the bench).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.events import EventExtras
from ccwatch.incidents.external import ExternalIncidents
from ccwatch.incidents.lifecycle import (
    Lifecycle,
    LifecycleSettings,
    Observation,
    Transition,
    new_incident_id,
)
from ccwatch.incidents.model import Incident
from ccwatch.incidents.store import StateStore
from ccwatch.metrics import shared_metrics
from ccwatch.severity import Severity

logger = logging.getLogger(__name__)

Listener = Callable[[Incident, str], None]


class IncidentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "ccwatch_incidents_open",
            "Incidents not resolved (open, acknowledged or nodata), by severity",
            ["severity"],
            registry=registry,
        )
        self.changes = Counter(
            "ccwatch_incident_changes_total",
            "Incident changes written to the state database, by change",
            ["change"],
            registry=registry,
        )
        self.write_failures = Counter(
            "ccwatch_incident_write_failures_total",
            "Incident changes that could not be written to the state database",
            registry=registry,
        )
        for severity in (Severity.MINOR, Severity.MAJOR, Severity.CRITICAL):
            self.open.labels(severity=severity.label).set(0)


def lifecycle_settings(config: Config) -> LifecycleSettings:
    classification = config.classification
    return LifecycleSettings(
        open_after=classification.open_after.total_seconds(),
        resolve_after=classification.resolve_after.total_seconds(),
        stale_after=classification.stale_after.total_seconds(),
    )


class IncidentService:
    """See the module docstring. Call ``await load()`` (or ``load_sync()``) once first."""

    def __init__(
        self,
        store: StateStore,
        config: Config,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        event_extras: EventExtras | None = None,
        new_id: Callable[[], str] = new_incident_id,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.event_extras = event_extras
        self._new_id = new_id
        self.metrics = shared_metrics(IncidentMetrics, registry)
        self.lifecycle = Lifecycle(config.site, lifecycle_settings(config), new_id)
        self._listeners: list[Listener] = []
        # Unresolved incidents by id -> severity, for ccwatch_incidents_open.
        self._open: dict[str, Severity] = {}
        # Transitions of one incident must reach the database in the order they happened;
        # the pipeline and the ticker both write, so writes take turns.
        self._write_lock = asyncio.Lock()

    # --- set-up ---------------------------------------------------------------------

    def load_sync(self) -> int:
        """Continue the unresolved incidents in the store; returns how many."""
        incidents = self.store.run_sync(
            lambda conn: repository.active_incidents(conn, self.config.site)
        )
        self.lifecycle = Lifecycle(self.config.site, lifecycle_settings(self.config), self._new_id)
        self.lifecycle.restore((i.as_active() for i in incidents), self.clock())
        self._open = {i.id: i.severity for i in incidents}
        self._update_open_gauge()
        if incidents:
            logger.info(
                "continuing %d unresolved incident(s): %s",
                len(incidents),
                ", ".join(f"{i.component} {i.severity.label} {i.state}" for i in incidents),
            )
        return len(incidents)

    async def load(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self.load_sync)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: new thresholds and holds apply from now, incidents continue."""
        self.config = config
        self.lifecycle.settings = lifecycle_settings(config)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # --- the pipeline's side ------------------------------------------------------------

    def observe(self, component: str, observation: Observation, now: float) -> list[Transition]:
        """Feed one classified measurement (sync); ``apply`` the transitions it returns."""
        return self.lifecycle.observe(component, observation, now)

    async def tick(self, now: float | None = None) -> list[Transition]:
        transitions = self.lifecycle.tick(self.clock() if now is None else now)
        if transitions:
            await self.apply(transitions)
        return transitions

    async def run_ticker(self, interval: float = 1.0) -> None:
        """Staleness, telemetry-lost and holds that finish between messages."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("incident ticker failed (a ccwatch bug); continuing")

    async def apply(self, transitions: list[Transition]) -> None:
        """Write transitions in order; a failed write is logged and counted, never raised."""
        async with self._write_lock:
            for transition in transitions:
                await self._write(transition)

    async def _write(self, transition: Transition) -> None:
        upstreams = self.config.tickets
        event = transition.event
        try:
            extras = None
            if event is not None and self.event_extras is not None:
                stored = await self.store.run(
                    lambda conn: repository.load_incident(conn, transition.incident.id)
                )
                preview = repository.merge_active(stored, transition.incident)
                preview = replace(preview, seq=preview.seq + 1)
                extras = await self._extras(preview, event)
            incident = await self.store.run(
                lambda conn: repository.write_transition(conn, transition, upstreams, extras)
            )
        except (sqlite3.Error, OSError) as exc:
            self.metrics.write_failures.inc()
            logger.error(
                "could not save incident %s (%s %s): %s; check the state database at %s",
                transition.incident.id,
                transition.incident.component,
                transition.change,
                exc,
                self.store.path,
            )
            return
        if transition.change != "loss":
            self.metrics.changes.labels(change=transition.change).inc()
            logger.info(
                "incident %s %s: %s %s (%s), %s",
                incident.id[:8],
                transition.change,
                incident.component,
                incident.severity.label,
                incident.state,
                incident.impact,
            )
        self._committed(incident, transition.change)

    async def _extras(self, incident: Incident, event: str) -> Mapping[str, Any] | None:
        if self.event_extras is None:
            return None
        try:
            result = self.event_extras(incident, event)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            # The ticket must still go out: without extras rather than not at all.
            logger.exception(
                "event_extras hook failed for incident %s; sending without", incident.id
            )
            return None

    def _committed(self, incident: Incident, change: str) -> None:
        if incident.state == "resolved":
            self._open.pop(incident.id, None)
        else:
            self._open[incident.id] = incident.severity
        self._update_open_gauge()
        for listener in self._listeners:
            try:
                listener(incident, change)
            except Exception:
                logger.exception("incident listener failed")

    def _update_open_gauge(self) -> None:
        counts = dict.fromkeys((Severity.MINOR, Severity.MAJOR, Severity.CRITICAL), 0)
        for severity in self._open.values():
            if severity in counts:
                counts[severity] += 1
        for severity, count in counts.items():
            self.metrics.open.labels(severity=severity.label).set(count)

    # --- the repository API for other features ----------------------------------------

    async def get(self, incident_id: str) -> Incident | None:
        return await self.store.run(lambda conn: repository.load_incident(conn, incident_id))

    async def list_incidents(self, state: str | None = None) -> list[Incident]:
        return await self.store.run(lambda conn: repository.list_incidents(conn, state=state))

    async def acknowledge(self, incident_id: str, by: str, now: float | None = None) -> Incident:
        """Acknowledge (timeline + ``update`` event). Raises ``UnknownIncidentError`` or
        ValueError (resolved)."""
        at = self.clock() if now is None else now
        async with self._write_lock:
            stored = await self.get(incident_id)
            if stored is None:
                raise repository.UnknownIncidentError(incident_id)
            extras = None
            if stored.acknowledged_at is None and stored.state != "resolved":
                preview = replace(
                    stored, acknowledged_at=at, acknowledged_by=by, seq=stored.seq + 1
                )
                extras = await self._extras(preview, "update")
            upstreams = self.config.tickets
            incident = await self.store.run(
                lambda conn: repository.acknowledge(conn, incident_id, by, at, upstreams, extras)
            )
            self.lifecycle.acknowledge(incident_id, at)
            self._committed(incident, "acknowledged")
            return incident

    async def record_event(
        self,
        incident_id: str,
        event: str,
        change: str,
        *,
        detail: str = "",
        updates: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> Incident:
        """Timeline entry + ``event`` to the routed upstreams (e.g. an SLA escalation)."""
        at = self.clock() if now is None else now
        async with self._write_lock:
            stored = await self.get(incident_id)
            if stored is None:
                raise repository.UnknownIncidentError(incident_id)
            extras = await self._extras(replace(stored, **dict(updates or {})), event)
            upstreams = self.config.tickets
            incident = await self.store.run(
                lambda conn: repository.record_event(
                    conn, incident_id, event, change, at, upstreams, extras, detail, updates
                )
            )
            self._committed(incident, change)
            return incident

    # --- ExternalIncidents (checklist, retention) ---------------------------------------

    async def report(
        self,
        *,
        component: str,
        kind: str,
        severity: Severity,
        impact: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if severity == Severity.NONE:
            await self.clear(component=component, kind=kind)
            return
        now = self.clock()
        site = self.config.site
        async with self._write_lock:
            existing = await self.store.run(
                lambda conn: repository.find_active(conn, site, component, kind)
            )
            data = {"detail": detail or {}}
            if existing is None:
                incident = Incident(
                    id=self._new_id(),
                    site=site,
                    component=component,
                    kind=kind,
                    severity=severity,
                    peak_severity=severity,
                    state="open",
                    production_loss=0.0,
                    peak_loss=0.0,
                    impact=impact,
                    opened_at=now,
                    updated_at=now,
                    data=data,
                )
                change, event = "opened", "open"
            elif severity == existing.severity:
                # A job re-reporting the same finding refreshes it without a new event.
                refreshed = replace(existing, impact=impact, updated_at=now, data=data)
                await self.store.run(lambda conn: repository.save_incident(conn, refreshed))
                return
            else:
                incident = replace(
                    existing,
                    severity=severity,
                    peak_severity=max(existing.peak_severity, severity),
                    impact=impact,
                    updated_at=now,
                    data=data,
                )
                escalated = severity > existing.severity
                change, event = (
                    ("escalated", "escalate") if escalated else ("de-escalated", "update")
                )
            await self._write_external(incident, change, event, now)

    async def clear(self, *, component: str, kind: str) -> None:
        now = self.clock()
        site = self.config.site
        async with self._write_lock:
            existing = await self.store.run(
                lambda conn: repository.find_active(conn, site, component, kind)
            )
            if existing is None:
                return
            resolved = replace(existing, state="resolved", resolved_at=now, updated_at=now)
            await self._write_external(resolved, "resolved", "resolve", now)

    async def _write_external(
        self, incident: Incident, change: str, event: str, now: float
    ) -> None:
        preview = replace(incident, seq=incident.seq + 1)
        extras = await self._extras(preview, event)
        upstreams = self.config.tickets
        written = await self.store.run(
            lambda conn: repository.external_change(
                conn, incident, change, event, now, upstreams, extras
            )
        )
        self.metrics.changes.labels(change=change).inc()
        logger.info(
            "incident %s %s: %s/%s %s, %s",
            written.id[:8],
            change,
            written.component,
            written.kind,
            written.severity.label,
            written.impact,
        )
        self._committed(written, change)


if TYPE_CHECKING:
    # mypy checks here that the service keeps implementing the protocol jobs rely on.
    _implements_external: type[ExternalIncidents] = IncidentService
