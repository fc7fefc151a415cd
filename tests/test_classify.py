"""Production loss and severity (README "Classification", seed 004's examples)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.classify import ComponentWindow, Thresholds, assess, severity_for
from ccwatch.severity import Severity

DEFAULT = Thresholds()


@pytest.mark.parametrize(
    ("unable", "expected"),
    [
        (100, "critical"),
        (23, "critical"),
        (20, "critical"),
        (19, "major"),
        (3, "major"),
        (2, "minor"),
        (1, "minor"),
        (0, "none"),
    ],
)
def test_seed_examples_agents_who_cannot_take_calls(unable: int, expected: str) -> None:
    result = assess(
        component="acd", thresholds=DEFAULT, seats=100, agents_unable_to_take_calls=unable
    )
    assert result.severity.label == expected


@pytest.mark.parametrize(
    ("rejected", "expected"),
    [(80, "critical"), (79, "major"), (9, "major"), (8, "minor"), (1, "minor"), (0, "none")],
)
def test_seed_examples_rejected_calls(rejected: int, expected: str) -> None:
    result = assess(
        component="dialer", thresholds=DEFAULT, calls_offered=400, calls_rejected=rejected
    )
    assert result.severity.label == expected


@pytest.mark.parametrize(
    ("logged_in", "expected"),
    [
        (80, "critical"),
        (78, "critical"),
        (81, "major"),
        (97, "major"),
        (98, "minor"),
        (100, "none"),
    ],
)
def test_seed_examples_only_some_agents_can_log_in(logged_in: int, expected: str) -> None:
    # "in a 100 seat setup, only 80 agents or less can login" is critical.
    result = assess(
        component="acd",
        thresholds=DEFAULT,
        seats=100,
        agents_expected=100,
        agents_logged_in=logged_in,
    )
    assert result.severity.label == expected


def test_impact_sentence_says_who_and_how_much() -> None:
    result = assess(component="acd", thresholds=DEFAULT, seats=100, agents_unable_to_take_calls=23)
    assert result.impact == "23 of 100 agents cannot take calls (23.0%)"
    assert result.loss == pytest.approx(0.23)
    rejected = assess(
        component="dialer",
        thresholds=DEFAULT,
        calls_offered=400,
        calls_rejected=48,
        window_label="5m",
    )
    assert rejected.impact == "48 of 400 calls rejected in the last 5m (12.0%)"
    down = assess(component="ivr", thresholds=DEFAULT, up=False)
    assert (down.severity, down.impact) == (Severity.CRITICAL, "ivr is down (100.0%)")


def test_largest_measure_wins() -> None:
    result = assess(
        component="acd",
        thresholds=DEFAULT,
        seats=100,
        agents_unable_to_take_calls=5,
        agents_unable_to_login=12,
        calls_offered=400,
        calls_rejected=8,
    )
    assert (result.cause, result.severity) == ("login", Severity.MAJOR)


def test_rejections_count_only_once_enough_calls_were_offered() -> None:
    few = assess(component="dialer", thresholds=DEFAULT, calls_offered=19, calls_rejected=19)
    assert few.severity == Severity.NONE
    enough = assess(component="dialer", thresholds=DEFAULT, calls_offered=20, calls_rejected=4)
    assert enough.severity == Severity.CRITICAL


def test_reports_are_capped_at_major() -> None:
    result = assess(component="reports", thresholds=DEFAULT, max_severity=Severity.MAJOR, up=False)
    assert result.severity == Severity.MAJOR


def test_configured_thresholds_move_the_boundaries() -> None:
    strict = Thresholds(critical_at=0.10, major_above=0.01, min_calls_offered=0)
    assert severity_for(0.10, strict) == Severity.CRITICAL
    assert severity_for(0.05, strict) == Severity.MAJOR
    assert severity_for(0.01, strict) == Severity.MINOR


def test_invalid_thresholds_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="major_above"):
        Thresholds(critical_at=0.1, major_above=0.2)


# --- properties ------------------------------------------------------------------------

losses = st.floats(min_value=0, max_value=1, allow_nan=False)
severities = st.sampled_from(list(Severity))


@given(losses, losses)
def test_severity_is_monotonic_in_the_loss(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert severity_for(low, DEFAULT) <= severity_for(high, DEFAULT)


@given(losses, severities)
def test_severity_never_exceeds_the_cap(loss: float, cap: Severity) -> None:
    assert severity_for(loss, DEFAULT, cap) <= cap


@given(losses)
def test_boundary_table_is_exact(loss: float) -> None:
    severity = severity_for(loss, DEFAULT)
    if loss >= 0.20:
        assert severity == Severity.CRITICAL
    elif loss > 0.02:
        assert severity == Severity.MAJOR
    elif loss > 0:
        assert severity == Severity.MINOR
    else:
        assert severity == Severity.NONE


@given(st.integers(min_value=1, max_value=10_000), st.data())
def test_integer_counts_hit_the_boundaries_exactly(seats: int, data: st.DataObject) -> None:
    unable = data.draw(st.integers(min_value=0, max_value=seats))
    result = assess(
        component="acd", thresholds=DEFAULT, seats=seats, agents_unable_to_take_calls=unable
    )
    # Exact rational comparison: no float rounding can move a case across a boundary.
    if unable * 5 >= seats:
        assert result.severity == Severity.CRITICAL
    elif unable * 50 > seats:
        assert result.severity == Severity.MAJOR
    elif unable > 0:
        assert result.severity == Severity.MINOR
    else:
        assert result.severity == Severity.NONE


finite = st.floats(allow_nan=False, allow_infinity=False) | st.none()


@given(
    finite, finite, finite, finite, finite, finite, finite, st.booleans() | st.none(), severities
)
def test_never_raises_on_finite_input(
    seats: float | None,
    take: float | None,
    login: float | None,
    expected: float | None,
    logged: float | None,
    offered: float | None,
    rejected: float | None,
    up: bool | None,
    cap: Severity,
) -> None:
    result = assess(
        component="acd",
        thresholds=DEFAULT,
        max_severity=cap,
        seats=seats,
        agents_unable_to_take_calls=take,
        agents_unable_to_login=login,
        agents_expected=expected,
        agents_logged_in=logged,
        calls_offered=offered,
        calls_rejected=rejected,
        up=up,
    )
    assert 0 <= result.loss <= 1 and result.severity <= cap
    assert isinstance(result.impact, str) and not math.isnan(result.loss)


# --- the window --------------------------------------------------------------------------


def test_window_sums_calls_and_forgets_them_after_the_window() -> None:
    window = ComponentWindow(window_seconds=300)
    for second in range(0, 300, 10):
        window.add_calls(1_000_000 + second, 40, 4)
    assert (window.calls_offered, window.calls_rejected) == (1200, 120)
    assert window.assess("dialer", DEFAULT, Severity.CRITICAL).severity == Severity.MAJOR
    # Ten minutes later, a clean interval: the old rejections have left the window.
    window.add_calls(1_000_000 + 900, 40, 0)
    assert (window.calls_offered, window.calls_rejected) == (40, 0)
    assert window.assess("dialer", DEFAULT, Severity.CRITICAL).severity == Severity.NONE


def test_window_ignores_calls_older_than_the_window_and_accepts_late_ones_within() -> None:
    window = ComponentWindow(window_seconds=300)
    window.add_calls(10_000, 100, 0)
    window.add_calls(10_000 - 1000, 100, 100)  # far too old: ignored
    window.add_calls(10_000 - 100, 100, 50)  # late but inside the window: counted
    assert (window.calls_offered, window.calls_rejected) == (200, 50)


def test_window_memory_is_bounded_however_fast_a_component_publishes() -> None:
    window = ComponentWindow(window_seconds=300)
    for i in range(100_000):
        window.add_calls(i * 0.01, 1, 0)
    assert len(window._buckets) <= 61


def test_config_seats_are_used_when_payloads_carry_none() -> None:
    window = ComponentWindow(window_seconds=300)
    window.agents_unable_to_take_calls = 23
    result = window.assess("acd", DEFAULT, Severity.CRITICAL, seats_fallback=100)
    assert result.impact == "23 of 100 agents cannot take calls (23.0%)"
