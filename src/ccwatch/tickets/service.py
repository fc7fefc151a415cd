"""SLA clocks and escalation, and what tickets add to incident events.

- ``SlaBody``: the ``body_extras`` the incident service puts in every event body (the
  SLA due times; pure arithmetic, run inside the write transaction).
- ``DiagnosticsGatherer``: the slow part of an ``open`` ticket (metric window, host
  facts, log excerpt), which the incident service gathers after the commit, on its own
  threads, with a deadline.
- ``SlaWatcher`` evaluates the unresolved (and recently resolved, for the RCA clock)
  incidents every few seconds, and at once for an incident that changed, with the pure
  functions of ``ccwatch.sla``. Due times, breaches and escalation steps are written
  through the incident service's ``note`` (the one write path): a step's name goes into
  ``incidents.data["sla_sent"]`` in the same transaction as its timeline entry and
  outbox rows, so each step goes out exactly once, across crashes and restarts.

``app.py`` builds these and the ``OutboxDispatcher`` and wires them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import DEFERRED_KEY
from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.incidents.service import IncidentService
from ccwatch.incidents.vocabulary import Event
from ccwatch.metrics import shared_metrics
from ccwatch.sla import (
    CLOCK_KINDS,
    SILENT_CLOCKS,
    WAITING_CLOCKS,
    Clock,
    EscalationConfig,
    EscalationStep,
    Hold,
    IncidentFacts,
    IncidentTimes,
    SlaConfig,
    clocks,
    due_times,
    escalations_due,
    reminder_due,
)
from ccwatch.state import STORE_ERRORS, Connection
from ccwatch.tickets.adapters import ESCALATION_EMAIL

if TYPE_CHECKING:
    from ccwatch.tickets.diagnostics import DiagnosticsLimits, HostProbe

logger = logging.getLogger(__name__)

SLA_INTERVAL_SECONDS = 5.0
RCA_LOOKBACK = timedelta(days=30)  # resolved incidents still watched for their RCA clock
SENT_KEY = "sla_sent"  # incidents.data key: escalation levels and breaches already recorded
RCA_DRAFT_KEY = "rca_draft"  # incidents.data key: the RCA draft written on resolve
REMINDER_KEY = "reminder_at"  # incidents.data key: when the last reminder was written

_STEP_EVENT = {"warning": Event.SLA_WARNING, "rca_breach": Event.RCA_DUE}


def _dt(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def _data_time(incident: Incident, key: str) -> datetime | None:
    value = incident.data.get(key)
    return _dt(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _spans(incident: Incident, key: str) -> list[tuple[datetime, datetime]]:
    """Finished hold spans kept in ``incidents.data[key]`` as ``[[start, end], ...]``."""
    found: list[tuple[datetime, datetime]] = []
    value = incident.data.get(key)
    for item in value if isinstance(value, list) else []:
        if (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in item)
        ):
            found.append(
                (datetime.fromtimestamp(item[0], UTC), datetime.fromtimestamp(item[1], UTC))
            )
    return found


def incident_times(incident: Incident) -> IncidentTimes:
    """The SLA view of a record. Holds (docs/architecture.md, "SLA holds"): an SLA
    exemption holds every clock (``sla_exempt_spans`` once lifted, ``sla_exempt_at`` while
    it lasts); a silent component holds first response and resolution (``nodata_spans``,
    ``nodata_since`` while silent); a ticket waiting on the customer holds resolution
    (``waiting_spans``, ``waiting_since``)."""
    silent = incident.state in ("nodata", "expired")
    holds: list[Hold] = []
    for key, clocks_held, reason in (
        ("sla_exempt_spans", frozenset(CLOCK_KINDS), "exempt"),
        ("nodata_spans", SILENT_CLOCKS, "nodata"),
        ("waiting_spans", WAITING_CLOCKS, "waiting_on_customer"),
    ):
        holds.extend(Hold(start, end, clocks_held, reason) for start, end in _spans(incident, key))
    waiting = _data_time(incident, "waiting_since")
    if waiting is not None:
        holds.append(Hold(waiting, None, WAITING_CLOCKS, "waiting_on_customer"))
    closed = None
    if incident.state == "expired":
        closed = _data_time(incident, "closed_at") or _dt(incident.updated_at)
    return IncidentTimes(
        severity=incident.severity,
        opened_at=datetime.fromtimestamp(incident.opened_at, UTC),
        acknowledged_at=_dt(incident.acknowledged_at),
        resolved_at=_dt(incident.resolved_at),
        rca_done_at=_data_time(incident, "rca_done_at"),
        silent_at=_data_time(incident, "nodata_since") if silent else None,
        rca_due_at=_data_time(incident, "rca_deferred_until"),
        sla_start=_data_time(incident, "sla_start"),
        exempt_at=(
            _dt(incident.opened_at)
            if incident.data.get(DEFERRED_KEY)
            else _data_time(incident, "sla_exempt_at")
        ),
        closed_at=closed,
        holds=tuple(holds),
    )


def load_rca_draft(
    conn: Connection, sla: SlaConfig, incident_id: str, now: float
) -> tuple[Incident, str] | None:
    """The incident and its RCA draft (``incidents/rca.py``, loaded with the first draft),
    or None for an unknown id."""
    from ccwatch.incidents.rca import SIMILAR_LOOKBACK, ClockOutcome, rca_draft

    incident = repository.find_by_prefix(conn, incident_id)
    if incident is None:
        return None
    timeline = repository.load_timeline(conn, incident.id)
    since = incident.opened_at - SIMILAR_LOOKBACK.total_seconds()
    similar = repository.component_history(conn, incident.site, incident.component, since)
    moment = datetime.fromtimestamp(now, UTC)
    outcomes = [
        ClockOutcome(
            kind=str(clock.kind),
            due_at=clock.due_at.timestamp() if clock.due_at is not None else None,
            stopped_at=clock.stopped_at.timestamp() if clock.stopped_at else None,
            breached=clock.breached,
        )
        for clock in clocks(sla, incident_times(incident), moment)
    ]
    return incident, rca_draft(incident, timeline, similar, outcomes, now)


def sla_body(sla: SlaConfig, incident: Incident) -> dict[str, str | None]:
    """The body's ``sla`` object: due times from the policy (RFC 3339, UTC)."""
    due = due_times(sla, incident_times(incident))
    return {
        f"{kind}_due": rfc3339(moment.timestamp()) if moment else None
        for kind, moment in due.items()
    }


class SlaBody:
    """``body_extras`` of the incident service: the SLA due times in every event body."""

    def __init__(self, sla: SlaConfig) -> None:
        self.sla = sla

    def __call__(self, incident: Incident, event: Event) -> dict[str, Any]:
        return {"sla": sla_body(self.sla, incident)}


class ComponentSources(Protocol):
    """What diagnostics need of a component's settings (``ComponentConfig`` fits)."""

    @property
    def processes(self) -> Sequence[str]: ...

    @property
    def log_files(self) -> Sequence[Any]: ...


class DiagnosticsGatherer:
    """Seed 003's Tier-1 information for an ``open`` ticket: the metric window, host facts
    and the component's log tail. Blocking (psutil, files): the incident service runs it
    on its own threads with a deadline, after the incident was written. The gathering code
    (``tickets/diagnostics.py``, psutil) is loaded with the first open."""

    def __init__(
        self,
        components: Mapping[str, ComponentSources],
        probe: HostProbe | None = None,
        limits: DiagnosticsLimits | None = None,
    ) -> None:
        self.components = components
        self.probe = probe  # None: the host's (``HostProbe()``)
        self.limits = limits  # None: ``DiagnosticsLimits()``

    def __call__(self, incident: Incident) -> dict[str, Any]:
        from ccwatch.tickets.diagnostics import collect_diagnostics

        component = self.components.get(incident.component)
        return collect_diagnostics(
            metrics=incident.metrics,
            process_names=list(component.processes) if component else [],
            log_files=list(component.log_files) if component else [],
            probe=self.probe,
            limits=self.limits,
        )


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
            "Business time left on the SLA clock of a component's incidents that runs out "
            "first (negative once breached), by clock kind",
            ["site", "component", "kind"],
            registry=registry,
        )
        self.reminders = Counter(
            "ccwatch_incident_reminders",
            "Reminders of unacknowledged critical incidents sent (escalation.repeat_interval)",
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
        incidents: IncidentService,
        sla: SlaConfig,
        escalation: EscalationConfig,
        registry: CollectorRegistry,
        *,
        upstreams: Collection[str] = (),
        email_relay: bool = False,
        desks: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        interval: float = SLA_INTERVAL_SECONDS,
    ) -> None:
        self.incidents = incidents
        self.store = incidents.store
        self.sla = sla
        self.escalation = escalation
        self.clock = clock
        self.interval = interval
        self.metrics = shared_metrics(SlaMetrics, registry)
        # Running clocks by incident id: (site, component, {clock kind: seconds left}); the
        # gauge shows the smallest per site+component+kind, so its series stay bounded
        # by components, not by incidents.
        self._clocks: dict[str, tuple[str, str, dict[str, float]]] = {}
        self._published: set[tuple[str, str, str]] = set()
        self._upstreams = set(upstreams)
        self._email_relay = email_relay
        # The service desks get the RCA draft as a comment on their ticket.
        self._desks = sorted(desks)
        self._wakeup: asyncio.Event | None = None
        self._dirty: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

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
            except STORE_ERRORS as exc:
                logger.error("SLA watcher cannot use the state database: %s; retrying", exc)
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
        since = at - RCA_LOOKBACK.total_seconds()
        site = self.incidents.site
        incidents = await self.store.run(
            lambda c: repository.watched_incidents(c, site, since, only)
        )
        await self._remind(incidents, at)
        await self._draft_rcas(incidents, at)
        if not self.sla.enabled and not self.escalation.enabled:
            return []
        sent: list[str] = []
        seen: set[str] = set()
        moment = datetime.fromtimestamp(at, UTC)
        for incident in incidents:
            times = incident_times(incident)
            running = clocks(self.sla, times, moment)
            left = {str(c.kind): c.remaining.total_seconds() for c in running if c.running}
            seen.add(incident.id)
            if left:
                self._clocks[incident.id] = (incident.site, incident.component, left)
            else:
                self._clocks.pop(incident.id, None)
            already = _sent_names(incident)
            breaches = [c for c in running if c.breached and f"breach:{c.kind}" not in already]
            facts = await self._facts(incident, at, already)
            steps = escalations_due(self.sla, self.escalation, times, moment, set(already), facts)
            due = {f"{kind}_due": _epoch(clock_due(running, kind)) for kind in CLOCK_KINDS}
            if not self.sla.enabled:  # `opened` levels only; the stored due times stay
                due = {key: getattr(incident, key) for key in due}
            if not breaches and not steps and _same_due(incident, due):
                continue
            await self._write(incident, breaches, steps, due, at, already, sent)
        gone = (set(only) if only is not None else set(self._clocks)) - seen
        for incident_id in gone:
            self._clocks.pop(incident_id, None)
        self._publish_remaining()
        return sent

    async def _facts(self, incident: Incident, now: float, already: list[str]) -> IncidentFacts:
        """What ``when:`` matches; recurrences are counted (one query) only while a level
        that asks for them is unsent and can still fire (``opened``: not after the
        incident is over)."""
        recurrences = 0
        if self.escalation.enabled and any(
            level.when is not None
            and level.when.recurrence_count_at_least is not None
            and level.name not in already
            and (level.clock is not None or incident.resolved_at is None)
            for level in self.escalation.levels
        ):
            since = now - self.escalation.recurrence_window.total_seconds()
            recurrences = await self.store.run(
                lambda c: repository.recurrence_count(
                    c, incident.site, incident.component, since, incident.id
                )
            )
        return IncidentFacts(incident.component, incident.kind, recurrences)

    async def _draft_rcas(self, incidents: Sequence[Incident], now: float) -> None:
        """Write the RCA draft of a resolved incident that needs one, once."""
        for incident in incidents:
            if incident.state != "resolved":
                continue
            from ccwatch.incidents.rca import needs_rca  # see load_rca_draft

            if not needs_rca(incident):
                continue
            if RCA_DRAFT_KEY in incident.data:
                continue
            found = await self.store.run(
                functools.partial(load_rca_draft, sla=self.sla, incident_id=incident.id, now=now)
            )
            if found is None:
                continue
            with contextlib.suppress(repository.UnknownIncidentError):
                await self.incidents.note(
                    incident.id,
                    "rca_draft",
                    detail=f"RCA draft written: ccwatch incidents rca-draft {incident.id[:8]}",
                    data={RCA_DRAFT_KEY: found[1]},
                    event=Event.UPDATE if self._desks else None,
                    targets=self._desks if self._desks else None,
                    extras={"rca_draft": found[1]} if self._desks else None,
                    now=now,
                )

    async def _remind(self, incidents: Sequence[Incident], now: float) -> None:
        """Re-send unacknowledged critical incidents every ``repeat_interval``. The time of
        the reminder goes into ``data`` in the same transaction as its timeline entry
        and outbox rows, so each interval's reminder goes out once, across restarts."""
        interval = self.escalation.repeat_interval if self.escalation.enabled else None
        if interval is None:
            return
        for incident in incidents:
            if incident.data.get(DEFERRED_KEY):
                continue  # held back by a maintenance window: nobody was paged yet
            last = incident.data.get(REMINDER_KEY)
            last_at = float(last) if isinstance(last, int | float) else None
            if not reminder_due(
                incident.severity,
                incident.state,
                incident.acknowledged_at is not None,
                incident.opened_at,
                last_at,
                now,
                interval,
            ):
                continue
            count = int(incident.data.get("reminders") or 0) + 1
            waited = now - incident.opened_at
            detail = (
                f"not acknowledged {_minutes(waited)} after it opened: re-sent to its "
                f"pagers (reminder #{count}, every {_minutes(interval.total_seconds())})"
            )
            with contextlib.suppress(repository.UnknownIncidentError):
                await self.incidents.note(
                    incident.id,
                    "reminder",
                    event=Event.REMINDER,
                    detail=detail,
                    data={REMINDER_KEY: now, "reminders": count},
                    extras={"reminder": {"count": count, "unacknowledged_for_s": round(waited)}},
                    now=now,
                )
                self.metrics.reminders.inc()
                logger.warning("incident %s: %s", incident.id[:8], detail)

    def _publish_remaining(self) -> None:
        smallest: dict[tuple[str, str, str], float] = {}
        for site, component, left in self._clocks.values():
            for kind, seconds in left.items():
                key = (site, component, kind)
                smallest[key] = min(seconds, smallest.get(key, seconds))
        for labels, seconds in smallest.items():
            self.metrics.remaining.labels(*labels).set(seconds)
        for labels in self._published - set(smallest):
            with contextlib.suppress(KeyError):
                self.metrics.remaining.remove(*labels)
        self._published = set(smallest)

    async def _write(
        self,
        incident: Incident,
        breaches: list[Clock],
        steps: list[EscalationStep],
        due: Mapping[str, float | None],
        now: float,
        already: list[str],
        sent: list[str],
    ) -> None:
        """Due times, then each breach and escalation step, through the incident service."""
        notes = self.incidents
        sent_names = list(already)
        if not _same_due(incident, due):
            await notes.note(incident.id, "sla_due", updates=dict(due), now=now)
        for breach in breaches:
            sent_names.append(f"breach:{breach.kind}")
            was_due = rfc3339(_epoch(breach.due_at))
            detail = f"{breach.kind.replace('_', ' ')} was due {was_due}"
            await notes.note(
                incident.id,
                "sla_breach",
                event=Event.SLA_BREACH,
                detail=detail,
                data={SENT_KEY: list(sent_names)},
                extras={"breach": {"clock": breach.kind, "due": was_due}},
                now=now,
            )
            self.metrics.breaches.labels(kind=breach.kind, severity=incident.severity.label).inc()
            logger.warning(
                "incident %s (%s %s): %s SLA breached (was due %s)",
                incident.id[:8],
                incident.component,
                incident.severity.label,
                breach.kind.replace("_", " "),
                was_due,
            )
        for step in steps:
            sent_names.append(step.name)
            targets = self._targets(step)
            kind = "warning" if step.trigger.endswith("_warning") else step.trigger
            why = step.trigger.replace("_", " ")
            if step.has_targets:
                notified = ", ".join([*step.email, *targets]) or "nobody"
                detail = f"{step.name} ({why}), notified: {notified}"
            else:  # a default path level whose targets are not configured yet
                detail = f"escalated to {step.name} (no targets configured): {why}"
            await notes.note(
                incident.id,
                "sla_escalation",
                event=_STEP_EVENT.get(kind, Event.ESCALATION_LEVEL),
                detail=detail,
                data={SENT_KEY: list(sent_names)},
                targets=targets,
                extras=self._step_extras(incident, step, kind, now),
                now=now,
            )
            self.metrics.escalations.labels(level=step.name).inc()
            sent.append(f"{incident.id}:{step.name}")
            logger.warning(
                "incident %s escalated to %s (%s)", incident.id[:8], step.name, step.trigger
            )

    def _step_extras(
        self, incident: Incident, step: EscalationStep, kind: str, now: float
    ) -> dict[str, Any]:
        extras: dict[str, Any] = {"escalation": step.as_dict()}
        if kind == "rca_breach":
            draft = incident.data.get(RCA_DRAFT_KEY)
            if isinstance(draft, str):
                extras["rca_draft"] = draft
        return extras

    def _targets(self, step: EscalationStep) -> list[str]:
        targets: list[str] = []
        if step.upstream and step.upstream in self._upstreams:
            targets.append(step.upstream)
        if step.email and self._email_relay:
            targets.append(ESCALATION_EMAIL)
        return targets


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"


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
