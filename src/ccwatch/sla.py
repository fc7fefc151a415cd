"""SLA clocks, business calendars and automatic escalation (pure: the time is passed in).

Three parts, each usable on its own:

- ``BusinessCalendar``: working hours in an IANA time zone with holidays.
  ``business_time_between(start, end)`` and ``due_after(start, duration)`` are exact
  (to the microsecond) across weekends, holidays and DST changes: a working day is the
  real elapsed time between its local opening and closing instants, so the 25-hour
  autumn day of a ``24x5`` calendar counts 25 hours.
- ``SlaConfig`` (``sla:`` in config.yaml): per severity, the first-response,
  resolution and RCA targets and the calendar they run on. ``clocks(...)`` turns an
  incident's timestamps into its running/stopped/breached clocks.
- ``EscalationConfig`` (``escalation:``): ordered levels (Tier 1 → Tier 2 →
  engineering, or CSM → COO → CEO), each with a trigger (an SLA clock's warning or
  breach, or ``opened``), optional ``when:`` conditions on the incident (severity,
  component, kind, recurrences: ``IncidentFacts``, read by the caller) and targets (none:
  the step is only recorded). ``escalations_due(...)`` returns the steps that are due
  and not yet sent; the caller records each step it sends and passes the recorded names
  back, so a step is sent once, across restarts.

Defaults are seed 004's standard plan: first response 90 min on a 24x5 calendar,
resolution critical 6 h / major 48 h / minor none, RCA for critical 72 h after
resolution. ``rca_from: opened`` starts the RCA clock at the open instead (seed 000: RCA
within 24 h of the incident) and ``rca_calendar`` gives it a calendar of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ccwatch.configbase import UTC_ZONE, StrictModel, TimeZone, repeated, time_zone
from ccwatch.durations import Duration
from ccwatch.severity import Severity, SeverityName

ClockKind = Literal["first_response", "resolution", "rca"]
RcaFrom = Literal["resolved", "opened"]
CLOCK_KINDS: tuple[ClockKind, ...] = ("first_response", "resolution", "rca")

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RULE = re.compile(
    r"^\s*(?P<days>[a-z]{3}(?:\s*-\s*[a-z]{3})?(?:\s*,\s*[a-z]{3}(?:\s*-\s*[a-z]{3})?)*)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
_DAY_MINUTES = 24 * 60

# --- business calendars ------------------------------------------------------------

WeeklyHours = tuple[tuple[tuple[int, int], ...], ...]
"""Per weekday (Monday first), sorted non-overlapping (start, end) minute ranges."""


def parse_hours(spec: str | Sequence[str]) -> WeeklyHours:
    """``24x7``, ``24x5`` or rules like ``mon-fri 09:00-18:00`` / ``sat 10:00-14:00``.

    Raises ValueError saying what a valid rule looks like.
    """
    if isinstance(spec, str):
        preset = spec.strip().lower()
        if preset == "24x7":
            return tuple(((0, _DAY_MINUTES),) for _ in range(7))
        if preset == "24x5":
            return tuple(((0, _DAY_MINUTES),) if d < 5 else () for d in range(7))
        rules: Sequence[str] = [spec]
    else:
        rules = spec
    days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for rule in rules:
        match = _HOURS_RULE.match(rule.lower())
        if not match:
            raise ValueError(
                f"working hours {rule!r} not understood; write '24x7', '24x5' or rules such "
                "as 'mon-fri 09:00-18:00' (end 24:00 allowed)"
            )
        start, end = _minutes(match["start"]), _minutes(match["end"])
        if not start < end:
            raise ValueError(f"working hours {rule!r}: the end must be after the start")
        for weekday in _weekdays(match["days"], rule):
            days[weekday].append((start, end))
    if not any(days):
        raise ValueError("a calendar needs some working hours")
    return tuple(_merge(ranges) for ranges in days)


def _minutes(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes >= 60 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time of day from 00:00 to 24:00")
    return hours * 60 + minutes


def _weekdays(text: str, rule: str) -> list[int]:
    result: list[int] = []
    for part in text.split(","):
        first, _, last = (item.strip() for item in part.partition("-"))
        last = last or first
        if first not in _DAY_NAMES or last not in _DAY_NAMES:
            raise ValueError(f"working hours {rule!r}: days are mon, tue, wed, thu, fri, sat, sun")
        index, stop = _DAY_NAMES.index(first), _DAY_NAMES.index(last)
        while True:  # a range may wrap around the week (sat-mon)
            result.append(index)
            if index == stop:
                break
            index = (index + 1) % 7
    return result


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _require_aware(*instants: datetime) -> None:
    for instant in instants:
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError(f"{instant!r} has no time zone; pass aware datetimes")


@dataclass(frozen=True)
class BusinessCalendar:
    """Working time in one time zone. Instants in and out are aware datetimes (UTC out)."""

    timezone: ZoneInfo
    weekly: WeeklyHours
    holidays: frozenset[date] = frozenset()

    @classmethod
    def build(
        cls,
        hours: str | Sequence[str] = "24x7",
        timezone: ZoneInfo | str = UTC_ZONE,
        holidays: Iterable[date] = (),
    ) -> BusinessCalendar:
        return cls(time_zone(timezone), parse_hours(hours), frozenset(holidays))

    @property
    def always_open(self) -> bool:
        return not self.holidays and all(day == ((0, _DAY_MINUTES),) for day in self.weekly)

    def _local_instant(self, day: date, minute: int) -> datetime:
        if minute == _DAY_MINUTES:
            day, minute = day + timedelta(days=1), 0
        # fold=0: a wall time skipped by a spring-forward change maps just past the gap,
        # a repeated one (autumn) to its first occurrence.
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.timezone)
        return local.astimezone(UTC)

    def intervals(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals [open, close) in UTC, in order, from the day before ``since``.

        Each local day yields its own ranges (Monday 00:00-24:00 and Tuesday 00:00-…
        touch but are not merged), so the generator always moves on.
        """
        day = since.astimezone(self.timezone).date() - timedelta(days=1)
        while True:
            if day not in self.holidays:
                for start, end in self.weekly[day.weekday()]:
                    opens, closes = self._local_instant(day, start), self._local_instant(day, end)
                    if closes > opens:
                        yield opens, closes
            day += timedelta(days=1)

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time in [start, end); zero when end is not after start."""
        _require_aware(start, end)
        if end <= start:
            return timedelta(0)
        if self.always_open:
            return end.astimezone(UTC) - start.astimezone(UTC)
        total = timedelta(0)
        for opens, closes in self.intervals(start):
            if opens >= end:
                break
            overlap = min(closes, end) - max(opens, start)
            if overlap > timedelta(0):
                total += overlap
        return total

    def due_after(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which ``duration`` of working time has passed since ``start``.

        A zero duration is due at ``start``; otherwise the result lies inside working
        hours or exactly at a closing time.
        """
        _require_aware(start)
        if duration < timedelta(0):
            raise ValueError("duration must not be negative")
        start = start.astimezone(UTC)
        if duration == timedelta(0):
            return start
        if self.always_open:
            return start + duration
        remaining = duration
        for opens, closes in self.intervals(start):
            if closes <= start:
                continue
            begin = max(opens, start)
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable: a calendar always has working hours ahead")


class CalendarConfig(StrictModel):
    """``timezone`` (IANA), ``hours`` (24x7, 24x5 or rules) and ``holidays`` (local dates).

    A calendar written without ``timezone`` runs in the site's time zone: the root config
    fills it in from ``site_timezone`` (``SlaConfig.with_default_timezone``); UTC only
    where a calendar is built on its own.
    """

    timezone: TimeZone = Field(UTC_ZONE, description="IANA time zone; default: site_timezone")
    hours: str | list[str] = "24x5"
    holidays: list[date] = Field(default_factory=list)
    # True when ``timezone`` is the site's, filled in by ``SlaConfig.with_default_timezone``.
    _site_zone: bool = PrivateAttr(default=False)

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: str | list[str]) -> str | list[str]:
        parse_hours(value)
        return value

    @cached_property
    def calendar(self) -> BusinessCalendar:
        return BusinessCalendar.build(self.hours, self.timezone, self.holidays)


# --- SLA policy ------------------------------------------------------------------------


class SeverityTargets(StrictModel):
    """The clocks of one severity; a missing target means no SLA for that clock."""

    first_response: Duration | None = None
    resolution: Duration | None = None
    rca: Duration | None = Field(None, description="RCA due this long after `rca_from`")
    calendar: str = "default"
    rca_from: RcaFrom = Field(
        "resolved", description="the RCA clock starts when the incident is resolved or opened"
    )
    rca_calendar: str | None = Field(
        None, description="the RCA clock's own calendar; default: `calendar`"
    )

    def target(self, kind: ClockKind) -> timedelta | None:
        value: timedelta | None = getattr(self, kind)
        return value

    def calendar_name(self, kind: ClockKind) -> str:
        """The calendar a clock runs on: ``rca_calendar`` for the RCA clock when set."""
        if kind == "rca" and self.rca_calendar is not None:
            return self.rca_calendar
        return self.calendar


def _seed004_targets() -> dict[str, SeverityTargets]:
    ninety = timedelta(minutes=90)
    return {
        "critical": SeverityTargets(
            first_response=ninety, resolution=timedelta(hours=6), rca=timedelta(hours=72)
        ),
        "major": SeverityTargets(first_response=ninety, resolution=timedelta(hours=48)),
        "minor": SeverityTargets(first_response=ninety),  # resolution: "next release"
    }


class SlaConfig(StrictModel):
    """``sla:`` — calendars by name and the targets of each severity."""

    enabled: bool = True
    calendars: dict[str, CalendarConfig] = Field(
        default_factory=lambda: {"default": CalendarConfig()}
    )
    severities: dict[str, SeverityTargets] = Field(default_factory=_seed004_targets)

    @field_validator("severities", mode="before")
    @classmethod
    def _severity_names(cls, value: object) -> object:
        if isinstance(value, dict):
            for key in value:
                if Severity.parse(key) is Severity.NONE:
                    raise ValueError("severities are minor, major and critical")
            return {Severity.parse(key).label: item for key, item in value.items()}
        return value

    @model_validator(mode="after")
    def _calendars_exist(self) -> SlaConfig:
        defined = ", ".join(sorted(self.calendars)) or "none"
        for name, targets in self.severities.items():
            for key, calendar in (
                ("calendar", targets.calendar),
                ("rca_calendar", targets.rca_calendar),
            ):
                if calendar is not None and calendar not in self.calendars:
                    raise ValueError(
                        f"severities -> {name} -> {key}: no calendar {calendar!r}; "
                        f"defined: {defined}"
                    )
            if targets.rca is None:
                # Only a value that would change something is refused (the defaults are
                # written back by a model dump and must load again).
                meaningful = {
                    "rca_from": targets.rca_from != "resolved",
                    "rca_calendar": targets.rca_calendar is not None,
                }
                for key, changes_something in meaningful.items():
                    if changes_something and key in targets.model_fields_set:
                        raise ValueError(
                            f"severities -> {name} -> {key}: set, but {name} has no `rca:` "
                            "target (no RCA clock)"
                        )
        return self

    def targets(self, severity: Severity) -> SeverityTargets:
        return self.severities.get(severity.label, SeverityTargets())

    def with_default_timezone(self, timezone: ZoneInfo) -> SlaConfig:
        """This config with every calendar that names no ``timezone`` in ``timezone``
        (the site's); calendars with an explicit zone keep it. A calendar zoned here
        stays one that named none, so a site of its own (``sites:``) zones it again."""
        calendars = {}
        for name, calendar in self.calendars.items():
            if "timezone" in calendar.model_fields_set and not calendar._site_zone:
                calendars[name] = calendar
                continue
            zoned = CalendarConfig(
                timezone=timezone, hours=calendar.hours, holidays=calendar.holidays
            )
            zoned._site_zone = True
            calendars[name] = zoned
        return self.model_copy(update={"calendars": calendars})

    def calendar(self, severity: Severity, kind: ClockKind = "resolution") -> BusinessCalendar:
        """The calendar of a severity's clock (``rca_calendar`` for ``kind="rca"``)."""
        return self.calendars[self.targets(severity).calendar_name(kind)].calendar


@dataclass(frozen=True)
class Hold:
    """A span in which some clocks do not count (an SLA exemption, a silent component, a
    ticket waiting on the customer). ``end`` None: still held. The clocks that a hold
    pauses resume at its end; the held span is not counted, so their due times move by
    the held business time."""

    start: datetime
    end: datetime | None = None
    clocks: frozenset[ClockKind] = frozenset(CLOCK_KINDS)
    reason: str = ""


SILENT_CLOCKS: frozenset[ClockKind] = frozenset({"first_response", "resolution"})
WAITING_CLOCKS: frozenset[ClockKind] = frozenset({"resolution"})


@dataclass(frozen=True)
class IncidentTimes:
    """What the SLA arithmetic needs to know about an incident (aware datetimes)."""

    severity: Severity
    opened_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    rca_done_at: datetime | None = None
    # The incident is silent (nodata) since this instant: first response and resolution
    # are held from here (nobody can act on a component that says nothing); a shorthand
    # for an open-ended ``Hold`` of ``SILENT_CLOCKS``.
    silent_at: datetime | None = None
    # The RCA was deferred until this instant (``ccwatch incidents rca --deferred``).
    rca_due_at: datetime | None = None
    # Opened inside a maintenance window: the clocks start when it was opened upstream.
    sla_start: datetime | None = None
    # Outside the SLA from here (``ccwatch incidents exempt``, or held back by a
    # maintenance window): every clock is held from this instant (an open-ended ``Hold``).
    exempt_at: datetime | None = None
    # Closed without a resolution (state ``expired``): first response and resolution stop.
    closed_at: datetime | None = None
    # Finished and running holds: lifted exemptions, nodata gaps, waits on the customer.
    holds: tuple[Hold, ...] = ()

    def all_holds(self) -> tuple[Hold, ...]:
        extra: list[Hold] = []
        if self.silent_at is not None:
            extra.append(Hold(self.silent_at, None, SILENT_CLOCKS, "nodata"))
        if self.exempt_at is not None:
            extra.append(Hold(self.exempt_at, None, frozenset(CLOCK_KINDS), "exempt"))
        return (*self.holds, *extra)


@dataclass(frozen=True)
class Clock:
    """One SLA clock of one incident, evaluated at ``now``."""

    kind: ClockKind
    started_at: datetime
    target: timedelta
    # When ``target`` of counted business time is reached; None while a hold without an
    # end (an exemption, a silent component, a wait on the customer) keeps it from counting.
    due_at: datetime | None
    stopped_at: datetime | None
    elapsed: timedelta  # business time from start to stop (or now), holds not counted
    # The start of the hold the clock is in at ``now`` (None: not held).
    held_since: datetime | None = None
    # The held spans (merged, sorted; end None: still held), for instants on this clock.
    held: tuple[tuple[datetime, datetime | None], ...] = ()

    @property
    def running(self) -> bool:
        """Counting now: neither stopped nor held."""
        return self.stopped_at is None and self.held_since is None

    @property
    def breached(self) -> bool:
        return self.elapsed >= self.target

    @property
    def remaining(self) -> timedelta:
        """Business time left (negative once breached)."""
        return self.target - self.elapsed

    @property
    def fraction(self) -> float:
        return self.elapsed / self.target if self.target else 1.0


Span = tuple[datetime, datetime | None]


def merge_spans(spans: Iterable[Span]) -> tuple[Span, ...]:
    """Overlapping or touching spans joined, sorted by start; an end of None is open."""
    merged: list[tuple[datetime, datetime | None]] = []
    for start, end in sorted(spans, key=lambda span: span[0]):
        if end is not None and end <= start:
            continue
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None:
                continue
            if start <= last_end:
                merged[-1] = (last_start, None if end is None else max(end, last_end))
                continue
        merged.append((start, end))
    return tuple(merged)


def counted_time(
    calendar: BusinessCalendar, start: datetime, end: datetime, held: Sequence[Span]
) -> timedelta:
    """Business time in [start, end) outside the ``held`` spans (merged)."""
    if end <= start:
        return timedelta(0)
    total = calendar.business_time_between(start, end)
    for held_start, held_end in held:
        lo = max(held_start, start)
        hi = end if held_end is None else min(held_end, end)
        if hi > lo:
            total -= calendar.business_time_between(lo, hi)
    return total


def counted_due(
    calendar: BusinessCalendar, start: datetime, amount: timedelta, held: Sequence[Span]
) -> datetime | None:
    """The instant at which ``amount`` of business time outside ``held`` (merged) has
    passed since ``start``; None when a hold without an end comes first."""
    cursor, remaining = start, amount
    for held_start, held_end in held:
        if held_end is not None and held_end <= cursor:
            continue
        if held_start > cursor:
            candidate = calendar.due_after(cursor, remaining)
            if candidate <= held_start:
                return candidate
            remaining -= calendar.business_time_between(cursor, held_start)
        if held_end is None:
            return None
        cursor = max(cursor, held_end)
    return calendar.due_after(cursor, remaining)


def due_times(sla: SlaConfig, incident: IncidentTimes) -> dict[ClockKind, datetime | None]:
    """The due instant of each clock (None when the clock has no target or not started)."""
    result: dict[ClockKind, datetime | None] = dict.fromkeys(CLOCK_KINDS)
    if not sla.enabled:
        return result
    for clock in clocks(sla, incident, now=None):
        result[clock.kind] = clock.due_at
    return result


def clocks(sla: SlaConfig, incident: IncidentTimes, now: datetime | None) -> list[Clock]:
    """The incident's clocks. Acknowledgement (or resolution) stops first response,
    resolution stops resolution, RCA starts at resolution (``rca_from: opened``: when the
    other clocks start) and stops when it is done; closing without a resolution
    (``closed_at``) stops first response and resolution. Each clock counts on its own
    calendar (``SlaConfig.calendar(severity, kind)``) and does not count the spans of the
    holds that pause it (``IncidentTimes.holds``): its due time moves by the held business
    time, and while a hold without an end runs it has none.

    With ``now=None`` only due times are meaningful (elapsed is measured to the stop or 0).
    """
    if not sla.enabled:
        return []
    targets = sla.targets(incident.severity)
    start = incident.opened_at
    if incident.sla_start is not None and incident.sla_start > start:
        start = incident.sla_start
    spans: list[tuple[ClockKind, datetime | None, datetime | None]] = [
        (
            "first_response",
            start,
            _earliest(incident.acknowledged_at, incident.resolved_at, incident.closed_at),
        ),
        ("resolution", start, _earliest(incident.resolved_at, incident.closed_at)),
        (
            "rca",
            start if targets.rca_from == "opened" else incident.resolved_at,
            incident.rca_done_at,
        ),
    ]
    holds = incident.all_holds()
    result: list[Clock] = []
    for kind, started, stopped in spans:
        target = targets.target(kind)
        if target is None or started is None:
            continue
        calendar = sla.calendar(incident.severity, kind)
        if stopped is not None and stopped < started:
            stopped = started
        # Only what is held while the clock runs counts: a hold after its stop changes
        # nothing, and one still running at the stop ends there.
        held = merge_spans(
            (hold.start, hold.end if stopped is None else min(hold.end or stopped, stopped))
            for hold in holds
            if kind in hold.clocks and (stopped is None or hold.start < stopped)
        )
        if kind == "rca" and incident.rca_due_at is not None:
            # Deferred: the target is the working time from its start to the new due time.
            target = max(
                counted_time(calendar, started, incident.rca_due_at, held),
                timedelta(microseconds=1),
            )
        measured_to = stopped if stopped is not None else now
        elapsed = (
            counted_time(calendar, started, measured_to, held)
            if measured_to is not None
            else timedelta(0)
        )
        held_since = None
        if stopped is None and now is not None:
            held_since = next(
                (lo for lo, hi in held if lo <= now and (hi is None or now < hi)), None
            )
        result.append(
            Clock(
                kind=kind,
                started_at=started,
                target=target,
                due_at=counted_due(calendar, started, target, held),
                stopped_at=stopped,
                elapsed=elapsed,
                held_since=held_since,
                held=held,
            )
        )
    return result


def _earliest(*instants: datetime | None) -> datetime | None:
    present = [instant for instant in instants if instant is not None]
    return min(present) if present else None


# --- escalation --------------------------------------------------------------------

Trigger = Literal[
    "opened",
    "first_response_warning",
    "first_response_breach",
    "resolution_warning",
    "resolution_breach",
    "rca_warning",
    "rca_breach",
]

DEFAULT_RECURRENCE_WINDOW = timedelta(days=7)


class EscalationWhen(StrictModel):
    """``when:`` of a level: incident properties that must all match (each list: any of).

    ``recurrence_count_at_least: N`` matches an incident whose component's fault came
    back at least N times within ``escalation.recurrence_window`` (see ``IncidentFacts``).
    """

    severity: list[SeverityName] | None = None
    component: list[str] | None = None
    kind: list[str] | None = None
    recurrence_count_at_least: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _not_empty(self) -> EscalationWhen:
        for name in ("severity", "component", "kind"):
            if getattr(self, name) == []:
                raise ValueError(f"`{name}:` lists nothing; leave it out to match any")
        return self

    def matches(self, severity: Severity, facts: IncidentFacts | None) -> bool:
        """Whether an incident matches. Without ``facts`` only ``severity`` can match:
        a condition on component, kind or recurrences is then not met."""
        if self.severity is not None and severity not in self.severity:
            return False
        needs_facts = (
            self.component is not None
            or self.kind is not None
            or self.recurrence_count_at_least is not None
        )
        if not needs_facts:
            return True
        if facts is None:
            return False
        if self.component is not None and facts.component not in self.component:
            return False
        if self.kind is not None and facts.kind not in self.kind:
            return False
        return (
            self.recurrence_count_at_least is None
            or facts.recurrences >= self.recurrence_count_at_least
        )


class EscalationLevel(StrictModel):
    """One step of the path: who is told, and when.

    ``trigger: opened`` fires as soon as the incident is open (not yet over) and its
    ``when:`` matches — at the open, or later when it starts to match (a reopen that
    makes it a recurrence). A level without ``trigger`` needs a ``when:`` and means
    ``opened``. A level with neither ``email`` nor ``upstream`` is recorded in the
    timeline and the metrics only (``check-config`` warns).
    """

    name: str = Field(min_length=1, description="e.g. 'L2 support', 'COO'")
    trigger: Trigger | None = None
    warn_at: float = Field(
        0.8, gt=0, lt=1, description="fraction of the target for *_warning triggers"
    )
    after: Duration = Field(timedelta(0), description="extra business time past the breach")
    severities: list[SeverityName] = Field(
        default_factory=lambda: [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL]
    )
    when: EscalationWhen | None = None
    email: list[str] = Field(default_factory=list, description="addresses told directly")
    upstream: str | None = Field(None, description="a `tickets:` upstream name to notify")

    @model_validator(mode="after")
    def _consistent(self) -> EscalationLevel:
        if self.trigger is None and self.when is None:
            raise ValueError(
                f"level {self.name!r} needs a `trigger:` (or a `when:`, which then fires at open)"
            )
        if not self.effective_trigger.endswith("_breach") and self.after:
            raise ValueError(f"level {self.name!r}: `after` applies to *_breach triggers only")
        return self

    @property
    def effective_trigger(self) -> Trigger:
        return self.trigger if self.trigger is not None else "opened"

    @property
    def clock(self) -> ClockKind | None:
        """The SLA clock the trigger watches (None for ``opened``)."""
        if self.effective_trigger == "opened":
            return None
        kind, _, _ = self.effective_trigger.rpartition("_")
        return kind  # type: ignore[return-value]

    @property
    def is_warning(self) -> bool:
        return self.effective_trigger.endswith("_warning")

    @property
    def has_targets(self) -> bool:
        return bool(self.email) or self.upstream is not None

    def matches(self, severity: Severity, facts: IncidentFacts | None) -> bool:
        if severity not in self.severities:
            return False
        return self.when is None or self.when.matches(severity, facts)


class EscalationConfig(StrictModel):
    """``escalation:`` — the ordered levels; each level is sent at most once per incident."""

    enabled: bool = True
    levels: list[EscalationLevel] = Field(default_factory=list)
    repeat_interval: Duration | None = Field(
        timedelta(minutes=30),
        description="re-send an unacknowledged critical incident this often (null: never)",
    )
    recurrence_window: Duration = Field(
        DEFAULT_RECURRENCE_WINDOW,
        description="how far back `when: {recurrence_count_at_least: N}` counts",
    )

    @field_validator("repeat_interval")
    @classmethod
    def _positive_interval(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be greater than 0 (null: never)")
        return value

    @field_validator("recurrence_window")
    @classmethod
    def _positive_window(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> EscalationConfig:
        if twice := repeated(level.name for level in self.levels):
            raise ValueError(f"levels: names must be unique, {', '.join(twice)} repeats")
        return self

    @property
    def counts_recurrences(self) -> bool:
        """Whether a level matches on recurrences (the caller then counts them)."""
        return self.enabled and any(
            level.when is not None and level.when.recurrence_count_at_least is not None
            for level in self.levels
        )


def escalation_problems(
    escalation: EscalationConfig, upstream_names: Iterable[str], has_email_relay: bool
) -> list[str]:
    """Cross-section checks of ``escalation:`` against ``tickets:`` and ``email:``."""
    if not escalation.enabled:
        return []
    known = set(upstream_names)
    problems: list[str] = []
    for position, level in enumerate(escalation.levels, start=1):
        if level.upstream is not None and level.upstream not in known:
            choices = ", ".join(sorted(known)) or "none configured"
            problems.append(
                f"escalation -> levels -> {position} -> upstream: no enabled upstream named "
                f"{level.upstream!r} in `tickets:` ({choices})"
            )
        if level.email and not has_email_relay:
            problems.append(
                f"escalation -> levels -> {position} -> email: mailing needs the top-level "
                "`email:` section"
            )
    return problems


def escalation_warnings(escalation: EscalationConfig) -> list[str]:
    """Levels that are enabled but tell nobody (they are only recorded): one line each."""
    if not escalation.enabled:
        return []
    return [
        f"escalation -> levels -> {position}: no targets (email or upstream); "
        "the step is only recorded"
        for position, level in enumerate(escalation.levels, start=1)
        if not level.has_targets
    ]


@dataclass(frozen=True)
class IncidentFacts:
    """What ``when:`` may match besides severity; the caller reads them from the store.

    ``recurrences``: how often the component's fault came back within the recurrence
    window — its other incidents that ended in the window, plus the reopens of its
    incidents (``reopen_count``). The third occurrence in the window is recurrence 2.
    """

    component: str
    kind: str
    recurrences: int = 0


@dataclass(frozen=True)
class EscalationStep:
    """A level whose trigger has fired for an incident and that was not sent yet."""

    level: int  # 1-based position in the path
    name: str
    trigger: Trigger
    clock: ClockKind | None  # None for `opened`
    due_at: datetime  # when the trigger fired (business-time exact)
    clock_due_at: datetime | None
    email: tuple[str, ...]
    upstream: str | None

    @property
    def has_targets(self) -> bool:
        return bool(self.email) or self.upstream is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "name": self.name,
            "trigger": self.trigger,
            "clock": self.clock,
            "triggered_at": self.due_at.isoformat(),
            "clock_due_at": self.clock_due_at.isoformat() if self.clock_due_at else None,
            "email": list(self.email),
            "upstream": self.upstream,
        }


def escalations_due(
    sla: SlaConfig,
    escalation: EscalationConfig,
    incident: IncidentTimes,
    now: datetime,
    already_sent: Iterable[str] = (),
    facts: IncidentFacts | None = None,
) -> list[EscalationStep]:
    """Steps whose trigger time has come while their clock was running (``opened``:
    while the incident is not over), whose ``severities``/``when`` match, not yet sent,
    in path order. A clock stopped before a trigger fired never fires it."""
    if not escalation.enabled:
        return []
    sent = set(already_sent)
    by_kind = {clock.kind: clock for clock in clocks(sla, incident, now)}
    steps: list[EscalationStep] = []
    for position, level in enumerate(escalation.levels, start=1):
        if level.name in sent or not level.matches(incident.severity, facts):
            continue
        if level.clock is None:  # `opened`: at the open, while the incident is not over
            if incident.resolved_at is None and now >= incident.opened_at:
                steps.append(_step(position, level, incident.opened_at, None))
            continue
        clock = by_kind.get(level.clock)
        if clock is None:
            continue
        threshold = clock.target * level.warn_at if level.is_warning else clock.target + level.after
        if clock.elapsed < threshold:
            continue
        fired_at = counted_due(
            sla.calendar(incident.severity, clock.kind), clock.started_at, threshold, clock.held
        )
        steps.append(_step(position, level, fired_at or now, clock.due_at))
    return steps


def _step(
    position: int, level: EscalationLevel, due_at: datetime, clock_due_at: datetime | None
) -> EscalationStep:
    return EscalationStep(
        level=position,
        name=level.name,
        trigger=level.effective_trigger,
        clock=level.clock,
        due_at=due_at,
        clock_due_at=clock_due_at,
        email=tuple(level.email),
        upstream=level.upstream,
    )


# --- reminders ---------------------------------------------------------------------


def reminder_due(
    severity: Severity,
    state: str,
    acknowledged: bool,
    opened_at: float,
    last_reminder_at: float | None,
    now: float,
    interval: timedelta | None,
) -> bool:
    """Whether an incident is re-sent to its pagers now: critical, open (not
    acknowledged, not silent, not over) and ``interval`` past its open or last reminder."""
    if interval is None or severity < Severity.CRITICAL or acknowledged or state != "open":
        return False
    since = opened_at if last_reminder_at is None else last_reminder_at
    return now - since >= interval.total_seconds()
