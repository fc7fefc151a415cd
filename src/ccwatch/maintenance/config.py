"""``maintenance:`` — scheduled maintenance windows (README, "Maintenance windows").

Each entry: ``components`` (names or ``"*"``), either ``cron`` + ``duration`` (a
recurring window starting at each fire time, wall time in ``timezone``) or one-off
``start`` + ``end`` (local times in ``timezone`` unless they carry an offset), and a
``reason``. Ad-hoc windows (``ccwatch maintenance add``) live in the state database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field, model_validator

from ccwatch.configbase import UTC_ZONE, StrictModel, TimeZone
from ccwatch.cron import CronExpression
from ccwatch.durations import Duration
from ccwatch.maintenance.windows import Recurring, Schedule, Window


class MaintenanceWindowConfig(StrictModel):
    components: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, description="component names or '*'"
    )
    cron: CronExpression | None = Field(None, description="when a recurring window starts")
    duration: Duration | None = Field(None, description="how long a recurring window lasts")
    start: datetime | None = Field(None, description="one-off window: start")
    end: datetime | None = Field(None, description="one-off window: end")
    timezone: TimeZone = Field(UTC_ZONE, description="IANA time zone of cron/start/end")
    reason: str = Field(min_length=1, description="shown on pages, timelines and tickets")

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceWindowConfig:
        recurring = self.cron is not None or self.duration is not None
        one_off = self.start is not None or self.end is not None
        if recurring == one_off:
            raise ValueError("give either cron + duration or start + end")
        if recurring and (self.cron is None or self.duration is None):
            raise ValueError("a recurring window needs both cron and duration")
        if recurring and self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("duration must be greater than 0")
        if one_off:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end")
            if self._aware(self.end) <= self._aware(self.start):
                raise ValueError("end must be after start")
        return self

    def _aware(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=self.timezone)

    def schedule(self, position: int) -> Schedule:
        ident = f"config-{position}"
        components = tuple(self.components)
        if self.cron is not None and self.duration is not None:
            return Recurring(
                ident, components, self.cron, self.duration, self.timezone, self.reason
            )
        assert self.start is not None and self.end is not None
        return Window(
            ident,
            components,
            self._aware(self.start).timestamp(),
            self._aware(self.end).timestamp(),
            self.reason,
        )


def schedules(windows: list[MaintenanceWindowConfig]) -> tuple[Schedule, ...]:
    return tuple(window.schedule(position) for position, window in enumerate(windows, 1))
