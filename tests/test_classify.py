"""Production loss and severity (README "Classification", seed 004's examples)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.classify import (
    WILSON_Z,
    ComponentWindow,
    Thresholds,
    assess,
    severity_for,
    wilson_lower_bound,
)
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


def test_rejections_count_as_measured_once_enough_calls_were_offered() -> None:
    enough = assess(component="dialer", thresholds=DEFAULT, calls_offered=20, calls_rejected=4)
    assert (enough.severity, enough.cause, enough.loss) == (Severity.CRITICAL, "rejected", 0.2)


# --- small samples (fewer calls than min_calls_offered) --------------------------------


def test_a_total_outage_on_a_small_sample_is_at_least_major() -> None:
    # Before: 15 of 15 calls rejected was ignored below the 20-call minimum (no incident).
    result = assess(
        component="dialer",
        thresholds=DEFAULT,
        calls_offered=15,
        calls_rejected=15,
        window_label="5m",
    )
    assert result.severity == Severity.MAJOR
    assert result.cause == "rejected_sample"
    assert result.loss == pytest.approx(15 / (15 + WILSON_Z**2))  # 79.6 %
    assert result.impact == (
        "15 of 15 calls rejected in the last 5m (100.0%), small sample: at least 79.6%"
    )


@pytest.mark.parametrize(("rejected", "offered"), [(1, 1), (2, 3), (19, 19)])
def test_a_small_sample_alone_is_never_critical(rejected: int, offered: int) -> None:
    result = assess(
        component="dialer", thresholds=DEFAULT, calls_offered=offered, calls_rejected=rejected
    )
    assert result.severity == Severity.MAJOR
    assert "small sample" in result.impact


def test_a_small_sample_with_nothing_rejected_is_no_loss() -> None:
    result = assess(component="dialer", thresholds=DEFAULT, calls_offered=5, calls_rejected=0)
    assert (result.severity, result.cause, result.loss) == (Severity.NONE, "none", 0.0)


def test_the_small_sample_bound_never_lowers_what_another_measure_says() -> None:
    # 25 % cannot take calls is critical; 15 of 15 rejected (capped at major) must not
    # replace it even though its bound (79.6 %) is larger.
    result = assess(
        component="acd",
        thresholds=DEFAULT,
        seats=100,
        agents_unable_to_take_calls=25,
        calls_offered=15,
        calls_rejected=15,
    )
    assert (result.severity, result.cause) == (Severity.CRITICAL, "take_calls")
    # 5 % cannot take calls is major: the larger small-sample bound explains it.
    result = assess(
        component="acd",
        thresholds=DEFAULT,
        seats=100,
        agents_unable_to_take_calls=5,
        calls_offered=15,
        calls_rejected=15,
    )
    assert (result.severity, result.cause) == (Severity.MAJOR, "rejected_sample")


def test_a_small_sample_respects_the_component_cap() -> None:
    result = assess(
        component="reports",
        thresholds=DEFAULT,
        max_severity=Severity.MINOR,
        calls_offered=15,
        calls_rejected=15,
    )
    assert result.severity == Severity.MINOR


def test_wilson_lower_bound_known_values() -> None:
    # Reference values of the 95 % Wilson score interval.
    assert wilson_lower_bound(15, 15) == pytest.approx(0.7961, abs=1e-4)
    assert wilson_lower_bound(1, 1) == pytest.approx(0.2065, abs=1e-4)
    assert wilson_lower_bound(2, 3) == pytest.approx(0.2077, abs=1e-4)
    assert wilson_lower_bound(50, 100) == pytest.approx(0.4038, abs=1e-4)
    assert wilson_lower_bound(0, 10) == 0.0
    assert wilson_lower_bound(3, 0) == 0.0


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


def rejected_severity(rejected: int, offered: int, thresholds: Thresholds = DEFAULT) -> Severity:
    return assess(
        component="dialer",
        thresholds=thresholds,
        calls_offered=offered,
        calls_rejected=rejected,
    ).severity


def rejected_loss(rejected: int, offered: int, thresholds: Thresholds = DEFAULT) -> float:
    return assess(
        component="dialer",
        thresholds=thresholds,
        calls_offered=offered,
        calls_rejected=rejected,
    ).loss


guards = st.integers(min_value=0, max_value=60).map(
    lambda minimum: Thresholds(min_calls_offered=minimum)
)


@given(st.integers(min_value=1, max_value=200), st.data(), guards)
def test_more_rejected_calls_never_look_smaller(
    offered: int, data: st.DataObject, thresholds: Thresholds
) -> None:
    """For a fixed number of calls offered, more rejected calls never lower the loss or
    the severity, on either side of the guard."""
    fewer = data.draw(st.integers(min_value=0, max_value=offered))
    more = data.draw(st.integers(min_value=fewer, max_value=offered))
    assert rejected_loss(fewer, offered, thresholds) <= rejected_loss(more, offered, thresholds)
    assert rejected_severity(fewer, offered, thresholds) <= rejected_severity(
        more, offered, thresholds
    )


@given(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=10),
    guards,
)
def test_the_same_share_over_more_calls_never_looks_smaller(
    rejected: int, offered: int, factor: int, thresholds: Thresholds
) -> None:
    """k of n and (f·k) of (f·n) are the same share: the larger sample is never lower,
    whether the guard applies to neither, both, or only the smaller one."""
    rejected = min(rejected, offered)
    small = (rejected, offered)
    large = (rejected * factor, offered * factor)
    assert rejected_loss(*small, thresholds) <= rejected_loss(*large, thresholds) + 1e-12
    assert rejected_severity(*small, thresholds) <= rejected_severity(*large, thresholds)


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=200))
def test_the_small_sample_bound_never_exceeds_the_measured_share(
    rejected: int, offered: int
) -> None:
    rejected = min(rejected, offered)
    bound = wilson_lower_bound(rejected, offered)
    assert 0 <= bound <= rejected / offered


@given(st.integers(min_value=20, max_value=2000), st.data())
def test_at_and_above_the_minimum_the_share_counts_exactly(
    offered: int, data: st.DataObject
) -> None:
    """Seed 004's boundaries, unchanged for samples of at least min_calls_offered."""
    rejected = data.draw(st.integers(min_value=0, max_value=offered))
    severity = rejected_severity(rejected, offered)
    if rejected * 5 >= offered:
        assert severity == Severity.CRITICAL
    elif rejected * 50 > offered:
        assert severity == Severity.MAJOR
    elif rejected > 0:
        assert severity == Severity.MINOR
    else:
        assert severity == Severity.NONE


# --- logins ------------------------------------------------------------------------------


def test_logged_in_agents_are_measured_against_the_seats_when_no_one_says_otherwise() -> None:
    # Seed 004: "100 seats, only 80 agents or less can log in" is critical.
    result = assess(component="acd", thresholds=DEFAULT, seats=100, agents_logged_in=80)
    assert (result.severity, result.cause) == (Severity.CRITICAL, "logged_in")
    assert result.impact == (
        "20 of 100 expected agents are not logged in (80 of 100 logged in, 20.0%)"
    )


def test_logged_in_agents_against_a_night_shift() -> None:
    # 3 a.m., 10 agents planned, 8 logged in: 2 missing of 100 seats is minor, not P1.
    result = assess(
        component="acd", thresholds=DEFAULT, seats=100, agents_expected=10, agents_logged_in=8
    )
    assert result.severity == Severity.MINOR
    assert "8 of 10 logged in" in result.impact


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
