"""The incident state machine (pure: observations and the time in, transitions out).

One ``Lifecycle`` per site, and the only state machine of incidents. For each component
it keeps at most one active incident and decides, from the severities observed and the
time passed in, when that incident opens, escalates, de-escalates, goes ``nodata`` and
resolves (docs/architecture.md, "Incident lifecycle"):

- A higher severity must hold for ``open_after`` before the incident opens or
  escalates; a lower one must hold for ``resolve_after`` before it de-escalates or
  resolves. "Holds" is tracked per level: ``at_least_since[L]`` is when the observed
  severity last became ≥ L without dropping below since, so a loss that flaps between
  major and critical still escalates to major after ``open_after``, and to critical
  only once critical itself held that long.
- Escalation and de-escalation change the same incident (same id).
- No data for ``stale_after`` puts the incident into ``nodata`` (it is neither
  resolved nor forgotten; holds restart when data returns). When every component
  heard from is silent, a separate minor "telemetry lost" incident is raised for the
  site, and resolved by the next message from any component.

- Jobs (checklist, retention) ``report`` and ``clear`` findings of their own kinds: a
  job's result is already a decision, so no holds apply; the same finding again only
  refreshes the record.
- ``acknowledge`` proposes the acknowledgement of an active incident.
- Recurrence: a production-loss incident resolved less than ``reopen_window`` ago is
  remembered per component; when the fault comes back (its holds are met again) the
  same incident is ``reopened`` (same id, same dedup key, same ticket upstream) instead
  of a new one opening.
- Auto-close: an incident ``nodata`` for ``auto_close_after`` (wall time since it went
  silent, ``nodata_since``, so a restart does not restart the wait) is closed with the
  state ``expired``; it is over, like a resolved one, but nobody saw it recover.
- One ticket per fault: a component whose fault would open an incident within
  ``group_window`` of the open of another incident does not open one when that incident
  is its parent's (``settings.depends_on``) or, with ``group_by="site"`` (the default),
  any production-loss incident of the site (the earliest): it is added to that incident
  (change ``affected``, event ``update``: the ticket upstream learns the wider scope and
  nobody is paged again), listed in its ``affected`` components and named in its impact
  ("…; also affected: ivr, dialer", plus "site-wide" once every configured component
  that telemetry was heard from is in it). It stays attached while that incident is
  active; once it is over, a component whose fault still holds opens its own incident.
  An open proposed and not yet written counts: a component whose holds are met in the
  same tick waits for it.
- Holds of the SLA clocks: the time an incident spends ``nodata`` is kept as a span
  (``nodata_spans``, its length measured on the monotonic clock) when data resumes, so
  the clocks do not count the gap.
- Waiting on the customer (a service desk says the vendor waits on us): ``waiting``
  records it (``waiting_since``; the resolution clock holds) and its end (a finished
  span in ``waiting_spans``); an incident still waiting ``auto_close_after_waiting``
  later (wall time) is closed with the state ``expired`` (reason ``waiting_on_customer``).
- Calls rejected over the incident: the windowed ``calls_rejected``/``calls_offered`` of
  its component's observations, sampled once per ``calls_window`` (so the windows summed
  do not overlap) and summed, with the worst window (``ActiveIncident.calls``): an
  estimate, which the RCA draft says.

Every method *proposes* transitions and changes no incident: the caller (the incident
service) writes each one (incident, timeline and outbox in one transaction) and then
calls ``commit(transition)``, or ``abandon(transition)`` if the write failed; an
abandoned transition is proposed again at the next observation or tick, so nothing is
lost to a full disk. While a transition of an incident is proposed and not yet
committed or abandoned, nothing else is proposed for that incident (``pending``): two
writers (the pipeline and the ticker, or an acknowledgement) never act on the same
stale view.

Two clocks come in: ``now`` (wall time, for the timestamps people read) and ``mono``
(monotonic, for holds and staleness), so a wall-clock jump neither delays an open nor
fakes ``nodata``. ``mono`` defaults to ``now`` for replays and tests. Ids come from the
injected ``new_id`` so tests can replay runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from ccwatch.incidents.vocabulary import EVENT_OF_CHANGE, Event
from ccwatch.severity import Severity

PRODUCTION_LOSS = "production_loss"
TELEMETRY_LOST = "telemetry_lost"
TELEMETRY_COMPONENT = "telemetry"

State = Literal["open", "acknowledged", "waiting_on_customer", "nodata", "resolved", "expired"]
# States of an incident that is over (the store's one-active index excludes them).
CLOSED_STATES: frozenset[str] = frozenset({"resolved", "expired"})
_LEVELS = (Severity.NONE, Severity.MINOR, Severity.MAJOR, Severity.CRITICAL)
_FROM_CHANGE = object()  # Transition.event's default: the event of the change
_NO_HOLDS: list[float | None] = [None] * 4
GroupBy = Literal["site", "dependencies"]
GROUP_BY: tuple[GroupBy, ...] = ("site", "dependencies")
Span = tuple[float, float]


class Observation(Protocol):
    """What the classifier said about one component at one moment.

    ``classify.Assessment`` is one (its ``impact`` is built only when read, which the
    lifecycle does only on a change); ``Reading`` is a plain one for tests and jobs.
    """

    @property
    def severity(self) -> Severity: ...

    @property
    def loss(self) -> float: ...

    @property
    def impact(self) -> str: ...

    @property
    def metrics(self) -> Mapping[str, float | int | bool | None]: ...


@dataclass(frozen=True, slots=True)
class Reading:
    severity: Severity
    loss: float
    impact: str = ""
    metrics: Mapping[str, float | int | bool | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActiveIncident:
    """The lifecycle's view of an incident (the store keeps the full record)."""

    id: str
    site: str
    component: str
    kind: str
    severity: Severity
    state: State
    production_loss: float
    peak_loss: float
    peak_severity: Severity
    impact: str
    opened_at: float
    updated_at: float
    acknowledged: bool = False
    resolved_at: float | None = None
    metrics: Mapping[str, float | int | bool | None] = field(default_factory=dict)
    # Wall time the incident went nodata (None while data flows): auto-close counts from it.
    nodata_since: float | None = None
    reopen_count: int = 0
    # Components whose faults were attached to this incident (one ticket per fault).
    affected: tuple[str, ...] = ()
    # Finished nodata gaps (wall start, start + monotonic length): SLA holds.
    nodata_spans: tuple[Span, ...] = ()
    # Wall time a service desk said the vendor waits on us (None: not waiting), and the
    # finished waits: the resolution clock holds while waiting.
    waiting_since: float | None = None
    waiting_spans: tuple[Span, ...] = ()
    # Calls rejected over the incident, estimated (see the module docstring): rejected,
    # offered, windows (samples summed), peak_rejected and peak_offered (the worst window).
    calls: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True, init=False)
class Transition:
    """One proposed change of one incident: what the store writes in one transaction.

    ``incident`` is the lifecycle's view after the change (None for a note on an
    incident the lifecycle does not track, e.g. an RCA step after resolution);
    ``updates`` sets record fields the lifecycle does not own (acknowledged_by, SLA due
    times), ``data`` is merged into the record's ``data``; ``event`` defaults to the
    change's (``EVENT_OF_CHANGE``); ``targets`` names the upstreams explicitly (None:
    routed by severity); ``extras`` go into the event body.
    """

    change: str
    incident: ActiveIncident | None
    at: float
    previous_severity: Severity
    detail: str
    incident_id: str
    event: Event | None
    updates: Mapping[str, Any]
    data: Mapping[str, Any]
    targets: tuple[str, ...] | None
    extras: Mapping[str, Any]

    def __init__(
        self,
        change: str,
        incident: ActiveIncident | None,
        at: float,
        previous_severity: Severity = Severity.NONE,
        detail: str = "",
        *,
        incident_id: str = "",
        event: Event | object | None = _FROM_CHANGE,
        updates: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        targets: tuple[str, ...] | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        if incident is None and not incident_id:
            raise ValueError("a transition needs the incident or its id")
        set_ = object.__setattr__
        set_(self, "change", change)
        set_(self, "incident", incident)
        set_(self, "at", at)
        set_(self, "previous_severity", previous_severity)
        set_(self, "detail", detail)
        set_(self, "incident_id", incident.id if incident is not None else incident_id)
        set_(self, "event", EVENT_OF_CHANGE.get(change) if event is _FROM_CHANGE else event)
        set_(self, "updates", dict(updates or {}))
        set_(self, "data", dict(data or {}))
        set_(self, "targets", targets)
        set_(self, "extras", dict(extras or {}))


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    open_after: float = 30.0
    resolve_after: float = 300.0
    stale_after: float = 120.0
    # The loss figure of an open incident is refreshed in the store at most this often
    # (it changes with nearly every message; the severity changes are what matter).
    loss_refresh: float = 10.0
    # A fault back within this long of its resolve reopens the same incident (0: never).
    reopen_window: float = 1800.0
    # An incident nodata this long is closed as expired (None: never).
    auto_close_after: float | None = 48 * 3600.0
    # Component -> the components it depends on; a dependant's fault within
    # ``group_window`` of its parent's open joins the parent's incident.
    depends_on: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_window: float = 120.0
    # "site": any fault within group_window of the open of an incident of the site joins
    # the earliest such incident (dependencies first); "dependencies": only dependants.
    group_by: GroupBy = "site"
    # The configured components: an incident covering all those heard from is "site-wide".
    components: tuple[str, ...] = ()
    # An incident waiting on the customer this long (wall time) is closed (None: never).
    auto_close_after_waiting: float | None = 48 * 3600.0
    # The metrics window the calls counts cover (classification.window).
    calls_window: float = 300.0

    def __post_init__(self) -> None:
        if (
            min(
                self.open_after,
                self.resolve_after,
                self.loss_refresh,
                self.reopen_window,
                self.group_window,
            )
            < 0
        ):
            raise ValueError(
                "open_after, resolve_after, loss_refresh, reopen_window and group_window "
                "must be 0 or more"
            )
        if self.auto_close_after is not None and self.auto_close_after <= 0:
            raise ValueError("auto_close_after must be greater than 0")
        if self.auto_close_after_waiting is not None and self.auto_close_after_waiting <= 0:
            raise ValueError("auto_close_after_waiting must be greater than 0")
        if self.calls_window <= 0:
            raise ValueError("calls_window must be greater than 0")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
        if self.stale_after <= 0:
            raise ValueError("stale_after must be greater than 0")


@dataclass(slots=True)
class _Track:
    """One component's state between observations (times on the monotonic clock)."""

    incident: ActiveIncident | None = None
    at_least_since: list[float | None] = field(default_factory=lambda: [None] * 4)
    at_most_since: list[float | None] = field(default_factory=lambda: [None] * 4)
    last_data_at: float | None = None
    stale: bool = False
    last_observation: Observation | None = None
    # The latest reading at each severity, so an incident that settles on a level says
    # what that level looked like even when the latest reading is above or below it.
    last_at_level: list[Observation | None] = field(default_factory=lambda: [None] * 4)
    loss_written_at: float = 0.0
    # The component's last resolved incident and when it resolved (monotonic), for reopen.
    recent: ActiveIncident | None = None
    recent_at: float = 0.0
    # When (monotonic) its incident went nodata: the gap's length when data resumes.
    silent_mono: float | None = None
    # When (monotonic) the calls counts were last added to an incident's ``calls``, and
    # which incident's.
    calls_sampled_at: float | None = None
    calls_incident: str | None = None

    def reset_holds(self) -> None:
        self.at_least_since = [None] * 4
        self.at_most_since = [None] * 4
        self.last_at_level = [None] * 4


def open_label(incident: ActiveIncident) -> dict[str, str]:
    """Seed 000's definitions: an outage is a component down or a loss at critical
    severity; anything less is a degradation (the open event's ``impact_class``)."""
    down = incident.metrics.get("up") is False or incident.metrics.get("down") is True
    outage = down or incident.severity >= Severity.CRITICAL
    return {"impact_class": "outage" if outage else "degradation"}


def resolve_summary(incident: ActiveIncident, now: float) -> dict[str, Any]:
    """What the resolve event says about the whole incident."""
    return {
        "resolution": {
            "duration_s": round(now - incident.opened_at, 3),
            "peak_severity": incident.peak_severity.label,
            "peak_loss": round(incident.peak_loss, 6),
        }
    }


ALSO_AFFECTED = "; also affected: "
SITE_WIDE = " (site-wide: every component of the site)"


def with_affected(impact: str, affected: Iterable[str], site_wide: bool = False) -> str:
    """``impact`` naming the components attached to the incident (once, at the end), and
    saying "site-wide" when every component of the site is in it."""
    base = impact.split(ALSO_AFFECTED, 1)[0]
    names = list(affected)
    if not names:
        return base
    return f"{base}{ALSO_AFFECTED}{', '.join(names)}{SITE_WIDE if site_wide else ''}"


def live_state(incident: ActiveIncident) -> State:
    """The state of an incident that has data: waiting on the customer, acknowledged or
    open (in that order)."""
    if incident.waiting_since is not None:
        return "waiting_on_customer"
    return "acknowledged" if incident.acknowledged else "open"


def add_calls(
    calls: Mapping[str, float] | None, rejected: float, offered: float | None, window: float
) -> dict[str, float]:
    """``calls`` with one more window's counts summed and the worst window kept."""
    before = dict(calls or {})
    total = {
        "window_s": window,
        "rejected": before.get("rejected", 0.0) + rejected,
        "offered": before.get("offered", 0.0) + (offered or 0.0),
        "windows": before.get("windows", 0.0) + 1,
        "peak_rejected": before.get("peak_rejected", 0.0),
        "peak_offered": before.get("peak_offered", 0.0),
    }
    if rejected > total["peak_rejected"] or "peak_rejected" not in before:
        total["peak_rejected"], total["peak_offered"] = rejected, offered or 0.0
    return total


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


_OPENING = frozenset({"opened", "reopened"})


def new_incident_id() -> str:
    return uuid.uuid4().hex


def _key(component: str, kind: str) -> str:
    return f"{component}\x00{kind}"


def _more_calls(
    proposed: Mapping[str, float] | None, seen: Mapping[str, float] | None
) -> Mapping[str, float] | None:
    """The calls counts with more windows summed (observations go on during a write)."""
    if seen is None:
        return proposed
    if proposed is None:
        return seen
    return seen if seen.get("windows", 0) > proposed.get("windows", 0) else proposed


class Lifecycle:
    """See the module docstring. Not thread-safe; one owner (the incident service)."""

    def __init__(
        self,
        site: str,
        settings: LifecycleSettings | None = None,
        new_id: Callable[[], str] = new_incident_id,
    ) -> None:
        self.site = site
        self.settings = settings or LifecycleSettings()
        self._new_id = new_id
        self._tracks: dict[str, _Track] = {}
        self.telemetry_incident: ActiveIncident | None = None
        # Incidents raised by jobs, by (component, kind).
        self._reported: dict[tuple[str, str], ActiveIncident] = {}
        self._last_mono: float | None = None
        # Proposed and not yet committed or abandoned transitions, by incident key.
        self._pending: dict[str, int] = {}
        # Opens (and reopens) proposed and not yet settled, by component: grouping waits
        # for them.
        self._opening: dict[str, ActiveIncident] = {}

    # --- queries -------------------------------------------------------------------

    def active(self) -> list[ActiveIncident]:
        """Every incident not resolved, production loss ones first."""
        incidents = [t.incident for t in self._tracks.values() if t.incident is not None]
        if self.telemetry_incident is not None:
            incidents.append(self.telemetry_incident)
        incidents.extend(self._reported.values())
        return incidents

    def incident_of(self, component: str) -> ActiveIncident | None:
        track = self._tracks.get(component)
        return track.incident if track else None

    def find(self, incident_id: str) -> ActiveIncident | None:
        return next((i for i in self.active() if i.id == incident_id), None)

    def reported(self, component: str, kind: str) -> ActiveIncident | None:
        return self._reported.get((component, kind))

    def pending(self, incident: ActiveIncident) -> bool:
        """Whether a transition of this incident is proposed and not yet settled."""
        return _key(incident.component, incident.kind) in self._pending

    def _propose(self, transitions: list[Transition]) -> list[Transition]:
        for transition in transitions:
            incident = transition.incident
            if incident is not None:
                key = _key(incident.component, incident.kind)
                self._pending[key] = self._pending.get(key, 0) + 1
                if incident.kind == PRODUCTION_LOSS and transition.change in _OPENING:
                    self._opening[incident.component] = incident
        return transitions

    def _settle(self, incident: ActiveIncident) -> None:
        opening = self._opening.get(incident.component)
        if opening is not None and opening.id == incident.id:
            del self._opening[incident.component]
        key = _key(incident.component, incident.kind)
        left = self._pending.get(key, 0) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)

    def abandon(self, transition: Transition) -> None:
        """The store could not write ``transition``: it will be proposed again."""
        if transition.incident is not None:
            self._settle(transition.incident)

    # --- restoring and committing ---------------------------------------------------

    def restore(
        self, incidents: Iterable[ActiveIncident], now: float, mono: float | None = None
    ) -> None:
        """Continue the incidents the store holds (after a restart or a reload).

        Their components count as heard from at ``mono``, so one whose publisher is gone
        goes ``nodata`` after ``stale_after`` instead of staying open forever.
        """
        mono = now if mono is None else mono
        for incident in incidents:
            if incident.site != self.site:
                continue
            if incident.state in CLOSED_STATES:
                self._remember_resolved(incident, now, mono)
                continue
            if incident.kind == TELEMETRY_LOST:
                self.telemetry_incident = incident
                continue
            if incident.kind != PRODUCTION_LOSS:
                self._reported[(incident.component, incident.kind)] = incident
                continue
            track = self._tracks.setdefault(incident.component, _Track())
            track.incident = incident
            track.last_data_at = mono
            track.stale = incident.state == "nodata"
            track.loss_written_at = mono
            # Continued counts: the next window is added once a whole window has passed.
            track.calls_sampled_at, track.calls_incident = mono, incident.id
            if track.stale and incident.nodata_since is not None:
                track.silent_mono = mono - max(0.0, now - incident.nodata_since)

    def _remember_resolved(self, incident: ActiveIncident, now: float, mono: float) -> None:
        """A recently resolved production-loss incident, for ``reopen_window`` (restore)."""
        if incident.kind != PRODUCTION_LOSS or incident.state != "resolved":
            return
        if incident.resolved_at is None or now - incident.resolved_at > self.settings.reopen_window:
            return
        track = self._tracks.setdefault(incident.component, _Track())
        at = mono - max(0.0, now - incident.resolved_at)
        if track.recent is None or at >= track.recent_at:
            track.recent, track.recent_at = incident, at

    def commit(self, transition: Transition) -> None:
        """The store wrote ``transition``: make it the lifecycle's state."""
        incident = transition.incident
        if incident is None:
            return
        self._settle(incident)
        current = None if incident.state in CLOSED_STATES else incident
        if incident.kind == TELEMETRY_LOST:
            known = self.telemetry_incident
            if current is not None or (known is not None and known.id == incident.id):
                self.telemetry_incident = current
            return
        if incident.kind != PRODUCTION_LOSS:
            key = (incident.component, incident.kind)
            if current is None:
                self._reported.pop(key, None)
            else:
                self._reported[key] = current
            return
        track = self._tracks.setdefault(incident.component, _Track())
        if track.incident is not None and track.incident.id != incident.id and current is None:
            return  # a late commit of an older incident of this component
        if current is not None and track.incident is not None and track.incident.id == current.id:
            # Peaks seen after the proposal are kept; they reach the store with the next write.
            current = replace(
                current,
                peak_loss=max(current.peak_loss, track.incident.peak_loss),
                peak_severity=max(current.peak_severity, track.incident.peak_severity),
                calls=_more_calls(current.calls, track.incident.calls),
            )
        track.incident = current
        if current is None or current.state != "nodata":
            track.silent_mono = None
        if incident.state == "resolved":
            track.recent = incident
            track.recent_at = (
                self._last_mono if self._last_mono is not None else incident.updated_at
            )
        elif current is not None:
            track.recent = None
        if self._last_mono is not None:
            track.loss_written_at = self._last_mono

    # --- inputs ----------------------------------------------------------------------

    def acknowledge(self, incident_id: str, now: float, by: str) -> Transition | None:
        """The acknowledgement of an active incident by ``by`` (None if it is not active
        here or already acknowledged)."""
        incident = self.find(incident_id)
        if incident is None or incident.acknowledged:
            return None
        if self.pending(incident):
            raise RuntimeError("acknowledge() while a change of the incident is unsettled")
        acked = replace(incident, acknowledged=True, updated_at=now)
        state: State = "nodata" if incident.state == "nodata" else live_state(acked)
        acked = replace(acked, state=state)
        transition = Transition(
            "acknowledged",
            acked,
            now,
            incident.severity,
            f"by {by}",
            updates={"acknowledged_at": now, "acknowledged_by": by},
        )
        return self._propose([transition])[0]

    def report(
        self,
        component: str,
        kind: str,
        severity: Severity,
        impact: str,
        now: float,
        detail: Mapping[str, Any] | None = None,
    ) -> list[Transition]:
        """A job's finding for component+kind: opens, escalates, de-escalates, refreshes
        or (``Severity.NONE``) resolves its one incident."""
        if kind in (PRODUCTION_LOSS, TELEMETRY_LOST):
            raise ValueError(f"kind {kind!r} belongs to the MQTT pipeline")
        existing = self._reported.get((component, kind))
        data = {"detail": dict(detail or {})}
        if severity == Severity.NONE:
            if existing is None:
                return []
            resolved = replace(existing, state="resolved", resolved_at=now, updated_at=now)
            return self._propose(
                [Transition("resolved", resolved, now, existing.severity, existing.impact)]
            )
        if existing is None:
            incident = ActiveIncident(
                id=self._new_id(),
                site=self.site,
                component=component,
                kind=kind,
                severity=severity,
                state="open",
                production_loss=0.0,
                peak_loss=0.0,
                peak_severity=severity,
                impact=impact,
                opened_at=now,
                updated_at=now,
            )
            return self._propose(
                [Transition("opened", incident, now, Severity.NONE, impact, data=data)]
            )
        changed = replace(
            existing,
            severity=severity,
            peak_severity=max(existing.peak_severity, severity),
            impact=impact,
            updated_at=now,
        )
        if severity == existing.severity:
            refresh = Transition("refreshed", changed, now, existing.severity, impact, data=data)
            return self._propose([refresh])
        change = "escalated" if severity > existing.severity else "de-escalated"
        detail_text = f"{existing.severity.label} -> {severity.label}: {impact}"
        return self._propose(
            [Transition(change, changed, now, existing.severity, detail_text, data=data)]
        )

    def observe(
        self, component: str, observation: Observation, now: float, mono: float | None = None
    ) -> list[Transition]:
        """A classified measurement of ``component`` at ``now`` (wall) / ``mono``."""
        mono = now if mono is None else mono
        self._last_mono = mono
        track = self._tracks.get(component)
        if track is None:
            track = self._tracks[component] = _Track()
        transitions: list[Transition] = []
        telemetry = self.telemetry_incident
        if telemetry is not None and not self.pending(telemetry):
            transitions.append(self._resolve_telemetry(now))
        track.last_data_at = mono
        previous = track.last_observation
        track.last_observation = observation
        track.last_at_level[observation.severity] = observation
        if track.stale:
            track.stale = False
            track.reset_holds()
        incident = track.incident
        # While a change of this component's incident is being written (or an open),
        # only the holds move: the next message or tick decides, from what was written.
        pending = self._pending
        settled = not pending or _key(component, PRODUCTION_LOSS) not in pending
        if settled and incident is not None and incident.state == "nodata":
            # Proposed until written: a failed write is proposed again by the next message.
            # The gap becomes an SLA hold; its length is monotonic time, so a wall-clock
            # jump while the component was silent neither adds nor removes any.
            since = incident.nodata_since if incident.nodata_since is not None else now
            silent_for = mono - track.silent_mono if track.silent_mono is not None else now - since
            spans = (*incident.nodata_spans, (since, since + max(0.0, silent_for)))
            incident = replace(
                incident,
                state=live_state(incident),
                updated_at=now,
                nodata_since=None,
                nodata_spans=spans,
            )
            transitions.append(
                Transition(
                    "data resumed",
                    incident,
                    now,
                    incident.severity,
                    f"silent for {max(0.0, silent_for):.0f}s (not counted by the SLA clocks)",
                    data={"nodata_since": None, "nodata_spans": [list(s) for s in spans]},
                )
            )
        severity = observation.severity
        if previous is None or previous.severity != severity or track.at_most_since == _NO_HOLDS:
            # The hold start times only move when the severity changes (or after a gap
            # reset them); the same severity again, the common case, leaves them be.
            at_least, at_most = track.at_least_since, track.at_most_since
            for level in (1, 2, 3):
                if severity >= level:
                    if at_least[level] is None:
                        at_least[level] = mono
                else:
                    at_least[level] = None
            for level in (0, 1, 2):
                if severity <= level:
                    if at_most[level] is None:
                        at_most[level] = mono
                else:
                    at_most[level] = None
        if incident is not None and (
            observation.loss > incident.peak_loss or observation.severity > incident.peak_severity
        ):
            # Peak figures follow every observation; they are persisted with the next write.
            incident = replace(
                incident,
                peak_loss=max(incident.peak_loss, observation.loss),
                peak_severity=max(incident.peak_severity, observation.severity),
            )
            if track.incident is not None and incident.state == track.incident.state:
                track.incident = incident
        if incident is not None and incident.kind == PRODUCTION_LOSS:
            incident = self._count_calls(track, incident, observation, mono)
        if settled:
            self._evaluate(component, track, incident, now, mono, transitions)
        return self._propose(transitions) if transitions else transitions

    def _count_calls(
        self, track: _Track, incident: ActiveIncident, observation: Observation, mono: float
    ) -> ActiveIncident:
        """Add the observation's windowed call counts once per ``calls_window``."""
        rejected = _number(observation.metrics.get("calls_rejected"))
        if rejected is None:
            return incident
        sampled = track.calls_sampled_at if track.calls_incident == incident.id else None
        if sampled is not None and mono - sampled < self.settings.calls_window:
            return incident
        track.calls_sampled_at, track.calls_incident = mono, incident.id
        offered = _number(observation.metrics.get("calls_offered"))
        calls = add_calls(incident.calls, rejected, offered, self.settings.calls_window)
        counted = replace(incident, calls=calls)
        if track.incident is not None and track.incident.id == incident.id:
            if track.incident.state == counted.state:
                track.incident = counted
            else:
                track.incident = replace(track.incident, calls=counted.calls)
        return counted

    def waiting(
        self, incident_id: str, waiting: bool, now: float, source: str
    ) -> Transition | None:
        """A service desk says the vendor waits on us (``waiting``) or that we replied:
        the transition of the active incident, or None when it is not active here or
        already in that state (nothing to record)."""
        incident = self.find(incident_id)
        if incident is None or (incident.waiting_since is not None) == waiting:
            return None
        if self.pending(incident):
            raise RuntimeError("waiting() while a change of the incident is unsettled")
        return self._propose([waiting_transition(incident, waiting, now, source)])[0]

    def tick(self, now: float, mono: float | None = None) -> list[Transition]:
        """Time passed without data: finish holds, mark stale components, telemetry lost."""
        mono = now if mono is None else mono
        self._last_mono = mono
        transitions: list[Transition] = []
        stale_after = self.settings.stale_after
        for component, track in self._tracks.items():
            if track.last_data_at is None or _key(component, PRODUCTION_LOSS) in self._pending:
                continue
            if transitions and any(
                t.incident is not None and t.incident.component == component for t in transitions
            ):
                continue  # a dependant attached itself to this incident in this tick
            if track.stale or mono - track.last_data_at >= stale_after:
                if not track.stale:
                    track.stale = True
                    track.reset_holds()
                incident = track.incident
                if incident is not None and incident.state != "nodata":
                    track.silent_mono = mono
                    silent = replace(incident, state="nodata", updated_at=now, nodata_since=now)
                    transitions.append(
                        Transition(
                            "nodata", silent, now, incident.severity, data={"nodata_since": now}
                        )
                    )
                elif incident is not None and self._expires(incident, now):
                    transitions.append(self._expire(incident, now))
            elif track.last_observation is not None:
                self._evaluate(component, track, track.incident, now, mono, transitions)
        heard = [t for t in self._tracks.values() if t.last_data_at is not None]
        telemetry_pending = _key(TELEMETRY_COMPONENT, TELEMETRY_LOST) in self._pending
        if (
            heard
            and self.telemetry_incident is None
            and not telemetry_pending
            and all(t.stale for t in heard)
        ):
            transitions.append(self._open_telemetry(now))
        self._close_waiting(now, transitions)
        return self._propose(transitions)

    def _close_waiting(self, now: float, transitions: list[Transition]) -> None:
        """Close the incidents waiting on the customer ``auto_close_after_waiting``."""
        limit = self.settings.auto_close_after_waiting
        if limit is None:
            return
        touched = {t.incident_id for t in transitions}
        for incident in self.active():
            since = incident.waiting_since
            if since is None or now - since < limit or incident.id in touched:
                continue
            if self.pending(incident):
                continue
            closed = replace(incident, state="expired", updated_at=now)
            transitions.append(
                Transition(
                    "expired",
                    closed,
                    now,
                    incident.severity,
                    f"waiting on the customer for {now - since:.0f}s (auto_close_after_waiting):"
                    " closed without a recovery",
                    data={"closed_at": now, "closed_reason": "waiting_on_customer"},
                    extras={
                        "closed": {
                            "reason": "waiting_on_customer",
                            "waited_s": round(now - since),
                        }
                    },
                )
            )

    # --- the decisions ------------------------------------------------------------

    def _expires(self, incident: ActiveIncident, now: float) -> bool:
        limit = self.settings.auto_close_after
        since = incident.nodata_since
        return limit is not None and since is not None and now - since >= limit

    def _expire(self, incident: ActiveIncident, now: float) -> Transition:
        expired = replace(incident, state="expired", updated_at=now)
        silent = now - (incident.nodata_since or now)
        return Transition(
            "expired",
            expired,
            now,
            incident.severity,
            f"no data for {silent:.0f}s (auto_close_after): closed without a recovery",
            data={"closed_at": now, "closed_reason": "nodata"},
            extras={"closed": {"reason": "nodata", "silent_s": round(silent)}},
        )

    def _evaluate(
        self,
        component: str,
        track: _Track,
        incident: ActiveIncident | None,
        now: float,
        mono: float,
        transitions: list[Transition],
    ) -> None:
        observation = track.last_observation
        if observation is None:
            return
        settings = self.settings
        current = incident.severity if incident is not None else Severity.NONE
        target = current
        for level in range(3, current, -1):
            since = track.at_least_since[level]
            if since is not None and mono - since >= settings.open_after:
                target = _LEVELS[level]
                break
        if target == current:
            for level in range(0, current):
                since = track.at_most_since[level]
                if since is not None and mono - since >= settings.resolve_after:
                    target = _LEVELS[level]
                    break
        if target == current:
            if (
                incident is not None
                and observation.loss != incident.production_loss
                and mono - track.loss_written_at >= settings.loss_refresh
            ):
                # The impact sentence follows only readings at the incident's own level:
                # while a recovery waits out resolve_after, the incident still says what
                # it is about rather than "no production loss".
                same_level = observation.severity == incident.severity
                refreshed = replace(
                    incident,
                    production_loss=observation.loss,
                    impact=with_affected(
                        observation.impact if same_level else incident.impact,
                        incident.affected,
                        self.site_wide(incident.component, incident.affected),
                    ),
                    metrics=observation.metrics,
                    updated_at=now,
                )
                transitions.append(Transition("loss", refreshed, now, current))
            return
        described = track.last_at_level[target] or observation
        if incident is None and self._grouped(component, target, described, now, transitions):
            return
        recent = track.recent
        if (
            incident is None
            and recent is not None
            and mono - track.recent_at <= settings.reopen_window
        ):
            count = recent.reopen_count + 1
            reopened = replace(
                recent,
                severity=target,
                state="acknowledged" if recent.acknowledged else "open",
                waiting_since=None,
                production_loss=observation.loss,
                peak_loss=max(recent.peak_loss, observation.loss),
                peak_severity=max(recent.peak_severity, target),
                impact=described.impact,
                updated_at=now,
                resolved_at=None,
                metrics=observation.metrics,
                nodata_since=None,
                reopen_count=count,
            )
            since = mono - track.recent_at
            transitions.append(
                Transition(
                    "reopened",
                    reopened,
                    now,
                    current,
                    f"back {since:.0f}s after its resolve (reopen #{count}): {described.impact}",
                    updates={"resolved_at": None},
                    data={"reopen_count": count},
                    extras={"reopen_count": count},
                )
            )
            return
        if incident is None:
            opened = ActiveIncident(
                id=self._new_id(),
                site=self.site,
                component=component,
                kind=PRODUCTION_LOSS,
                severity=target,
                state="open",
                production_loss=observation.loss,
                peak_loss=observation.loss,
                peak_severity=target,
                impact=described.impact,
                opened_at=now,
                updated_at=now,
                metrics=observation.metrics,
            )
            transitions.append(
                Transition("opened", opened, now, current, extras=open_label(opened))
            )
            return
        if target == Severity.NONE:
            # The record keeps its last severity and impact, so a resolved incident
            # still says what it was; the timeline says what the recovery looked like.
            resolved = replace(
                incident,
                state="resolved",
                production_loss=observation.loss,
                metrics=observation.metrics,
                updated_at=now,
                resolved_at=now,
            )
            data: dict[str, Any] = {}
            if incident.waiting_since is not None:
                # A wait still running ends with the incident (a reopen starts afresh).
                resolved = _end_wait(resolved, now)
                data = _wait_data(resolved)
            transitions.append(
                Transition(
                    "resolved",
                    resolved,
                    now,
                    current,
                    f"recovered: {observation.impact}",
                    data=data,
                    extras=resolve_summary(resolved, now),
                )
            )
            return
        changed = replace(
            incident,
            severity=target,
            production_loss=observation.loss,
            peak_loss=max(incident.peak_loss, observation.loss),
            peak_severity=max(incident.peak_severity, target),
            impact=with_affected(
                described.impact,
                incident.affected,
                self.site_wide(incident.component, incident.affected),
            ),
            metrics=observation.metrics,
            updated_at=now,
        )
        change = "escalated" if target > current else "de-escalated"
        detail = f"{current.label} -> {target.label}: {changed.impact}"
        transitions.append(Transition(change, changed, now, current, detail))

    def covering(self, component: str) -> ActiveIncident | None:
        """The active production-loss incident ``component`` is in: its own, or the one
        it was attached to (one ticket per fault)."""
        own = self.incident_of(component)
        return own if own is not None else self._attached_to(component)

    def _attached_to(self, component: str) -> ActiveIncident | None:
        for track in self._tracks.values():
            incident = track.incident
            if incident is not None and component in incident.affected:
                return incident
        return None

    def site_wide(self, component: str, affected: Iterable[str]) -> bool:
        """Whether an incident of ``component`` with ``affected`` covers every component
        of the site: every configured one that telemetry was heard from (the five
        standard components are always configured, a site may use only some), two or
        more."""
        configured = set(self.settings.components)  # none given (replays, tests): never
        heard = {name for name, track in self._tracks.items() if track.last_data_at is not None}
        heard &= configured
        return len(heard) > 1 and heard <= {component, *affected}

    def _opening_of(self, component: str, transitions: list[Transition]) -> ActiveIncident | None:
        """An open of ``component``'s incident proposed and not yet written."""
        for transition in transitions:
            incident = transition.incident
            if (
                incident is not None
                and incident.component == component
                and incident.kind == PRODUCTION_LOSS
                and transition.change in _OPENING
            ):
                return incident
        return self._opening.get(component)

    def _group_host(
        self, component: str, now: float, transitions: list[Transition]
    ) -> tuple[ActiveIncident, str] | None:
        """The incident the fault of ``component`` joins (and why), if any: a parent's
        (``depends_on``) opened within ``group_window``, else, grouping by site, the
        earliest production-loss incident of the site opened within it. An open proposed
        and not yet written is a candidate too (the caller then waits for it)."""
        window = self.settings.group_window
        for parent in self.settings.depends_on.get(component, ()):
            incident = self.covering(parent) or self._opening_of(parent, transitions)
            if incident is not None and now - incident.opened_at <= window:
                return incident, f"depends on {parent}"
        if self.settings.group_by != "site":
            return None
        candidates: list[ActiveIncident] = []
        for name, track in self._tracks.items():
            if name == component:
                continue
            incident = track.incident or self._opening_of(name, transitions)
            if (
                incident is not None
                and incident.kind == PRODUCTION_LOSS
                and incident.state not in CLOSED_STATES
                and now - incident.opened_at <= window
            ):
                candidates.append(incident)
        if not candidates:
            return None
        host = min(candidates, key=lambda i: (i.opened_at, i.component))
        return host, f"site {self.site}: within group_window of {host.component}'s open"

    def _grouped(
        self,
        component: str,
        target: Severity,
        described: Observation,
        now: float,
        transitions: list[Transition],
    ) -> bool:
        """Whether the fault of ``component`` (no incident of its own) belongs to another
        incident: already attached, waiting for a write of it, or attached now (an
        ``affected`` transition of that incident is appended)."""
        if self._attached_to(component) is not None:
            return True
        found = self._group_host(component, now, transitions)
        if found is None:
            return False
        incident, why = found
        written = self._tracks.get(incident.component)
        if (
            written is None
            or written.incident is None
            or written.incident.id != incident.id
            or self.pending(incident)
            or any(t.incident_id == incident.id for t in transitions)
        ):
            return True  # decided once that incident is written
        affected = (*incident.affected, component)
        site_wide = self.site_wide(incident.component, affected)
        grouped = replace(
            incident,
            affected=affected,
            impact=with_affected(incident.impact, affected, site_wide),
            updated_at=now,
        )
        scope = {"affected_components": list(affected), "site_wide": site_wide}
        detail = f"{component} {target.label} ({why}): {described.impact}"
        if site_wide:
            detail += "; site-wide: every component of the site is affected"
        transitions.append(
            Transition(
                "affected",
                grouped,
                now,
                incident.severity,
                detail,
                data=scope,
                extras=scope,
            )
        )
        return True

    def _open_telemetry(self, now: float) -> Transition:
        silent = sorted(c for c, t in self._tracks.items() if t.last_data_at is not None)
        impact = (
            f"no telemetry from any component for {self.settings.stale_after:g}s "
            f"({', '.join(silent)})"
        )
        incident = ActiveIncident(
            id=self._new_id(),
            site=self.site,
            component=TELEMETRY_COMPONENT,
            kind=TELEMETRY_LOST,
            severity=Severity.MINOR,
            state="open",
            production_loss=0.0,
            peak_loss=0.0,
            peak_severity=Severity.MINOR,
            impact=impact,
            opened_at=now,
            updated_at=now,
        )
        return Transition("opened", incident, now, Severity.NONE)

    def _resolve_telemetry(self, now: float) -> Transition:
        assert self.telemetry_incident is not None
        incident = self.telemetry_incident
        resolved = replace(incident, state="resolved", updated_at=now, resolved_at=now)
        return Transition("resolved", resolved, now, incident.severity, "telemetry arrives again")


# --- waiting on the customer (docs/architecture.md, "Waiting on the customer") ---------


def _end_wait(incident: ActiveIncident, now: float) -> ActiveIncident:
    since = incident.waiting_since
    if since is None:
        return incident
    span = (since, max(since, now))
    return replace(incident, waiting_since=None, waiting_spans=(*incident.waiting_spans, span))


def _wait_data(incident: ActiveIncident) -> dict[str, Any]:
    return {
        "waiting_since": incident.waiting_since,
        "waiting_spans": [list(span) for span in incident.waiting_spans],
    }


def waiting_transition(
    incident: ActiveIncident, waiting: bool, now: float, source: str
) -> Transition:
    """``waiting_on_customer`` (the resolution clock holds from ``now``) or
    ``customer_replied`` (the wait becomes a finished span) of an active incident."""
    if waiting:
        changed = replace(incident, waiting_since=now, updated_at=now)
        change, detail = "waiting_on_customer", f"{source}: the vendor waits on us"
    else:
        changed = replace(_end_wait(incident, now), updated_at=now)
        waited = now - (incident.waiting_since or now)
        change = "customer_replied"
        detail = f"{source}: no longer waiting on us (waited {waited:.0f}s)"
    if changed.state != "nodata":
        changed = replace(changed, state=live_state(changed))
    return Transition(
        change,
        changed,
        now,
        incident.severity,
        detail,
        data={**_wait_data(changed), "waiting_source": source},
        extras={"waiting": {"waiting": waiting, "source": source}},
    )


# --- maintenance windows (docs/architecture.md, "Maintenance windows") ------------------

DEFERRED_KEY = "upstream_deferred"  # incidents.data: opened inside a window, not sent yet
RELEASE_CHANGE = "maintenance_ended"  # the deferred open, written when the window ended


def _with(
    transition: Transition,
    *,
    event: Event | None,
    detail: str,
    data: Mapping[str, Any] | None = None,
) -> Transition:
    return Transition(
        transition.change,
        transition.incident,
        transition.at,
        transition.previous_severity,
        detail,
        incident_id=transition.incident_id,
        event=event,
        updates=transition.updates,
        data={**transition.data, **(data or {})},
        targets=transition.targets,
        extras=transition.extras,
    )


def maintenance_gate(
    transition: Transition, *, deferred: bool, window: Mapping[str, Any] | None
) -> Transition:
    """What upstreams hear of ``transition`` given maintenance (pure).

    - An ``open`` while the component is in ``window``: recorded with ``in_maintenance``
      and the window, nothing sent (``upstream_deferred``; no SLA clock runs).
    - Any event of a deferred incident (upstreams never heard of it): recorded only —
      so one that ends inside the window sends nothing — except the release
      (``maintenance_ended``, written as ``open`` once the window is over).
    - An incident opened upstream before a window keeps every event, its resolve too.
    """
    event = transition.event
    if event is None or transition.change == RELEASE_CHANGE:
        return transition
    if deferred:
        return _with(
            transition,
            event=None,
            detail=f"{transition.detail} (in maintenance: not sent upstream)".lstrip(),
        )
    if event is Event.OPEN and window is not None and transition.targets is None:
        reason = str(window.get("reason") or "")
        return _with(
            transition,
            event=None,
            detail=(
                f"{transition.detail} (in maintenance: {reason}; held back from upstream "
                "until the window ends)"
            ).lstrip(),
            data={"in_maintenance": True, "maintenance": dict(window), DEFERRED_KEY: True},
        )
    return transition


def release_after_maintenance(
    incident: ActiveIncident, window: Mapping[str, Any] | None, now: float, started: str
) -> Transition:
    """The deferred ``open`` of an incident still active when its window ended."""
    return Transition(
        RELEASE_CHANGE,
        None,
        now,
        incident.severity,
        f"maintenance window over, incident still active: opened upstream (started {started})",
        incident_id=incident.id,
        event=Event.OPEN,
        data={DEFERRED_KEY: False, "opened_upstream_at": now, "sla_start": now},
        extras={
            "started_at": started,
            "opened_after_maintenance": dict(window) if window else True,
        },
    )
