"""The one cron schedule type: a 5-field crontab in a time zone.

Every model with a cron expression (checklist schedules, the retention schedule) uses
``CronSchedule`` / ``CronExpression``, so a bad expression is refused with the same words
wherever it is written. Parsing uses APScheduler's crontab parser, loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field

from ccwatch.configbase import UTC_ZONE, StrictModel, TimeZone, time_zone

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger


def cron_trigger(cron: str, timezone: ZoneInfo | str = UTC_ZONE) -> CronTrigger:
    """A 5-field crontab in a time zone; ValueError says what is wrong with either."""
    from apscheduler.triggers.cron import CronTrigger  # deferred: only schedules need it

    zone = time_zone(timezone)
    try:
        return CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as exc:
        raise ValueError(
            f"invalid cron expression {cron!r}: {exc} "
            "(5 fields: minute hour day-of-month month day-of-week, e.g. '30 6 * * *')"
        ) from None


def _valid_cron(value: str) -> str:
    cron_trigger(value)
    return value


CronExpression = Annotated[str, AfterValidator(_valid_cron)]
"""A 5-field crontab expression (minute hour day-of-month month day-of-week)."""


class CronSchedule(StrictModel):
    """When a job runs: ``{cron: "30 6 * * *", timezone: Asia/Kolkata}``."""

    cron: CronExpression = Field(
        description="5-field crontab: minute hour day-of-month month day-of-week"
    )
    timezone: TimeZone = Field(UTC_ZONE, description="IANA time zone of the cron expression")
    catch_up: bool = Field(True, description="a run missed while ccwatch was down runs at start")

    def trigger(self) -> CronTrigger:
        return cron_trigger(self.cron, self.timezone)

    def describe(self) -> str:
        return f"{self.cron} ({self.timezone})"
