"""The incident state machine (pure: observations and the time in, transitions out).

One ``Lifecycle`` per site. For each component it keeps at most one active incident
and decides, from the severities observed and the time passed in, when that incident
opens, escalates, de-escalates, goes ``nodata`` and resolves (DESIGN.md contract 2):

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

The caller persists each ``Transition`` (the store writes the incident, its timeline
and the outbox in one transaction) and feeds acknowledgements back with
``acknowledge``. Ids come from the injected ``new_id`` so tests can replay runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from ccwatch.severity import Severity

PRODUCTION_LOSS = "production_loss"
TELEMETRY_LOST = "telemetry_lost"
TELEMETRY_COMPONENT = "telemetry"

State = Literal["open", "acknowledged", "nodata", "resolved"]
# What happened, as written in the timeline, and the upstream event it sends (None:
# a refresh of the loss figure that only the store sees).
Change = Literal[
    "opened", "escalated", "de-escalated", "nodata", "data resumed", "resolved", "loss"
]
EVENT_OF_CHANGE: dict[str, str | None] = {
    "opened": "open",
    "escalated": "escalate",
    "de-escalated": "update",
    "nodata": "update",
    "data resumed": "update",
    "resolved": "resolve",
    "loss": None,
}
_LEVELS = (Severity.NONE, Severity.MINOR, Severity.MAJOR, Severity.CRITICAL)


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


@dataclass(frozen=True, slots=True)
class Transition:
    change: Change
    incident: ActiveIncident  # as it is after the change
    at: float
    previous_severity: Severity = Severity.NONE
    detail: str = ""  # for the timeline; defaults to the incident's impact

    @property
    def event(self) -> str | None:
        return EVENT_OF_CHANGE[self.change]


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    open_after: float = 30.0
    resolve_after: float = 300.0
    stale_after: float = 120.0
    # The loss figure of an open incident is refreshed in the store at most this often
    # (it changes with nearly every message; the severity changes are what matter).
    loss_refresh: float = 10.0

    def __post_init__(self) -> None:
        if min(self.open_after, self.resolve_after, self.loss_refresh) < 0:
            raise ValueError("open_after, resolve_after and loss_refresh must be 0 or more")
        if self.stale_after <= 0:
            raise ValueError("stale_after must be greater than 0")


@dataclass(slots=True)
class _Track:
    """One component's state between observations."""

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

    def reset_holds(self) -> None:
        self.at_least_since = [None] * 4
        self.at_most_since = [None] * 4
        self.last_at_level = [None] * 4


def new_incident_id() -> str:
    return uuid.uuid4().hex


class Lifecycle:
    """See the module docstring. Not thread-safe; one owner (the pipeline task)."""

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

    # --- queries -------------------------------------------------------------------

    def active(self) -> list[ActiveIncident]:
        """Every incident not resolved, production loss ones first."""
        incidents = [t.incident for t in self._tracks.values() if t.incident is not None]
        if self.telemetry_incident is not None:
            incidents.append(self.telemetry_incident)
        return incidents

    def incident_of(self, component: str) -> ActiveIncident | None:
        track = self._tracks.get(component)
        return track.incident if track else None

    # --- inputs ----------------------------------------------------------------------

    def restore(self, incidents: Iterable[ActiveIncident], now: float) -> None:
        """Continue the incidents the store holds (after a restart or a reload).

        Their components count as heard from at ``now``, so one whose publisher is gone
        goes ``nodata`` after ``stale_after`` instead of staying open forever.
        """
        for incident in incidents:
            if incident.state == "resolved" or incident.site != self.site:
                continue
            if incident.kind == TELEMETRY_LOST:
                self.telemetry_incident = incident
                continue
            if incident.kind != PRODUCTION_LOSS:
                continue
            track = self._tracks.setdefault(incident.component, _Track())
            track.incident = incident
            track.last_data_at = now
            track.stale = incident.state == "nodata"
            track.loss_written_at = now

    def acknowledge(self, incident_id: str, now: float) -> ActiveIncident | None:
        """Record an acknowledgement made elsewhere (API, CLI); returns the incident."""
        if self.telemetry_incident is not None and self.telemetry_incident.id == incident_id:
            self.telemetry_incident = _acknowledged(self.telemetry_incident, now)
            return self.telemetry_incident
        for track in self._tracks.values():
            if track.incident is not None and track.incident.id == incident_id:
                track.incident = _acknowledged(track.incident, now)
                return track.incident
        return None

    def observe(self, component: str, observation: Observation, now: float) -> list[Transition]:
        """A classified measurement of ``component`` at ``now``."""
        track = self._tracks.get(component)
        if track is None:
            track = self._tracks[component] = _Track()
        transitions: list[Transition] = []
        if self.telemetry_incident is not None:
            transitions.append(self._resolve_telemetry(now))
        track.last_data_at = now
        previous = track.last_observation
        track.last_observation = observation
        track.last_at_level[observation.severity] = observation
        if track.stale:
            track.stale = False
            track.reset_holds()
            incident = track.incident
            if incident is not None and incident.state == "nodata":
                track.incident = replace(
                    incident,
                    state="acknowledged" if incident.acknowledged else "open",
                    updated_at=now,
                )
                transitions.append(
                    Transition("data resumed", track.incident, now, incident.severity)
                )
        severity = observation.severity
        if previous is None or previous.severity != severity or not any(track.at_most_since):
            # The hold start times only move when the severity changes (or after a gap
            # reset them); the same severity again, the common case, leaves them be.
            at_least, at_most = track.at_least_since, track.at_most_since
            for level in (1, 2, 3):
                if severity >= level:
                    if at_least[level] is None:
                        at_least[level] = now
                else:
                    at_least[level] = None
            for level in (0, 1, 2):
                if severity <= level:
                    if at_most[level] is None:
                        at_most[level] = now
                else:
                    at_most[level] = None
        incident = track.incident
        if incident is not None and (
            observation.loss > incident.peak_loss or observation.severity > incident.peak_severity
        ):
            # Peak figures follow every observation; they are persisted with the next write.
            track.incident = incident = replace(
                incident,
                peak_loss=max(incident.peak_loss, observation.loss),
                peak_severity=max(incident.peak_severity, observation.severity),
            )
        self._evaluate(component, track, now, transitions)
        return transitions

    def tick(self, now: float) -> list[Transition]:
        """Time passed without data: finish holds, mark stale components, telemetry lost."""
        transitions: list[Transition] = []
        stale_after = self.settings.stale_after
        for component, track in self._tracks.items():
            if track.stale or track.last_data_at is None:
                continue
            if now - track.last_data_at >= stale_after:
                track.stale = True
                track.reset_holds()
                incident = track.incident
                if incident is not None and incident.state != "nodata":
                    track.incident = replace(incident, state="nodata", updated_at=now)
                    transitions.append(Transition("nodata", track.incident, now, incident.severity))
            elif track.last_observation is not None:
                self._evaluate(component, track, now, transitions)
        heard = [t for t in self._tracks.values() if t.last_data_at is not None]
        if heard and self.telemetry_incident is None and all(t.stale for t in heard):
            transitions.append(self._open_telemetry(now))
        return transitions

    # --- the decisions ------------------------------------------------------------

    def _evaluate(
        self, component: str, track: _Track, now: float, transitions: list[Transition]
    ) -> None:
        observation = track.last_observation
        if observation is None:
            return
        settings = self.settings
        incident = track.incident
        current = incident.severity if incident is not None else Severity.NONE
        target = current
        for level in range(3, current, -1):
            since = track.at_least_since[level]
            if since is not None and now - since >= settings.open_after:
                target = _LEVELS[level]
                break
        if target == current:
            for level in range(0, current):
                since = track.at_most_since[level]
                if since is not None and now - since >= settings.resolve_after:
                    target = _LEVELS[level]
                    break
        if target == current:
            if (
                incident is not None
                and observation.loss != incident.production_loss
                and now - track.loss_written_at >= settings.loss_refresh
            ):
                # The impact sentence follows only readings at the incident's own level:
                # while a recovery waits out resolve_after, the incident still says what
                # it is about rather than "no production loss".
                same_level = observation.severity == incident.severity
                track.incident = replace(
                    incident,
                    production_loss=observation.loss,
                    impact=observation.impact if same_level else incident.impact,
                    metrics=observation.metrics,
                    updated_at=now,
                )
                track.loss_written_at = now
                transitions.append(Transition("loss", track.incident, now, current))
            return
        track.loss_written_at = now
        described = track.last_at_level[target] or observation
        if incident is None:
            track.incident = ActiveIncident(
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
            transitions.append(Transition("opened", track.incident, now, current))
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
            track.incident = None
            transitions.append(
                Transition("resolved", resolved, now, current, f"recovered: {observation.impact}")
            )
            return
        track.incident = replace(
            incident,
            severity=target,
            production_loss=observation.loss,
            peak_loss=max(incident.peak_loss, observation.loss),
            peak_severity=max(incident.peak_severity, target),
            impact=described.impact,
            metrics=observation.metrics,
            updated_at=now,
        )
        change: Change = "escalated" if target > current else "de-escalated"
        transitions.append(Transition(change, track.incident, now, current))

    def _open_telemetry(self, now: float) -> Transition:
        silent = sorted(c for c, t in self._tracks.items() if t.last_data_at is not None)
        impact = (
            f"no telemetry from any component for {self.settings.stale_after:g}s "
            f"({', '.join(silent)})"
        )
        self.telemetry_incident = ActiveIncident(
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
        return Transition("opened", self.telemetry_incident, now, Severity.NONE)

    def _resolve_telemetry(self, now: float) -> Transition:
        assert self.telemetry_incident is not None
        incident = self.telemetry_incident
        self.telemetry_incident = None
        resolved = replace(incident, state="resolved", updated_at=now, resolved_at=now)
        return Transition("resolved", resolved, now, incident.severity, "telemetry arrives again")


def _acknowledged(incident: ActiveIncident, now: float) -> ActiveIncident:
    state: State = "nodata" if incident.state == "nodata" else "acknowledged"
    return replace(incident, acknowledged=True, state=state, updated_at=now)
