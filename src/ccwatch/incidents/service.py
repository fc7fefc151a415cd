"""The incident service: the one door through which every incident change goes.

Whatever changes an incident — the MQTT pipeline's observations and the ticker, an
acknowledgement (API or CLI), the SLA watcher, a dead-lettered ticket, a checklist or
retention job — comes here. The service asks the one state machine (``Lifecycle``) for
the transition, writes it with ``repository.write_transition`` (incident, timeline and
outbox rows in one transaction) and only then commits it to the lifecycle and tells
``on_change``. A write that fails is counted and logged and the transition abandoned:
the lifecycle proposes it again at the next observation or tick, so a full disk delays
an open, it never loses one. See docs/architecture.md, "One write path".

Entries:

- ``observe`` (sync, the pipeline's hot path) + ``apply``; ``tick`` / ``run_ticker``;
- ``acknowledge(incident_id, by)``;
- ``waiting_on_customer(incident_id, waiting, source)`` (a service desk's "pending");
- ``exempt_sla`` / ``lift_sla_exemption``, ``rca_delivered`` / ``rca_deferred``;
- ``note(incident_id, change, ...)`` — a change that is not the lifecycle's: an SLA step,
  a breach, new due times, a dead-lettered ticket;
- ``report`` / ``clear`` — ``ExternalIncidents`` for the checklist and retention jobs.

Slow I/O stays off the write path: the SLA due times of a body (``body_extras``) are
pure arithmetic done inside the transaction; diagnostics (process facts, log tails) are
gathered after the commit on their own threads, with a deadline, and attached to the
open event's rows, which wait for them at most that long.

Several workers (``sites:``): a site's service is built by the worker holding the site's
lease, with that lease's ``fence``. Every write checks it inside its transaction; the
first that fails (``LeaseLostError``: another worker took the site, or the lease ran out
here) is abandoned, the service refuses every later write without trying, and
``on_fenced`` tells the worker to stop the site. Nothing is retried under a lost lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.errors import LeaseLostError, StateStoreError
from ccwatch.incidents import repository
from ccwatch.incidents.events import BodyExtras, Upstream
from ccwatch.incidents.external import ExternalIncidents
from ccwatch.incidents.lifecycle import (
    CLOSED_STATES,
    DEFERRED_KEY,
    Lifecycle,
    LifecycleSettings,
    Observation,
    Transition,
    maintenance_gate,
    new_incident_id,
    release_after_maintenance,
    waiting_transition,
)
from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.incidents.vocabulary import Event
from ccwatch.metrics import shared_metrics
from ccwatch.severity import Severity
from ccwatch.state import STORE_ERRORS, StateStore

logger = logging.getLogger(__name__)

OnChange = Callable[[Incident, str], None]
# The maintenance window a component is in at an instant (a dict with id, reason, start,
# end), or None: ``MaintenanceCalendar.hook``, given by the composition root.
MaintenanceHook = Callable[[str, float], Mapping[str, Any] | None]
Diagnostics = Callable[[Incident], Mapping[str, Any]]
DIAGNOSTICS_TIMEOUT = 3.0


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
            "Incident changes that could not be written to the state database (retried)",
            registry=registry,
        )
        for severity in (Severity.MINOR, Severity.MAJOR, Severity.CRITICAL):
            self.open.labels(severity=severity.label).set(0)


@dataclass(frozen=True)
class IncidentSettings:
    """What the service needs of the configuration (built by the composition root)."""

    site: str
    lifecycle: LifecycleSettings
    upstreams: Sequence[Upstream] = ()


class IncidentWriteError(StateStoreError):
    """An incident change could not be written (the state database failed)."""


def _ignore(incident: Incident, change: str) -> None:
    return None


class IncidentService:
    """See the module docstring. Call ``await load()`` (or ``load_sync()``) once first."""

    def __init__(
        self,
        store: StateStore,
        settings: IncidentSettings,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        body_extras: BodyExtras | None = None,
        diagnostics: Diagnostics | None = None,
        diagnostics_timeout: float = DIAGNOSTICS_TIMEOUT,
        on_change: OnChange = _ignore,
        on_write_failure: Callable[[], None] = lambda: None,
        redact: Callable[[Any], Any] | None = None,
        new_id: Callable[[], str] = new_incident_id,
        maintenance: MaintenanceHook | None = None,
        fence: repository.Fence | None = None,
        on_fenced: Callable[[LeaseLostError], None] = lambda exc: None,
    ) -> None:
        self.store = store
        # Several workers: the site's lease, checked in every write (module docstring).
        self.fence = fence
        self.on_fenced = on_fenced
        self.fenced: LeaseLostError | None = None
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.body_extras = body_extras
        self.diagnostics = diagnostics
        self.diagnostics_timeout = diagnostics_timeout
        self.on_change = on_change
        self.on_write_failure = on_write_failure
        self.redact = redact
        self._new_id = new_id
        self.maintenance = maintenance
        # Incidents opened inside a maintenance window and not yet sent upstream.
        self._deferred: set[str] = set()
        self.metrics = shared_metrics(IncidentMetrics, registry)
        self.lifecycle = Lifecycle(settings.site, settings.lifecycle, new_id)
        # Unresolved incidents by id -> severity, for ccwatch_incidents_open.
        self._open: dict[str, Severity] = {}
        # Writes take turns (the order of one incident's changes is the order written);
        # waiters for "no change of this incident in flight" wait on the condition.
        self._lock = asyncio.Lock()
        self._settled = asyncio.Condition(self._lock)
        self._diagnostics_pool: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def site(self) -> str:
        return self.settings.site

    # --- set-up ---------------------------------------------------------------------

    def load_sync(self) -> int:
        """Continue the unresolved incidents in the store; returns how many."""
        site = self.settings.site
        incidents = self.store.run_sync(lambda conn: repository.active_incidents(conn, site))
        self.lifecycle = Lifecycle(site, self.settings.lifecycle, self._new_id)
        self.lifecycle.restore((i.as_active() for i in incidents), self.clock(), self.monotonic())
        self._open = {i.id: i.severity for i in incidents}
        self._deferred = {i.id for i in incidents if i.data.get(DEFERRED_KEY)}
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

    def reconfigure(
        self,
        settings: IncidentSettings,
        *,
        body_extras: BodyExtras | None = None,
        diagnostics: Diagnostics | None = None,
        on_change: OnChange = _ignore,
        on_write_failure: Callable[[], None] = lambda: None,
        redact: Callable[[Any], Any] | None = None,
        maintenance: MaintenanceHook | None = None,
    ) -> None:
        """A (re)loaded config: new holds, routes and hooks apply from now; incidents go on."""
        self.settings = settings
        self.lifecycle.settings = settings.lifecycle
        self.body_extras = body_extras
        self.diagnostics = diagnostics
        self.on_change = on_change
        self.on_write_failure = on_write_failure
        self.redact = redact
        self.maintenance = maintenance

    async def wait_background(self) -> None:
        """Until the diagnostics being gathered are attached (tests, a clean stop)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._diagnostics_pool is not None:
            self._diagnostics_pool.shutdown(wait=False, cancel_futures=True)
            self._diagnostics_pool = None

    # --- the pipeline's side ------------------------------------------------------------

    def observe(self, component: str, observation: Observation, now: float) -> list[Transition]:
        """Feed one classified measurement (sync); ``apply`` the transitions it returns."""
        return self.lifecycle.observe(component, observation, now, self.monotonic())

    async def tick(self, now: float | None = None, mono: float | None = None) -> list[Transition]:
        at = self.clock() if now is None else now
        transitions = self.lifecycle.tick(at, self.monotonic() if mono is None else mono)
        if transitions:
            await self.apply(transitions)
        await self.release_maintenance(at)
        return transitions

    async def run_ticker(self, interval: float = 1.0) -> None:
        """Staleness, telemetry-lost and holds that finish between messages."""
        while self.fenced is None:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except LeaseLostError:
                return
            except Exception:
                logger.exception("incident ticker failed (a ccwatch bug); continuing")

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Write proposed transitions in order. A failed write is logged and counted, and
        it and the rest are abandoned (proposed again later), never raised. Whatever
        happens — a full disk, a bug, a cancellation while waiting for the lock — every
        transition ends committed or abandoned, never left pending."""
        handed = 0  # transitions given to _write, which commits or abandons each
        try:
            async with self._settled:
                try:
                    for transition in transitions:
                        handed += 1
                        try:
                            await self._write(transition)
                        except (IncidentWriteError, LeaseLostError):
                            break
                        except Exception:
                            logger.exception(
                                "writing incident %s (%s) failed (a ccwatch bug); it is "
                                "proposed again by the next observation",
                                transition.incident_id[:8],
                                transition.change,
                            )
                            break
                finally:
                    self._settled.notify_all()
        finally:
            for later in transitions[handed:]:
                self.lifecycle.abandon(later)

    # --- acknowledgements, notes, jobs ------------------------------------------------

    async def acknowledge(self, incident_id: str, by: str, now: float | None = None) -> Incident:
        """Acknowledge (stops the first-response clock; event ``acknowledge``).

        Acknowledging twice keeps the first; raises ``UnknownIncidentError``, ValueError
        for a resolved incident, ``IncidentWriteError`` if the store fails.
        """
        async with self._settled:
            await self._settled.wait_for(lambda: not self._in_flight(incident_id))
            at = self.clock() if now is None else now
            active = self.lifecycle.find(incident_id)
            transition: Transition | None = None
            if active is not None and not active.acknowledged:
                # Proposed before any await: from here the pipeline leaves it alone.
                transition = self.lifecycle.acknowledge(incident_id, at, by)
            if transition is None:
                stored = await self.store.run(
                    lambda conn: repository.load_incident(conn, incident_id)
                )
                if stored is None:
                    raise repository.UnknownIncidentError(incident_id)
                if stored.acknowledged_at is not None:
                    return stored
                if stored.state in CLOSED_STATES:
                    raise ValueError(
                        f"incident {incident_id} is {stored.state}; nothing to acknowledge"
                    )
                # Active in the store but not in this site's lifecycle (another site's).
                state = "nodata" if stored.state == "nodata" else "acknowledged"
                transition = Transition(
                    "acknowledged",
                    None,
                    at,
                    stored.severity,
                    f"by {by}",
                    incident_id=incident_id,
                    updates={"state": state, "acknowledged_at": at, "acknowledged_by": by},
                )
            try:
                return await self._write(transition)
            finally:
                self._settled.notify_all()

    async def note(
        self,
        incident_id: str,
        change: str,
        *,
        event: Event | None = None,
        detail: str = "",
        updates: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        targets: Sequence[str] | None = None,
        extras: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> Incident:
        """A change the lifecycle does not make: timeline ``change`` (unless silent),
        record ``updates``/``data``, and ``event`` to the routed upstreams or ``targets``.

        Raises ``UnknownIncidentError`` or ``IncidentWriteError``.
        """
        at = self.clock() if now is None else now
        transition = Transition(
            change,
            None,
            at,
            detail=detail,
            incident_id=incident_id,
            event=event,
            updates=updates,
            data=data,
            targets=tuple(targets) if targets is not None else None,
            extras=extras,
        )
        async with self._settled:
            return await self._write(transition)

    async def rca_delivered(
        self, incident_id: str, delivered: str, by: str, now: float | None = None
    ) -> Incident:
        """The RCA was delivered (a URL or a text): stops the RCA clock (``rca_done_at``),
        timeline ``rca_delivered``, event ``rca_delivered``."""
        at = self.clock() if now is None else now
        text = delivered.strip()
        if not text:
            raise ValueError("say what was delivered: a URL or a short text")
        return await self.note(
            incident_id,
            "rca_delivered",
            event=Event.RCA_DELIVERED,
            detail=f"by {by}: {text}",
            data={"rca_done_at": at, "rca": {"delivered": text, "by": by, "at": at}},
            extras={"rca": {"delivered": text, "by": by}},
            now=at,
        )

    async def rca_deferred(
        self, incident_id: str, reason: str, until: float, by: str, now: float | None = None
    ) -> Incident:
        """The RCA waits (e.g. for debug data) until ``until``: its due time moves there,
        timeline ``rca_deferred``, event ``rca_deferred``."""
        at = self.clock() if now is None else now
        if not reason.strip():
            raise ValueError("give the reason the RCA waits")
        if until <= at:
            raise ValueError("--until must be in the future")
        due = rfc3339(until)
        return await self.note(
            incident_id,
            "rca_deferred",
            event=Event.RCA_DEFERRED,
            detail=f"by {by} until {due}: {reason.strip()}",
            data={"rca_deferred_until": until, "rca_deferred_reason": reason.strip()},
            extras={"rca": {"deferred_until": due, "reason": reason.strip(), "by": by}},
            now=at,
        )

    async def exempt_sla(
        self, incident_id: str, reason: str, by: str, now: float | None = None
    ) -> Incident:
        """Take the incident out of the SLA (e.g. customer hardware): its clocks pause
        from now (``sla_exempt_at``), timeline ``sla_exempt``, event ``sla_exempt``.
        Exempting twice keeps the first."""
        at = self.clock() if now is None else now
        text = reason.strip()
        if not text:
            raise ValueError("give the reason the incident is outside the SLA")
        stored = await self.get(incident_id)
        if stored is None:
            raise repository.UnknownIncidentError(incident_id)
        if stored.data.get("sla_exempt_at") is not None:
            return stored
        return await self.note(
            incident_id,
            "sla_exempt",
            event=Event.SLA_EXEMPT,
            detail=f"by {by}: {text}",
            data={"sla_exempt_at": at, "sla_exempt": {"reason": text, "by": by, "at": at}},
            extras={"sla_exempt": {"reason": text, "by": by, "at": rfc3339(at)}},
            now=at,
        )

    async def lift_sla_exemption(
        self, incident_id: str, by: str, reason: str = "", now: float | None = None
    ) -> Incident:
        """Put an exempt incident back inside the SLA: its clocks resume from now and the
        exempt span (``sla_exempt_spans``) is not counted; timeline and event
        ``sla_exempt_lifted``. An incident that is not exempt is returned unchanged."""
        at = self.clock() if now is None else now
        async with self._settled:
            stored = await self.get(incident_id)
            if stored is None:
                raise repository.UnknownIncidentError(incident_id)
            since = stored.data.get("sla_exempt_at")
            if not isinstance(since, int | float) or isinstance(since, bool):
                return stored
            spans = stored.data.get("sla_exempt_spans")
            held = [*(spans if isinstance(spans, list) else []), [since, max(float(since), at)]]
            exempt = stored.data.get("sla_exempt")
            text = reason.strip()
            lifted = {"by": by, "at": at, "reason": text, "exempt": exempt}
            detail = f"by {by}" + (f": {text}" if text else "")
            transition = Transition(
                "sla_exempt_lifted",
                None,
                at,
                stored.severity,
                f"{detail} (exempt for {at - since:.0f}s, not counted by the SLA clocks)",
                incident_id=incident_id,
                event=Event.SLA_EXEMPT_LIFTED,
                data={
                    "sla_exempt_at": None,
                    "sla_exempt": None,
                    "sla_exempt_spans": held,
                    "sla_exempt_lifted": lifted,
                },
                extras={
                    "sla_exempt_lifted": {
                        "by": by,
                        "reason": text,
                        "exempt_since": rfc3339(since),
                        "at": rfc3339(at),
                    }
                },
            )
            return await self._write(transition)

    async def waiting_on_customer(
        self, incident_id: str, waiting: bool, source: str, now: float | None = None
    ) -> Incident:
        """A service desk says the vendor waits on us (``waiting``: RT ``stalled``,
        Zendesk/Freshdesk ``pending``, ServiceNow "Awaiting Caller", Jira "Waiting for
        customer") or that it no longer does. ``source`` says who, e.g. ``"rt:ticket 42"``.

        Waiting: state ``waiting_on_customer``, timeline and event ``waiting_on_customer``;
        the resolution clock holds (first response is not affected), and
        ``incidents.auto_close_after_waiting`` later the ticker closes the incident
        (``expired``). No longer waiting: timeline and event ``customer_replied``; the
        resolution clock resumes without counting the wait. Calling it again with the same
        value records nothing; so does a call for an incident that is over (a desk going
        pending after ccwatch resolved changes nothing). Both return the record.
        Raises ``UnknownIncidentError``, ``IncidentWriteError``.
        """
        who = source.strip()[:200] or "upstream"
        async with self._settled:
            await self._settled.wait_for(lambda: not self._in_flight(incident_id))
            at = self.clock() if now is None else now
            transition: Transition | None = None
            tracked = self.lifecycle.find(incident_id) is not None
            if tracked:
                # Proposed before any await: from here the pipeline leaves it alone.
                transition = self.lifecycle.waiting(incident_id, waiting, at, who)
            if transition is None:
                stored = await self.get(incident_id)
                if stored is None:
                    raise repository.UnknownIncidentError(incident_id)
                view = stored.as_active()
                if (
                    tracked
                    or stored.state in CLOSED_STATES
                    or (view.waiting_since is not None) == waiting
                ):
                    return stored
                # Active in the store but not in this site's lifecycle (another site's).
                change = waiting_transition(view, waiting, at, who)
                assert change.incident is not None
                transition = Transition(
                    change.change,
                    None,
                    at,
                    stored.severity,
                    change.detail,
                    incident_id=incident_id,
                    updates={"state": change.incident.state},
                    data=change.data,
                    extras=change.extras,
                )
            try:
                return await self._write(transition)
            finally:
                self._settled.notify_all()

    async def release_maintenance(self, now: float | None = None) -> list[str]:
        """Send the deferred ``open`` of each incident opened inside a maintenance window
        whose window is over while it is still active; returns their ids."""
        if not self._deferred:
            return []
        at = self.clock() if now is None else now
        released: list[str] = []
        async with self._settled:
            try:
                for incident in self.lifecycle.active():
                    if incident.id not in self._deferred or self.lifecycle.pending(incident):
                        continue
                    if incident.state in CLOSED_STATES:
                        continue
                    hook = self.maintenance
                    if hook is not None and hook(incident.component, at) is not None:
                        continue
                    stored = await self.get(incident.id)
                    window = stored.data.get("maintenance") if stored is not None else None
                    transition = release_after_maintenance(
                        incident,
                        window if isinstance(window, Mapping) else None,
                        at,
                        rfc3339(incident.opened_at) or "",
                    )
                    try:
                        await self._write(transition)
                    except (IncidentWriteError, LeaseLostError):
                        break
                    released.append(incident.id)
            finally:
                self._settled.notify_all()
        return released

    async def note_dead_letter(self, row: repository.OutboxRow, error: str) -> None:
        """An upstream refused an event for good: say so on the incident's timeline."""
        detail = (
            f"{row.upstream} refused {row.event} #{row.seq} for good (outbox id {row.id}; "
            f"`ccwatch tickets retry {row.id}` after fixing): {error}"
        )
        with contextlib.suppress(repository.UnknownIncidentError):
            await self.note(row.incident_id, "ticket_dead", detail=detail)

    async def report(
        self,
        *,
        component: str,
        kind: str,
        severity: Severity,
        impact: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        async with self._settled:
            transitions = self.lifecycle.report(
                component, kind, severity, impact, self.clock(), detail
            )
            for transition in transitions:
                await self._write(transition)
            self._settled.notify_all()

    async def clear(self, *, component: str, kind: str) -> None:
        await self.report(component=component, kind=kind, severity=Severity.NONE, impact="")

    # --- the write ----------------------------------------------------------------------

    def _in_flight(self, incident_id: str) -> bool:
        incident = self.lifecycle.find(incident_id)
        return incident is not None and self.lifecycle.pending(incident)

    def _lost(self, exc: LeaseLostError) -> None:
        """The site's lease is gone: refuse every later write and tell the worker, once."""
        if self.fenced is not None:
            return
        self.fenced = exc
        logger.error(
            "site %s: lease lost, writing nothing more for it here (%s)", self.site, exc.why
        )
        try:
            self.on_fenced(exc)
        except Exception:
            logger.exception("lease-lost listener failed (a ccwatch bug)")

    async def _write(self, transition: Transition) -> Incident:
        """The one write (call with the lock held): store, then lifecycle, then tell."""
        proposed = transition
        if self.fenced is not None:
            self.lifecycle.abandon(proposed)
            raise self.fenced
        deferred = transition.incident_id in self._deferred
        window = None
        if (
            not deferred
            and self.maintenance is not None
            and transition.event is Event.OPEN
            and transition.incident is not None
        ):
            window = self.maintenance(transition.incident.component, transition.at)
        transition = maintenance_gate(transition, deferred=deferred, window=window)
        hold = None
        wants_diagnostics = self.diagnostics is not None and transition.event is Event.OPEN
        if wants_diagnostics:
            hold = transition.at + self.diagnostics_timeout + 1.0
        upstreams = self.settings.upstreams
        extras, redact, fence = self.body_extras, self.redact, self.fence
        try:
            incident, names = await self.store.run(
                lambda conn: repository.write_transition(
                    conn, transition, upstreams, extras, hold, redact, fence
                )
            )
        except repository.UnknownIncidentError:
            self.lifecycle.abandon(proposed)
            raise
        except LeaseLostError as exc:
            self.lifecycle.abandon(proposed)
            self._lost(exc)
            raise
        except STORE_ERRORS as exc:
            self.lifecycle.abandon(proposed)
            self.metrics.write_failures.inc()
            self.on_write_failure()
            logger.error(
                "could not save incident %s (%s %s): %s; will retry; check the state database "
                "at %s",
                transition.incident_id[:8],
                transition.incident.component if transition.incident else "-",
                transition.change,
                exc,
                self.store.location,
            )
            raise IncidentWriteError(str(exc)) from exc
        except BaseException:
            # A bug (or a cancellation) must not leave the incident pending for good.
            self.lifecycle.abandon(proposed)
            raise
        self.lifecycle.commit(proposed)
        if incident.data.get(DEFERRED_KEY):
            self._deferred.add(incident.id)
        else:
            self._deferred.discard(incident.id)
        if transition.change not in ("loss", "sla_due"):
            self.metrics.changes.labels(change=transition.change).inc()
            logger.info(
                "incident %s %s: %s/%s %s (%s), %s",
                incident.id[:8],
                transition.change,
                incident.component,
                incident.kind,
                incident.severity.label,
                incident.state,
                transition.detail or incident.impact,
            )
        if wants_diagnostics and names:
            self._spawn(self._attach_diagnostics(incident))
        self._committed(incident, transition.change)
        return incident

    def _committed(self, incident: Incident, change: str) -> None:
        if incident.state in CLOSED_STATES:
            self._open.pop(incident.id, None)
        else:
            self._open[incident.id] = incident.severity
        self._update_open_gauge()
        try:
            self.on_change(incident, change)
        except Exception:
            logger.exception("incident change listener failed (a ccwatch bug)")

    def _update_open_gauge(self) -> None:
        counts = dict.fromkeys((Severity.MINOR, Severity.MAJOR, Severity.CRITICAL), 0)
        for severity in self._open.values():
            if severity in counts:
                counts[severity] += 1
        for severity, count in counts.items():
            self.metrics.open.labels(severity=severity.label).set(count)

    # --- diagnostics, after the commit -------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _attach_diagnostics(self, incident: Incident) -> None:
        gather = self.diagnostics
        if gather is None:
            return
        if self._diagnostics_pool is None:
            # Its own threads: a stuck log file never takes the store's or the loop's.
            self._diagnostics_pool = ThreadPoolExecutor(4, thread_name_prefix="ccwatch-diag")
        loop = asyncio.get_running_loop()
        seq = incident.seq
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(self._diagnostics_pool, gather, incident),
                self.diagnostics_timeout,
            )
        except TimeoutError:
            logger.warning(
                "diagnostics for incident %s took over %.0fs; the ticket goes without them",
                incident.id[:8],
                self.diagnostics_timeout,
            )
            found = None
        except Exception:
            logger.exception("diagnostics for incident %s failed (a ccwatch bug)", incident.id)
            found = None
        now = self.clock()
        if found is not None and self.redact is not None:
            found = self.redact(found)
        fence = self.fence
        try:
            if found is None:
                await self.store.run(
                    lambda conn: repository.release_held(conn, incident.id, seq, now, fence)
                )
            else:
                await self.store.run(
                    lambda conn: repository.attach_diagnostics(
                        conn, incident.id, seq, found, now, fence
                    )
                )
        except LeaseLostError as exc:
            self._lost(exc)
            return
        except STORE_ERRORS as exc:
            # The rows go out at their hold time anyway, without diagnostics.
            logger.warning("could not attach diagnostics to incident %s: %s", incident.id, exc)
            return
        self.on_change(incident, "diagnostics")

    # --- reads for other features ----------------------------------------------------

    async def get(self, incident_id: str) -> Incident | None:
        return await self.store.run(lambda conn: repository.load_incident(conn, incident_id))

    async def list_incidents(self, state: str | None = None) -> list[Incident]:
        return await self.store.run(lambda conn: repository.list_incidents(conn, state=state))


if TYPE_CHECKING:
    # mypy checks here that the service keeps implementing the protocol jobs rely on.
    _implements_external: type[ExternalIncidents] = IncidentService
