"""Whether a component is in a maintenance window at an instant (pure, DST-aware).

A scheduled window starts at each fire time of a 5-field cron expression read as wall
time in its time zone and lasts ``duration`` of real (elapsed) time, so "30 1 * * 0" in
Europe/Berlin starts at 01:30 local time on both sides of a daylight-saving change. A
one-off or ad-hoc window is a fixed ``[start, end)`` interval. Values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ccwatch.cron import cron_trigger

ALL = "*"


@dataclass(frozen=True)
class Window:
    """One occurrence of a window: ``[start, end)`` in epoch seconds."""

    id: str
    components: tuple[str, ...]
    start: float
    end: float
    reason: str
    source: str = "scheduled"  # "scheduled" (config) or "ad-hoc" (CLI/API)

    def applies_to(self, component: str) -> bool:
        return ALL in self.components or component in self.components

    def covers(self, component: str, at: float) -> bool:
        return self.applies_to(component) and self.start <= at < self.end

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "components": list(self.components),
            "start": self.start,
            "end": self.end,
            "reason": self.reason,
            "source": self.source,
        }


@dataclass(frozen=True)
class Recurring:
    """A scheduled window: starts at each ``cron`` fire time in ``timezone``."""

    id: str
    components: tuple[str, ...]
    cron: str
    duration: timedelta
    timezone: ZoneInfo
    reason: str

    def occurrences(self, since: float, until: float) -> list[Window]:
        """The occurrences overlapping ``[since, until]``, in start order."""
        trigger = cron_trigger(self.cron, self.timezone)
        length = self.duration.total_seconds()
        cursor = datetime.fromtimestamp(since - length, self.timezone)
        found: list[Window] = []
        fire = trigger.get_next_fire_time(None, cursor)
        while fire is not None and fire.timestamp() <= until:
            start = fire.timestamp()
            if start + length > since:
                found.append(Window(self.id, self.components, start, start + length, self.reason))
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        return found


Schedule = Window | Recurring


def occurrences(schedules: Iterable[Schedule], since: float, until: float) -> list[Window]:
    """Every window occurrence overlapping ``[since, until]``, by start."""
    found: list[Window] = []
    for schedule in schedules:
        if isinstance(schedule, Recurring):
            found.extend(schedule.occurrences(since, until))
        elif schedule.start <= until and schedule.end > since:
            found.append(schedule)
    return sorted(found, key=lambda w: (w.start, w.id))


def window_at(schedules: Sequence[Schedule], component: str, at: float) -> Window | None:
    """The window ``component`` is in at ``at`` (the one ending last), or None."""
    covering = [w for w in occurrences(schedules, at, at) if w.covers(component, at)]
    return max(covering, key=lambda w: w.end) if covering else None
