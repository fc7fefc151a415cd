"""Production loss and severity of a component (pure: values in, values out).

README "Classification", from seed 004. The production loss ``L`` of a component is the
largest of:

- agents unable to take calls ÷ seats
- agents unable to log in ÷ seats, or (agents expected - agents logged in) ÷ seats,
  floored at 0; agents expected default to the seats (the callers pass the staffing
  table's value for the time of the measurement when there is one)
- calls rejected ÷ calls offered over the sliding window, once at least
  ``min_calls_offered`` calls were offered in it; below that, the lower bound of the
  95 % Wilson score interval of the rejected share (``wilson_lower_bound``), a share the
  sample shows with confidence: 15 of 15 rejected → at least 79.6 %, 1 of 1 → 20.7 %
- 1.0 while the component is down

and the severity follows the exact boundaries of the support contract: critical when
``L ≥ critical_at``, major when ``major_above < L < critical_at``, minor when
``0 < L ≤ major_above``, then capped by the component's ``max_severity``. A small sample
(fewer than ``min_calls_offered`` calls) is never more than major on its own: the bound
says a fault is real, not that it is a P1 (1 of 1 rejected is not critical; 15 of 15 is
major, and critical once the minimum is reached).

``ComponentWindow`` keeps what one component reported (latest agent counts, calls in
time buckets over the window, up/down); ``assess`` turns it into an ``Assessment``.
Nothing here reads a clock: times are the measurements' own timestamps.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from ccwatch.severity import Severity

# Calls are summed in buckets of window/BUCKETS_PER_WINDOW: memory per component stays
# bounded however fast a component publishes, at the cost of the window's edge moving
# in steps of one bucket (5 s for the default 5 min window).
BUCKETS_PER_WINDOW = 60

# z for a two-sided 95 % interval (the 97.5th percentile of the normal distribution).
WILSON_Z = 1.959963984540054
SMALL_SAMPLE_CAP = Severity.MAJOR


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The severity boundaries and the calls guard; defaults are seed 004's."""

    critical_at: float = 0.20
    major_above: float = 0.02
    min_calls_offered: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.major_above < self.critical_at <= 1:
            raise ValueError(
                f"thresholds must satisfy 0 <= major_above ({self.major_above}) < "
                f"critical_at ({self.critical_at}) <= 1"
            )
        if self.min_calls_offered < 0:
            raise ValueError(f"min_calls_offered ({self.min_calls_offered}) must be 0 or more")


def severity_for(
    loss: float, thresholds: Thresholds, max_severity: Severity = Severity.CRITICAL
) -> Severity:
    """The severity of a production loss, capped at ``max_severity``.

    A NaN loss counts as no loss: the payload parser rejects NaN before it gets here, so
    this only keeps the function total.
    """
    if loss >= thresholds.critical_at:
        severity = Severity.CRITICAL
    elif loss > thresholds.major_above:
        severity = Severity.MAJOR
    elif loss > 0:
        severity = Severity.MINOR
    else:
        severity = Severity.NONE
    return min(severity, max_severity)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One component's production loss right now, the severity it maps to, and why."""

    component: str
    loss: float
    severity: Severity
    # Which measure gave the loss: take_calls, login, logged_in, rejected,
    # rejected_sample (fewer calls than min_calls_offered: the loss is the Wilson bound),
    # down, none.
    cause: str
    measures: tuple[float | bool | None, ...]  # in MEASURES order
    window_label: str = ""

    @property
    def metrics(self) -> dict[str, float | int | bool | None]:
        """The measures by name (for diagnostics and the incident record)."""
        return dict(zip(MEASURES, self.measures, strict=True))

    @property
    def impact(self) -> str:
        # Built on demand: the pipeline assesses every message but needs the sentence only
        # when an incident changes.
        return impact_sentence(
            self.component, self.cause, self.loss, self.metrics, self.window_label
        )


MEASURES = (
    "seats",
    "agents_unable_to_take_calls",
    "agents_unable_to_login",
    "agents_expected",
    "agents_logged_in",
    "calls_offered",
    "calls_rejected",
    "up",
)


def percent(loss: float) -> str:
    return f"{loss * 100:.1f}%"


def wilson_lower_bound(rejected: float, offered: float, z: float = WILSON_Z) -> float:
    """The lower bound of the Wilson score interval of the share ``rejected / offered``.

    The share the sample supports with confidence (95 % two-sided for the default ``z``):
    0 when nothing was rejected or nothing offered, rising with the rejected count and,
    for the same share, with the number of calls. Counts outside ``0 ≤ rejected ≤
    offered`` are clamped.
    """
    if not offered > 0 or not rejected > 0:
        return 0.0
    share = min(rejected / offered, 1.0)
    z2n = z * z / offered
    centre = share + z2n / 2
    spread = z * math.sqrt(share * (1 - share) / offered + z2n / (4 * offered))
    return max(0.0, (centre - spread) / (1 + z2n))


def small_sample_severity(
    rejected: float, offered: float, thresholds: Thresholds
) -> tuple[float, Severity]:
    """The loss and severity of calls below ``min_calls_offered``: the Wilson lower
    bound, and its severity capped at major (a small sample alone never pages as P1)."""
    bound = wilson_lower_bound(rejected, offered)
    return bound, min(severity_for(bound, thresholds), SMALL_SAMPLE_CAP)


def assess(
    *,
    component: str,
    thresholds: Thresholds,
    max_severity: Severity = Severity.CRITICAL,
    seats: float | None = None,
    agents_unable_to_take_calls: float | None = None,
    agents_unable_to_login: float | None = None,
    agents_expected: float | None = None,
    agents_logged_in: float | None = None,
    calls_offered: float | None = None,
    calls_rejected: float | None = None,
    up: bool | None = None,
    window_label: str = "",
) -> Assessment:
    """Classify one set of measures. Never raises on finite (or missing) inputs."""
    return assess_measures(
        component,
        thresholds,
        max_severity,
        (
            seats,
            agents_unable_to_take_calls,
            agents_unable_to_login,
            agents_expected,
            agents_logged_in,
            calls_offered,
            calls_rejected,
            up,
        ),
        window_label,
    )


def assess_measures(
    component: str,
    thresholds: Thresholds,
    max_severity: Severity,
    measures: tuple[Any, ...],
    window_label: str = "",
) -> Assessment:
    """``assess`` with the measures as a tuple in ``MEASURES`` order (the hot path).

    The largest loss wins (the first measure listed on a tie). Written out flat because
    it runs for every message; comparisons with NaN are false, so a NaN measure (the
    parser rejects them anyway) simply never wins.
    """
    seats, take_calls, login, expected, logged_in, offered, rejected, up = measures
    best_loss, best_cause = 0.0, "none"
    small_sample = False
    if up is False:
        best_loss, best_cause = 1.0, "down"
    if seats is not None and seats > 0:
        if take_calls is not None and take_calls / seats > best_loss:
            best_loss, best_cause = take_calls / seats, "take_calls"
        if login is not None and login / seats > best_loss:
            best_loss, best_cause = login / seats, "login"
        if logged_in is not None:
            missing = (seats if expected is None else expected) - logged_in
            if missing / seats > best_loss:
                best_loss, best_cause = missing / seats, "logged_in"
    if offered is not None and rejected is not None and offered > 0:
        if offered >= thresholds.min_calls_offered:
            if rejected / offered > best_loss:
                best_loss, best_cause = rejected / offered, "rejected"
        elif rejected > 0:
            small_sample = True
    best_loss = min(best_loss, 1.0)
    severity = severity_for(best_loss, thresholds, max_severity)
    if small_sample:
        # Below the minimum the bound counts, capped at major; it wins only when it
        # does not lower the severity another measure gives.
        bound, bound_severity = small_sample_severity(rejected, offered, thresholds)
        bound_severity = min(bound_severity, max_severity)
        if bound > best_loss and bound_severity >= severity:
            best_loss, best_cause, severity = bound, "rejected_sample", bound_severity
    return Assessment(component, best_loss, severity, best_cause, measures, window_label)


def impact_sentence(
    component: str,
    cause: str,
    loss: float,
    metrics: dict[str, float | int | bool | None],
    window_label: str = "",
) -> str:
    """The sentence support staff read, e.g. "23 of 100 agents cannot take calls (23.0%)"."""

    def count(name: str) -> int | float:
        value = metrics.get(name)
        return _count(float(value)) if isinstance(value, int | float) else 0

    if cause == "down":
        return f"{component} is down (100.0%)"
    if cause == "take_calls":
        return (
            f"{count('agents_unable_to_take_calls')} of {count('seats')} agents cannot take "
            f"calls ({percent(loss)})"
        )
    if cause == "login":
        return (
            f"{count('agents_unable_to_login')} of {count('seats')} agents cannot log in "
            f"({percent(loss)})"
        )
    if cause == "logged_in":
        has_expected = metrics.get("agents_expected") is not None
        expected = count("agents_expected") if has_expected else count("seats")
        missing = _count(max(0.0, float(expected) - count("agents_logged_in")))
        return (
            f"{missing} of {count('seats')} expected agents are not logged in "
            f"({count('agents_logged_in')} of {expected} logged in, "
            f"{percent(loss)})"
        )
    if cause in ("rejected", "rejected_sample"):
        within = f" in the last {window_label}" if window_label else ""
        offered = float(count("calls_offered"))
        share = count("calls_rejected") / offered if offered > 0 else 0.0
        sentence = f"{count('calls_rejected')} of {count('calls_offered')} calls rejected{within}"
        if cause == "rejected":
            return f"{sentence} ({percent(loss)})"
        return f"{sentence} ({percent(share)}), small sample: at least {percent(loss)}"
    return "no production loss"


def _count(value: float) -> int | float:
    """Counts print as integers when they are whole (they nearly always are)."""
    if math.isfinite(value) and float(value).is_integer():
        return int(value)
    return round(value, 2)


class ComponentWindow:
    """What one component reported: latest agent counts, calls over the window, up/down.

    Calls are bucketed by the measurements' timestamps; a late message (older than the
    window) is ignored for calls but still updates nothing else, so a replayed backlog
    adds up the same as a live stream.
    """

    __slots__ = (
        "_bucket_seconds",
        "_buckets",
        "_newest_bucket",
        "_offered",
        "_rejected",
        "_window_seconds",
        "agents_expected",
        "agents_logged_in",
        "agents_unable_to_login",
        "agents_unable_to_take_calls",
        "seats",
        "up",
    )

    def __init__(self, window_seconds: float) -> None:
        self._window_seconds = window_seconds
        self._bucket_seconds = window_seconds / BUCKETS_PER_WINDOW
        # Each bucket: [bucket index, offered, rejected]
        self._buckets: deque[list[float]] = deque()
        self._newest_bucket = -math.inf
        self._offered = 0.0
        self._rejected = 0.0
        self.seats: float | None = None
        self.agents_unable_to_take_calls: float | None = None
        self.agents_unable_to_login: float | None = None
        self.agents_expected: float | None = None
        self.agents_logged_in: float | None = None
        self.up: bool | None = None

    @property
    def calls_offered(self) -> float:
        return self._offered

    @property
    def calls_rejected(self) -> float:
        return self._rejected

    @property
    def has_calls(self) -> bool:
        return bool(self._buckets)

    def add_calls(self, ts: float, offered: float, rejected: float) -> None:
        index = math.floor(ts / self._bucket_seconds)
        oldest_kept = self._newest_bucket - BUCKETS_PER_WINDOW + 1
        if index < oldest_kept:
            return  # older than the window: it would be evicted at once
        if index > self._newest_bucket:
            self._newest_bucket = index
            self._evict(index - BUCKETS_PER_WINDOW + 1)
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:
            bucket = buckets[-1]
        else:
            # Out-of-order within the window: find or insert its bucket (rare, short scan).
            found = [b for b in buckets if b[0] == index]
            if found:
                bucket = found[0]
            else:
                bucket = [float(index), 0.0, 0.0]
                position = sum(1 for b in buckets if b[0] < index)
                buckets.insert(position, bucket)
        bucket[1] += offered
        bucket[2] += rejected
        self._offered += offered
        self._rejected += rejected

    def _evict(self, oldest_kept: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] < oldest_kept:
            _, offered, rejected = buckets.popleft()
            self._offered -= offered
            self._rejected -= rejected
        if not buckets:
            # Reset the float sums so rounding error cannot accumulate across windows.
            self._offered = self._rejected = 0.0

    def assess(
        self,
        component: str,
        thresholds: Thresholds,
        max_severity: Severity,
        seats_fallback: float | None = None,
        window_label: str = "",
    ) -> Assessment:
        has_calls = bool(self._buckets)
        return assess_measures(
            component,
            thresholds,
            max_severity,
            (
                self.seats if self.seats is not None else seats_fallback,
                self.agents_unable_to_take_calls,
                self.agents_unable_to_login,
                self.agents_expected,
                self.agents_logged_in,
                self._offered if has_calls else None,
                self._rejected if has_calls else None,
                self.up,
            ),
            window_label,
        )
