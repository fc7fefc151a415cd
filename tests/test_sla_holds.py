"""SLA holds (pure): held spans are not counted, the clocks resume after them, and the
elapsed time and the due time always agree (docs/architecture.md, "SLA holds")."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.severity import Severity
from ccwatch.sla import (
    CLOCK_KINDS,
    SILENT_CLOCKS,
    WAITING_CLOCKS,
    BusinessCalendar,
    CalendarConfig,
    Hold,
    IncidentTimes,
    SlaConfig,
    clocks,
    counted_due,
    counted_time,
    merge_spans,
)

OPENED = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a Monday
ALWAYS = SlaConfig(calendars={"default": CalendarConfig(hours="24x7")})
WEEKDAYS = SlaConfig(calendars={"default": CalendarConfig(hours="24x5", timezone="Asia/Kolkata")})
CALENDARS = {"24x7": BusinessCalendar.build("24x7"), "24x5": WEEKDAYS.calendar(Severity.CRITICAL)}


def at(seconds: float) -> datetime:
    return OPENED + timedelta(seconds=seconds)


def by_kind(sla: SlaConfig, times: IncidentTimes, now: datetime) -> dict[str, object]:
    return {clock.kind: clock for clock in clocks(sla, times, now)}


# Spans as (start offset, length) in seconds after the open, some overlapping.
spans = st.lists(st.tuples(st.integers(0, 10 * 86_400), st.integers(1, 3 * 86_400)), max_size=4)


# The same in ten-minute steps, so the count below can go step by step.
coarse = st.lists(st.tuples(st.integers(0, 1440), st.integers(1, 432)), max_size=4)


@settings(max_examples=200, deadline=None)
@given(spans=coarse, now=st.integers(0, 2880), calendar=st.sampled_from(sorted(CALENDARS)))
def test_the_counted_time_is_the_business_time_outside_the_holds(
    spans: list[tuple[int, int]], now: int, calendar: str
) -> None:
    step = 600
    cal = CALENDARS[calendar]
    held = merge_spans((at(a * step), at((a + n) * step)) for a, n in spans)
    counted = counted_time(cal, OPENED, at(now * step), held)
    assert timedelta(0) <= counted <= cal.business_time_between(OPENED, at(now * step))
    if calendar == "24x7":
        # Counted step by step: a step is counted when no span covers it.
        free = sum(1 for i in range(now) if not any(a <= i < a + n for a, n in spans))
        assert counted == timedelta(seconds=free * step)
    # Merged spans are sorted and disjoint.
    for (_, first_end), (second_start, _) in itertools.pairwise(held):
        assert first_end is not None and first_end < second_start


@settings(max_examples=200, deadline=None)
@given(
    spans=spans,
    target_h=st.integers(1, 72),
    now=st.integers(0, 25 * 86_400),
    calendar=st.sampled_from(sorted(CALENDARS)),
)
def test_the_due_time_and_the_elapsed_time_agree(
    spans: list[tuple[int, int]], target_h: int, now: int, calendar: str
) -> None:
    """Breached (elapsed ≥ target) exactly when the due time is not after now, and the
    counted time at the due time is the target."""
    cal = CALENDARS[calendar]
    held = merge_spans((at(start), at(start + length)) for start, length in spans)
    target = timedelta(hours=target_h)
    due = counted_due(cal, OPENED, target, held)
    assert due is not None  # every hold here ends
    assert counted_time(cal, OPENED, due, held) == target
    elapsed = counted_time(cal, OPENED, at(now), held)
    assert (elapsed >= target) == (due <= at(now))
    # A hold never brings a due time forward.
    assert due >= counted_due(cal, OPENED, target, ())  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(spans=spans, steps=st.lists(st.integers(0, 5 * 86_400), min_size=2, max_size=6))
def test_a_clock_with_holds_never_runs_backwards(
    spans: list[tuple[int, int]], steps: list[int]
) -> None:
    holds = tuple(Hold(at(s), at(s + n), frozenset(CLOCK_KINDS)) for s, n in spans)
    times = IncidentTimes(Severity.CRITICAL, OPENED, holds=holds)
    previous = {kind: timedelta(0) for kind in CLOCK_KINDS}
    moment = 0
    for step in steps:
        moment += step
        for clock in clocks(WEEKDAYS, times, at(moment)):
            assert clock.elapsed >= previous[clock.kind]
            previous[clock.kind] = clock.elapsed


@settings(max_examples=100, deadline=None)
@given(exempt_at=st.integers(0, 80 * 60), exempt_for=st.integers(1, 10 * 86_400))
def test_a_lifted_exemption_moves_the_due_times_by_its_length(
    exempt_at: int, exempt_for: int
) -> None:
    """24x7: every clock's due time moves by exactly the exempt span when it started
    before the due time; while it lasts, the clocks are held and have no due time."""
    plain = by_kind(ALWAYS, IncidentTimes(Severity.CRITICAL, OPENED), at(0))
    span = (at(exempt_at), at(exempt_at + exempt_for))
    lifted = IncidentTimes(Severity.CRITICAL, OPENED, holds=(Hold(*span),))
    after = by_kind(ALWAYS, lifted, span[1] + timedelta(seconds=1))
    for kind in ("first_response", "resolution"):
        before_due = plain[kind].due_at  # type: ignore[attr-defined]
        assert after[kind].due_at == before_due + timedelta(seconds=exempt_for)  # type: ignore[attr-defined]
        assert after[kind].running  # type: ignore[attr-defined]
        assert after[kind].elapsed == timedelta(seconds=exempt_at + 1)  # type: ignore[attr-defined]
    during = by_kind(ALWAYS, IncidentTimes(Severity.CRITICAL, OPENED, exempt_at=span[0]), span[1])
    for clock in during.values():
        assert clock.due_at is None and not clock.running  # type: ignore[attr-defined]
        assert clock.held_since == span[0]  # type: ignore[attr-defined]


def test_a_nodata_gap_is_not_counted_once_data_is_back() -> None:
    """Silent 10:20-12:20 on a 24x7 plan: 2 h later the resolution clock counts 2 h 20 m,
    not 4 h 20 m, and its due time moved by the gap; the RCA clock is not affected."""
    gap = Hold(at(20 * 60), at(140 * 60), SILENT_CLOCKS, "nodata")
    times = IncidentTimes(Severity.CRITICAL, OPENED, holds=(gap,))
    now = at(260 * 60)
    kinds = by_kind(ALWAYS, times, now)
    resolution = kinds["resolution"]
    assert resolution.elapsed == timedelta(hours=2, minutes=20)  # type: ignore[attr-defined]
    assert resolution.due_at == OPENED + timedelta(hours=8)  # type: ignore[attr-defined]
    first = kinds["first_response"]
    assert first.due_at == OPENED + timedelta(minutes=90 + 120)  # type: ignore[attr-defined]
    # While silent: held, no due time.
    silent = IncidentTimes(Severity.CRITICAL, OPENED, silent_at=at(20 * 60))
    assert all(
        c.held_since == at(20 * 60) and c.due_at is None
        for c in clocks(ALWAYS, silent, now)
        if c.kind in SILENT_CLOCKS
    )


def test_waiting_on_the_customer_holds_only_the_resolution_clock() -> None:
    wait = Hold(at(10 * 60), None, WAITING_CLOCKS, "waiting_on_customer")
    times = IncidentTimes(Severity.CRITICAL, OPENED, holds=(wait,))
    kinds = by_kind(ALWAYS, times, at(3 * 3600))
    assert kinds["first_response"].breached  # type: ignore[attr-defined]
    assert kinds["first_response"].due_at == OPENED + timedelta(minutes=90)  # type: ignore[attr-defined]
    resolution = kinds["resolution"]
    assert resolution.elapsed == timedelta(minutes=10) and not resolution.running  # type: ignore[attr-defined]
    assert resolution.due_at is None  # type: ignore[attr-defined]
    # The customer replied after 2 h: the resolution due time moved by 2 h.
    replied = IncidentTimes(
        Severity.CRITICAL, OPENED, holds=(Hold(at(600), at(600 + 7200), WAITING_CLOCKS),)
    )
    assert by_kind(ALWAYS, replied, at(3 * 3600))["resolution"].due_at == OPENED + timedelta(
        hours=8
    )  # type: ignore[attr-defined]


def test_a_hold_after_the_clock_stopped_changes_nothing() -> None:
    acked = OPENED + timedelta(minutes=20)
    exempt = Hold(at(3600), None)
    times = IncidentTimes(Severity.CRITICAL, OPENED, acknowledged_at=acked, holds=(exempt,))
    first = by_kind(ALWAYS, times, at(5 * 3600))["first_response"]
    assert first.elapsed == timedelta(minutes=20) and not first.breached  # type: ignore[attr-defined]
    assert first.due_at == OPENED + timedelta(minutes=90)  # type: ignore[attr-defined]


def test_a_closed_incident_stops_first_response_and_resolution() -> None:
    closed = at(3600)
    times = IncidentTimes(Severity.MAJOR, OPENED, closed_at=closed)
    for clock in clocks(ALWAYS, times, at(100 * 3600)):
        assert clock.stopped_at == closed and clock.elapsed == timedelta(hours=1)
