"""``incidents:`` — how long an incident is remembered after it ends (README, "Tickets").

- ``reopen_window`` (default 30m): a fault of the same component back within this long
  of its resolve reopens the same incident and ticket (event ``reopen``); 0 turns it off.
- ``auto_close_after`` (default 48h, seed 002's auto-close): an incident ``nodata`` this
  long is closed with the state ``expired`` (event ``expire``); ``null`` turns it off.
- ``auto_close_after_waiting`` (default 48h, seed 002: tickets waiting on the customer
  auto-close after 48 h): an incident ``waiting_on_customer`` this long is closed the
  same way (state ``expired``, event ``expire``, reason ``waiting_on_customer`` in its
  body's ``closed``); ``null`` turns it off.

The holds that decide when an incident opens and resolves stay in ``classification:``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration


class IncidentsConfig(StrictModel):
    reopen_window: Duration = Field(
        timedelta(minutes=30), description="a fault back this soon after its resolve reopens it"
    )
    auto_close_after: Duration | None = Field(
        timedelta(hours=48), description="close an incident nodata this long as expired"
    )

    auto_close_after_waiting: Duration | None = Field(
        timedelta(hours=48),
        description="close an incident waiting on the customer this long as expired",
    )

    @field_validator("auto_close_after", "auto_close_after_waiting")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be greater than 0 (null: never)")
        return value
