"""Business calendars and SLA clocks: exact arithmetic, property-tested."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import validate_data
from ccwatch.errors import ConfigError
from ccwatch.severity import Severity
from ccwatch.sla import (
    BusinessCalendar,
    CalendarConfig,
    EscalationConfig,
    EscalationLevel,
    IncidentTimes,
    SlaConfig,
    clocks,
    due_times,
    escalations_due,
    parse_hours,
)

KOLKATA_9_TO_6 = BusinessCalendar.build(
    ["mon-fri 09:00-18:00"], "Asia/Kolkata", [date(2026, 1, 26), date(2026, 8, 15)]
)
BERLIN_24X5 = BusinessCalendar.build("24x5", "Europe/Berlin", [date(2026, 12, 25)])
NEW_YORK_SPLIT = BusinessCalendar.build(
    ["mon-fri 08:00-12:00", "mon-fri 13:00-17:30", "sat 02:00-03:00"], "America/New_York"
)
CALENDARS = [
    KOLKATA_9_TO_6,
    BERLIN_24X5,
    NEW_YORK_SPLIT,
    BusinessCalendar.build("24x7", "Europe/London"),
    BusinessCalendar.build("24x7", "Australia/Lord_Howe", [date(2026, 4, 5)]),
]

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20))
calendars = st.sampled_from(CALENDARS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _in_working_hours(calendar: BusinessCalendar, instant: datetime) -> bool:
    return any(opens <= instant < closes for opens, closes in _window(calendar, instant))


def _at_closing(calendar: BusinessCalendar, instant: datetime) -> bool:
    return any(closes == instant for _, closes in _window(calendar, instant))


def _window(calendar: BusinessCalendar, instant: datetime) -> list[tuple[datetime, datetime]]:
    result = []
    for opens, closes in calendar.intervals(instant):
        if opens > instant + timedelta(days=1):
            break
        result.append((opens, closes))
    return result


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_due_after_then_business_time_between_round_trips(
    calendar: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    due = calendar.due_after(start, duration)
    assert calendar.business_time_between(start, due) == duration


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations.filter(lambda d: d > timedelta(0)))
def test_due_time_lies_in_working_hours_or_exactly_at_a_closing(
    calendar: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    due = calendar.due_after(start, duration)
    assert due > start
    assert _in_working_hours(calendar, due) or _at_closing(calendar, due)


@settings(max_examples=200, deadline=None)
@given(calendars, instants, durations, durations)
def test_due_after_is_monotonic_in_duration_and_start(
    calendar: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    short, long = sorted((first, second))
    assert calendar.due_after(start, short) <= calendar.due_after(start, long)
    later = start + (long - short)
    assert calendar.due_after(start, short) <= calendar.due_after(later, short)


@settings(max_examples=200, deadline=None)
@given(calendars, instants, durations, durations)
def test_business_time_is_additive_and_never_exceeds_wall_clock(
    calendar: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    middle, end = start + first, start + first + second
    whole = calendar.business_time_between(start, end)
    assert whole == calendar.business_time_between(start, middle) + calendar.business_time_between(
        middle, end
    )
    assert timedelta(0) <= whole <= end - start


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]), instants, durations)
def test_24x7_without_holidays_is_wall_clock(zone: str, start: datetime, span: timedelta) -> None:
    calendar = BusinessCalendar.build("24x7", zone)
    assert calendar.business_time_between(start, start + span) == span
    assert calendar.due_after(start, span) == start + span


def test_weekend_and_holiday_are_skipped() -> None:
    # Friday 17:00 IST with 90 minutes to go: 60 min on Friday, 30 min on Monday 26 Jan
    # (Republic Day, a holiday) is skipped too, so Tuesday 09:30 IST.
    friday_5pm_ist = utc(2026, 1, 23, 11, 30)
    due = KOLKATA_9_TO_6.due_after(friday_5pm_ist, timedelta(minutes=90))
    assert due == utc(2026, 1, 27, 4, 0)  # 09:30 IST


def test_a_24x5_autumn_dst_day_has_25_hours() -> None:
    # Europe/Berlin leaves summer time on Sunday 25 Oct 2026; a Mon-Fri 24x5 calendar
    # is closed that weekend, so use a 24x7 Berlin calendar with a holiday elsewhere.
    berlin = BusinessCalendar.build("24x7", "Europe/Berlin", [date(2026, 1, 1)])
    start = datetime(2026, 10, 25, 0, 0, tzinfo=berlin.timezone).astimezone(UTC)
    end = datetime(2026, 10, 26, 0, 0, tzinfo=berlin.timezone).astimezone(UTC)
    assert berlin.business_time_between(start, end) == timedelta(hours=25)


def test_spring_forward_shortens_a_working_day() -> None:
    # New York springs forward on Sunday 8 March 2026 at 02:00; "sun 00:00-24:00" is 23 h.
    sundays = BusinessCalendar.build(["sun 00:00-24:00"], "America/New_York")
    start = utc(2026, 3, 7, 12)
    assert sundays.business_time_between(start, start + timedelta(days=2)) == timedelta(hours=23)


def test_24x5_friday_evening_first_response_lands_on_monday() -> None:
    # Seed 004: 90 min first response on 24x5; an incident at Fri 23:00 Berlin (CET, +1)
    # has 60 min on Friday and 30 on Monday.
    friday_11pm = utc(2026, 11, 20, 22)
    assert BERLIN_24X5.due_after(friday_11pm, timedelta(minutes=90)) == utc(2026, 11, 22, 23, 30)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("9to5", "not understood"),
        (["mon-fri 18:00-09:00"], "end must be after the start"),
        (["mon-fry 09:00-18:00"], "days are mon"),
        (["mon 09:00-24:30"], "00:00 to 24:00"),
    ],
)
def test_bad_working_hours_say_what_is_wrong(spec: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(spec)


def test_wrapping_day_range() -> None:
    hours = parse_hours(["sat-mon 10:00-11:00"])
    assert [bool(day) for day in hours] == [True, False, False, False, False, True, True]


def test_sla_config_errors_have_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_data(
            SlaConfig,
            {
                "calendars": {"office": {"timezone": "Mars/Olympus", "hours": "24x5"}},
                "severities": {"critical": {"first_response": "30m", "calendar": "office"}},
            },
            "sla",
        )
    assert any("calendars -> office -> timezone" in p for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        validate_data(
            SlaConfig, {"severities": {"critical": {"first_response": "30m", "calendar": "x"}}}, "s"
        )
    assert "no calendar 'x'" in "\n".join(caught.value.problems)


def test_seed_004_default_plan() -> None:
    sla = SlaConfig()
    opened = utc(2026, 11, 23, 10)  # a Monday
    critical = due_times(sla, IncidentTimes(Severity.CRITICAL, opened))
    assert critical["first_response"] == opened + timedelta(minutes=90)
    assert critical["resolution"] == opened + timedelta(hours=6)
    assert critical["rca"] is None  # starts at resolution
    resolved = IncidentTimes(Severity.CRITICAL, opened, resolved_at=opened + timedelta(hours=2))
    assert due_times(sla, resolved)["rca"] == utc(2026, 11, 26, 12)  # 72 h on 24x5
    minor = due_times(sla, IncidentTimes(Severity.MINOR, opened))
    assert minor["resolution"] is None
    major_friday = due_times(sla, IncidentTimes(Severity.MAJOR, utc(2026, 11, 27, 12)))
    assert major_friday["resolution"] == utc(2026, 12, 1, 12)  # Fri 12 h + Mon 24 h + Tue 12 h


def test_acknowledgement_stops_first_response_and_resolution_stops_resolution() -> None:
    sla = SlaConfig()
    opened = utc(2026, 11, 23, 10)
    incident = IncidentTimes(
        Severity.CRITICAL,
        opened,
        acknowledged_at=opened + timedelta(minutes=20),
        resolved_at=opened + timedelta(hours=7),
    )
    by_kind = {c.kind: c for c in clocks(sla, incident, now=opened + timedelta(days=1))}
    assert not by_kind["first_response"].breached
    assert by_kind["first_response"].elapsed == timedelta(minutes=20)
    assert by_kind["resolution"].breached
    assert by_kind["resolution"].elapsed == timedelta(hours=7)
    assert by_kind["rca"].running
    assert by_kind["rca"].remaining == timedelta(hours=72 - 17)


def test_seed_000_and_002_plans_load() -> None:
    seed_000 = validate_data(SlaConfig, SEED_000_PLAN, "seed000")
    opened = utc(2026, 11, 21, 3)  # Saturday night: P1 is 24/7, P2 waits for Monday
    resolved = opened + timedelta(hours=5)
    p1 = due_times(seed_000, IncidentTimes(Severity.CRITICAL, opened, resolved_at=resolved))
    assert p1["first_response"] == opened + timedelta(minutes=30)
    assert p1["rca"] == opened + timedelta(hours=24)  # "within 24 hours of the incident"
    p3 = due_times(seed_000, IncidentTimes(Severity.MINOR, opened))
    # 24 business hours of 09:00-17:00 New York: Monday, Tuesday and Wednesday.
    assert p3["first_response"] == utc(2026, 11, 25, 22)
    p2 = due_times(seed_000, IncidentTimes(Severity.MAJOR, opened))
    # 8 business hours, 09:00-17:00 Mon-Fri America/New_York: all of Monday.
    assert p2["first_response"] == utc(2026, 11, 23, 22)
    seed_002 = validate_data(SlaConfig, SEED_002_PREMIUM_PLAN, "seed002")
    minor = due_times(seed_002, IncidentTimes(Severity.MINOR, opened))
    assert minor["first_response"] == opened + timedelta(minutes=30)
    assert minor["resolution"] == opened + timedelta(hours=48)


def _rca_policy(rca_from: str, rca_calendar: str | None = None) -> SlaConfig:
    critical: dict[str, object] = {"resolution": "6h", "rca": "24h", "rca_from": rca_from}
    if rca_calendar is not None:
        critical["rca_calendar"] = rca_calendar
    return validate_data(
        SlaConfig,
        {
            "calendars": {
                "default": {"hours": "24x5", "timezone": "Europe/Berlin"},
                "always": {"hours": "24x7", "timezone": "Europe/Berlin"},
            },
            "severities": {"critical": critical},
        },
        "sla",
    )


RCA_FROM_OPENED = _rca_policy("opened")
RCA_FROM_RESOLVED = _rca_policy("resolved")
RCA_OWN_24X7 = _rca_policy("resolved", rca_calendar="always")
BERLIN_PLAIN_24X5 = BusinessCalendar.build("24x5", "Europe/Berlin")


@settings(max_examples=200, deadline=None)
@given(instants, st.none() | durations)
def test_rca_from_opened_counts_from_the_open_in_business_time(
    opened: datetime, resolved_after: timedelta | None
) -> None:
    resolved = None if resolved_after is None else opened + resolved_after
    incident = IncidentTimes(Severity.CRITICAL, opened, resolved_at=resolved)
    expected = BERLIN_PLAIN_24X5.due_after(opened, timedelta(hours=24))
    # Due 24 business hours after the open, resolved or not, whenever it was resolved.
    assert due_times(RCA_FROM_OPENED, incident)["rca"] == expected
    from_resolved = due_times(RCA_FROM_RESOLVED, incident)["rca"]
    if resolved is None:
        assert from_resolved is None  # the default clock waits for the resolution
    else:
        assert from_resolved == BERLIN_PLAIN_24X5.due_after(resolved, timedelta(hours=24))
        assert from_resolved >= expected


@settings(max_examples=200, deadline=None)
@given(instants, durations)
def test_an_own_24x7_rca_calendar_runs_through_the_weekend(
    opened: datetime, resolved_after: timedelta
) -> None:
    resolved = opened + resolved_after
    incident = IncidentTimes(Severity.CRITICAL, opened, resolved_at=resolved)
    own = due_times(RCA_OWN_24X7, incident)
    severity_calendar = due_times(RCA_FROM_RESOLVED, incident)
    assert own["rca"] == resolved + timedelta(hours=24)  # wall clock, weekends included
    assert severity_calendar["rca"] is not None and severity_calendar[
        "rca"
    ] >= resolved + timedelta(hours=24)
    # The other clocks keep the severity's calendar.
    assert own["resolution"] == severity_calendar["resolution"]
    assert own["resolution"] == BERLIN_PLAIN_24X5.due_after(opened, timedelta(hours=6))
    touches_weekend = any(
        (resolved + timedelta(hours=hour)).astimezone(BERLIN_PLAIN_24X5.timezone).weekday() >= 5
        for hour in range(25)
    )
    if not touches_weekend:
        assert own["rca"] == severity_calendar["rca"]


def test_rca_calendar_differs_across_a_weekend() -> None:
    opened = utc(2026, 11, 27, 9)  # Friday 10:00 in Berlin
    resolved = utc(2026, 11, 27, 11)
    incident = IncidentTimes(Severity.CRITICAL, opened, resolved_at=resolved)
    assert due_times(RCA_OWN_24X7, incident)["rca"] == utc(2026, 11, 28, 11)  # Saturday
    assert due_times(RCA_FROM_RESOLVED, incident)["rca"] == utc(2026, 11, 30, 11)  # Monday
    saturday_noon = utc(2026, 11, 28, 12)
    [rca] = [c for c in clocks(RCA_OWN_24X7, incident, now=saturday_noon) if c.kind == "rca"]
    assert rca.breached and rca.elapsed == timedelta(hours=25)
    [rca] = [c for c in clocks(RCA_FROM_RESOLVED, incident, now=saturday_noon) if c.kind == "rca"]
    assert not rca.breached and rca.elapsed == timedelta(hours=12)  # Fri 12:00-24:00 Berlin


def test_rca_breach_escalates_on_the_rca_calendar() -> None:
    opened = utc(2026, 11, 27, 9)
    incident = IncidentTimes(Severity.CRITICAL, opened, resolved_at=utc(2026, 11, 27, 11))
    path = EscalationConfig(levels=[EscalationLevel(name="RCA owner", trigger="rca_breach")])
    saturday = utc(2026, 11, 28, 12)
    [step] = escalations_due(RCA_OWN_24X7, path, incident, now=saturday)
    assert step.due_at == utc(2026, 11, 28, 11) == step.clock_due_at
    assert escalations_due(RCA_FROM_RESOLVED, path, incident, now=saturday) == []
    # rca_from: opened fires while the incident is still open.
    unresolved = IncidentTimes(Severity.CRITICAL, utc(2026, 11, 23, 9))
    [step] = escalations_due(RCA_FROM_OPENED, path, unresolved, now=utc(2026, 11, 24, 10))
    assert step.due_at == utc(2026, 11, 24, 9)


@pytest.mark.parametrize(
    ("critical", "path"),
    [
        ({"rca": "24h", "rca_calendar": "nope"}, "severities -> critical -> rca_calendar"),
        ({"rca": "24h", "rca_from": "closed"}, "severities -> critical -> rca_from"),
        ({"resolution": "6h", "rca_from": "opened"}, "severities -> critical -> rca_from"),
        ({"resolution": "6h", "rca_calendar": "default"}, "severities -> critical -> rca_calendar"),
    ],
)
def test_rca_config_errors_name_the_key(critical: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_data(SlaConfig, {"severities": {"critical": critical}}, "sla")
    assert any(path in problem for problem in caught.value.problems), caught.value.problems


def test_calendar_config_holidays_parse() -> None:
    config = validate_data(CalendarConfig, {"holidays": ["2026-12-25"]}, "calendar")
    assert config.calendar.holidays == frozenset({date(2026, 12, 25)})


# README examples (kept here so they stay valid).
SEED_000_PLAN = {
    "calendars": {
        "always": {"hours": "24x7", "timezone": "America/New_York"},
        "business": {"hours": ["mon-fri 09:00-17:00"], "timezone": "America/New_York"},
    },
    "severities": {
        "critical": {
            "first_response": "30m",
            "rca": "24h",
            "rca_from": "opened",
            "calendar": "always",
        },
        "major": {"first_response": "8h", "calendar": "business"},
        "minor": {"first_response": "24h", "calendar": "business"},
    },
}
SEED_002_PREMIUM_PLAN = {  # Basic: first_response 24h, Regular: 4h, Premium: 30m
    "calendars": {"default": {"hours": "24x7"}},
    "severities": {
        level: {"first_response": "30m", "resolution": "48h"}
        for level in ("critical", "major", "minor")
    },
}
