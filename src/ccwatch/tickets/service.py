"""How tickets join the daemon: the outbox dispatcher, the SLA watcher and the body hook.

``ticket_services(runtime)`` (called by ``app.build_services`` each config generation):

- teaches the process-wide redactor the configured secrets;
- plugs ``TicketExtras`` into the incident service (SLA due times in every body, host
  facts and a log excerpt in ``open`` bodies) and wakes the dispatcher after each
  committed incident change;
- runs ``OutboxDispatcher`` over the enabled upstreams (plus ``escalation-email`` when
  an escalation level names addresses) and ``SlaWatcher``.

``SlaWatcher`` evaluates the unresolved (and recently resolved, for the RCA clock)
incidents every few seconds with the pure functions of ``ccwatch.sla``. It stores the
due times on the incident, counts each breach once, and writes each escalation step as
one transaction: the step's name in ``incidents.data["sla_sent"]``, a timeline entry and
one outbox row per target. Because the record of "sent" and the outbox rows commit
together, a step goes out exactly once, across crashes and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.events import event_body
from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.incidents.service import IncidentService
from ccwatch.incidents.store import StateStore, transaction
from ccwatch.metrics import shared_metrics
from ccwatch.redact import configure as configure_redaction
from ccwatch.redact import secrets_from_config
from ccwatch.runtime import Runtime
from ccwatch.sla import (
    CLOCK_KINDS,
    Clock,
    EscalationStep,
    IncidentTimes,
    clocks,
    due_times,
    escalations_due,
)
from ccwatch.tickets.adapters import ESCALATION_EMAIL, AdapterContext, build_adapters
from ccwatch.tickets.diagnostics import DiagnosticsLimits, HostProbe, collect_diagnostics
from ccwatch.tickets.outbox import OutboxDispatcher, RetryPolicy, notify_new_events

logger = logging.getLogger(__name__)

Service = Coroutine[Any, Any, None]
SLA_INTERVAL_SECONDS = 5.0
RCA_LOOKBACK = timedelta(days=30)  # resolved incidents still watched for their RCA clock
DIAGNOSTICS_TIMEOUT = 3.0
SENT_KEY = "sla_sent"  # incidents.data key: escalation levels and breaches already recorded

_STEP_EVENT = {"warning": "sla_warning", "rca_breach": "rca_due"}


def _dt(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def incident_times(incident: Incident) -> IncidentTimes:
    rca_done = incident.data.get("rca_done_at")
    return IncidentTimes(
        severity=incident.severity,
        opened_at=datetime.fromtimestamp(incident.opened_at, UTC),
        acknowledged_at=_dt(incident.acknowledged_at),
        resolved_at=_dt(incident.resolved_at),
        rca_done_at=_dt(rca_done) if isinstance(rca_done, int | float) else None,
    )


def sla_body(config: Config, incident: Incident) -> dict[str, str | None]:
    """The body's ``sla`` object: due times from the policy (RFC 3339, UTC)."""
    due = due_times(config.sla, incident_times(incident))
    return {
        f"{kind}_due": rfc3339(moment.timestamp()) if moment else None
        for kind, moment in due.items()
    }


class TicketExtras:
    """The incident service's ``event_extras`` hook: SLA due times always, diagnostics
    (metric window, host facts, log excerpt) on ``open``."""

    def __init__(
        self,
        config: Config,
        probe: HostProbe | None = None,
        limits: DiagnosticsLimits | None = None,
    ) -> None:
        self.config = config
        self.probe = probe or HostProbe()
        self.limits = limits or DiagnosticsLimits()

    def sla_only(self, incident: Incident, event: str) -> dict[str, Any]:
        return {"sla": sla_body(self.config, incident)}

    def diagnostics(self, incident: Incident) -> dict[str, Any]:
        component = self.config.components.get(incident.component)
        return collect_diagnostics(
            metrics=incident.metrics,
            process_names=component.processes if component else [],
            log_files=component.log_files if component else [],
            probe=self.probe,
            limits=self.limits,
        )

    async def __call__(self, incident: Incident, event: str) -> dict[str, Any]:
        extras = self.sla_only(incident, event)
        if event == "open":
            try:
                extras["diagnostics"] = await asyncio.wait_for(
                    asyncio.to_thread(self.diagnostics, incident), DIAGNOSTICS_TIMEOUT
                )
            except TimeoutError:
                logger.warning(
                    "diagnostics for incident %s took over %.0fs; the ticket goes without them",
                    incident.id,
                    DIAGNOSTICS_TIMEOUT,
                )
        return extras


# --- SLA watcher -------------------------------------------------------------------


class SlaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaches = Counter(
            "ccwatch_sla_breaches",
            "SLA clocks that ran past their due time, by clock and severity",
            ["kind", "severity"],
            registry=registry,
        )
        self.remaining = Gauge(
            "ccwatch_incident_sla_remaining_seconds",
            "Business time left on each running SLA clock (negative once breached)",
            ["incident", "kind"],
            registry=registry,
        )
        self.escalations = Counter(
            "ccwatch_sla_escalations",
            "Escalation steps sent, by level name",
            ["level"],
            registry=registry,
        )


class SlaWatcher:
    """Evaluates SLA clocks and escalation (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        config: Config,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        on_written: Callable[[], None] = notify_new_events,
        interval: float = SLA_INTERVAL_SECONDS,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.on_written = on_written
        self.interval = interval
        self.metrics = shared_metrics(SlaMetrics, registry)
        self._gauged: set[tuple[str, str]] = set()
        self._upstreams = {u.upstream_name for u in config.tickets if u.enabled}
        self._wakeup: asyncio.Event | None = None
        self._dirty: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        _watchers.add(self)

    def wake(self, incident_id: str) -> None:
        """An incident changed: evaluate it now (its due times show at once)."""
        if self._loop is None or self._wakeup is None or self._loop.is_closed():
            return
        self._dirty.add(incident_id)
        self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        next_full = 0.0
        while True:
            self._wakeup.clear()
            # Every `interval` all watched incidents; in between only the changed ones.
            full = time.monotonic() >= next_full
            only, self._dirty = (None, set()) if full else (self._dirty, set())
            if full:
                next_full = time.monotonic() + self.interval
            try:
                await self.evaluate(only=only)
            except (sqlite3.Error, OSError) as exc:
                logger.error("SLA watcher cannot read the state database: %s; retrying", exc)
            except Exception:
                logger.exception("SLA watcher failed (a ccwatch bug); continuing")
            timeout = max(0.0, next_full - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def evaluate(
        self, now: float | None = None, only: Collection[str] | None = None
    ) -> list[str]:
        """One pass over the watched incidents (or ``only`` these ids); returns the
        escalation steps sent as ``<incident id>:<level>``."""
        at = self.clock() if now is None else now
        if not self.config.sla.enabled:
            return []
        since = at - RCA_LOOKBACK.total_seconds()
        incidents = await self.store.run(
            lambda c: _watched_incidents(c, self.config.site, since, only)
        )
        sent: list[str] = []
        gauged: set[tuple[str, str]] = set()
        moment = datetime.fromtimestamp(at, UTC)
        for incident in incidents:
            times = incident_times(incident)
            running = clocks(self.config.sla, times, moment)
            for clock in running:
                if clock.running:
                    labels: tuple[str, str] = (incident.id, clock.kind)
                    self.metrics.remaining.labels(*labels).set(clock.remaining.total_seconds())
                    gauged.add(labels)
            already = set(_sent_names(incident))
            breaches = [c for c in running if c.breached and f"breach:{c.kind}" not in already]
            steps = escalations_due(self.config.sla, self.config.escalation, times, moment, already)
            due = {f"{kind}_due": _epoch(clock_due(running, kind)) for kind in CLOCK_KINDS}
            if not breaches and not steps and _same_due(incident, due):
                continue
            write = functools.partial(self._write, incident_id=incident.id, breaches=breaches)
            written = await self.store.run(functools.partial(write, steps=steps, due=due, now=at))
            for breach in written[0]:
                self.metrics.breaches.labels(
                    kind=breach.kind, severity=incident.severity.label
                ).inc()
                logger.warning(
                    "incident %s (%s %s): %s SLA breached (was due %s)",
                    incident.id[:8],
                    incident.component,
                    incident.severity.label,
                    breach.kind.replace("_", " "),
                    rfc3339(breach.due_at.timestamp()),
                )
            for step in written[1]:
                self.metrics.escalations.labels(level=step.name).inc()
                sent.append(f"{incident.id}:{step.name}")
                logger.warning(
                    "incident %s escalated to %s (%s)", incident.id[:8], step.name, step.trigger
                )
            if written[1]:
                self.on_written()
        if only is not None:
            stale = {labels for labels in self._gauged if labels[0] in only} - gauged
            self._gauged = (self._gauged - stale) | gauged
        else:
            stale, self._gauged = self._gauged - gauged, gauged
        for labels in stale:
            with contextlib.suppress(KeyError):
                self.metrics.remaining.remove(*labels)
        return sent

    def _write(
        self,
        conn: sqlite3.Connection,
        incident_id: str,
        breaches: list[Clock],
        steps: list[EscalationStep],
        due: Mapping[str, float | None],
        now: float,
    ) -> tuple[list[Clock], list[EscalationStep]]:
        """Due times, breaches and escalation steps of one incident, in one transaction."""
        with transaction(conn):
            incident = repository.load_incident(conn, incident_id)
            if incident is None:
                return [], []
            already = set(_sent_names(incident))
            new_breaches = [b for b in breaches if f"breach:{b.kind}" not in already]
            new_steps = [s for s in steps if s.name not in already]
            names = [f"breach:{b.kind}" for b in new_breaches] + [s.name for s in new_steps]
            incident = replace(
                incident,
                first_response_due=due["first_response_due"],
                resolution_due=due["resolution_due"],
                rca_due=due["rca_due"],
                data={**incident.data, SENT_KEY: [*_sent_names(incident), *names]},
            )
            for breach in new_breaches:
                detail = (
                    f"{breach.kind.replace('_', ' ')} was due {rfc3339(breach.due_at.timestamp())}"
                )
                repository.append_timeline(conn, incident, "sla_breach", now, detail)
            for step in new_steps:
                incident = replace(incident, seq=incident.seq + 1)
                targets = self._targets(step)
                detail = (
                    f"{step.name} ({step.trigger.replace('_', ' ')}), "
                    f"notified: {', '.join([*step.email, *targets]) or 'nobody'}"
                )
                repository.append_timeline(conn, incident, "sla_escalation", now, detail)
                self._enqueue(conn, incident, step, targets, now)
            repository.save_incident(conn, incident)
        return new_breaches, new_steps

    def _targets(self, step: EscalationStep) -> list[str]:
        targets: list[str] = []
        if step.upstream and step.upstream in self._upstreams:
            targets.append(step.upstream)
        if step.email and self.config.email is not None:
            targets.append(ESCALATION_EMAIL)
        return targets

    def _enqueue(
        self,
        conn: sqlite3.Connection,
        incident: Incident,
        step: EscalationStep,
        targets: list[str],
        now: float,
    ) -> None:
        kind = "warning" if step.trigger.endswith("_warning") else step.trigger
        event = _STEP_EVENT.get(kind, "escalate")
        extras = {"sla": sla_body(self.config, incident), "escalation": step.as_dict()}
        body = json.dumps(event_body(incident, event, extras), separators=(",", ":"), default=str)
        key = f"{incident.dedup_key}:{incident.seq}"
        conn.executemany(
            "INSERT OR IGNORE INTO outbox (upstream, incident_id, seq, event, idempotency_key,"
            " body, created_at, status, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            [(name, incident.id, incident.seq, event, key, body, now, now) for name in targets],
        )


def clock_due(running: list[Clock], kind: str) -> datetime | None:
    return next((clock.due_at for clock in running if clock.kind == kind), None)


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _same_due(incident: Incident, due: Mapping[str, float | None]) -> bool:
    stored = {
        "first_response_due": incident.first_response_due,
        "resolution_due": incident.resolution_due,
        "rca_due": incident.rca_due,
    }
    for key, value in due.items():
        old = stored[key]
        if (old is None) != (value is None) or (
            old is not None and value is not None and abs(old - value) > 0.001
        ):
            return False
    return True


def _sent_names(incident: Incident) -> list[str]:
    names = incident.data.get(SENT_KEY) or []
    return [str(name) for name in names] if isinstance(names, list) else []


def _watched_incidents(
    conn: sqlite3.Connection, site: str, since: float, only: Collection[str] | None
) -> list[Incident]:
    query = "SELECT * FROM incidents WHERE site = ? AND (state != 'resolved' OR resolved_at >= ?)"
    params: list[Any] = [site, since]
    if only is not None:
        if not only:
            return []
        query += f" AND id IN ({', '.join('?' for _ in only)})"
        params.extend(only)
    rows = conn.execute(query + " ORDER BY opened_at", params).fetchall()
    return [Incident.from_row(row) for row in rows]


# --- wiring ------------------------------------------------------------------------

_listening: weakref.WeakSet[IncidentService] = weakref.WeakSet()
_watchers: weakref.WeakSet[SlaWatcher] = weakref.WeakSet()


def _on_incident_change(incident: Incident, change: str) -> None:
    notify_new_events()
    if change != "loss":
        for watcher in list(_watchers):
            watcher.wake(incident.id)


def ticket_services(runtime: Runtime) -> dict[str, Service]:
    """The dispatcher and the SLA watcher of one config generation."""
    config = runtime.config
    configure_redaction(secrets_from_config(config))
    incidents = runtime.incidents
    if incidents is not None:
        incidents.event_extras = TicketExtras(config)
        if incidents not in _listening:
            incidents.add_listener(_on_incident_change)
            _listening.add(incidents)
    context = AdapterContext(site=config.site, clock=runtime.clock, email=config.email)
    wants_mail = config.escalation.enabled and any(lvl.email for lvl in config.escalation.levels)
    adapters = build_adapters(config.tickets, context, escalation_email=wants_mail)
    services: dict[str, Service] = {}
    if adapters:
        retry = {
            u.upstream_name: RetryPolicy(cap=u.retry_max.total_seconds())
            for u in config.tickets
            if u.enabled
        }
        dispatcher = OutboxDispatcher(
            runtime.store,
            adapters,
            registry=runtime.registry,
            retry=retry,
            readiness=runtime.readiness,
            clock=runtime.clock,
        )
        services["outbox"] = dispatcher.run()
    if config.sla.enabled:
        watcher = SlaWatcher(runtime.store, config, runtime.registry, runtime.clock)
        services["sla"] = watcher.run()
    return services
