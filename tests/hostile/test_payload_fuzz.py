"""Fuzz of the payload parser: whatever arrives, no exception escapes, and every message
is either accepted with values the classifier can compute with, or rejected under one of
the known reasons.

Inputs: random bytes; JSON of random shape, depth and size (with ccwatch's field names,
native and Telegraf); numeric extremes (10**400, ±1e308, NaN, infinities, 2**63, ...) in
every numeric field; nesting far deeper than ``json.loads`` can recurse. The examples
tried and the reasons seen are printed at the end of the module (``pytest -s``);
``CCWATCH_FUZZ_EXAMPLES`` sets the examples per test (default 300).
"""

from __future__ import annotations

import json
import math
import os
import resource
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccwatch.classify import ComponentWindow, Thresholds, assess
from ccwatch.errors import PayloadError
from ccwatch.ingest.payload import COUNT_FIELDS, MAX_COUNT, REJECT_REASONS, PayloadParser
from ccwatch.mqtt import MAX_EPOCH_SECONDS

COMPONENTS = ("acd", "ivr", "dialer", "voice_logger", "reports")
NOW = 1_795_430_000.0
SKEW = 300.0
EXAMPLES = int(os.environ.get("CCWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TALLY: Counter[str] = Counter()
PARSER = PayloadParser("blr1", COMPONENTS, 65536, max_clock_skew=SKEW)  # shared: counters too

FIELDS = [
    *COUNT_FIELDS,
    "ts",
    "up",
    "calls_offered_total",
    "calls_rejected_total",
    "interval_s",
    "fields",
    "tags",
    "metrics",
    "timestamp",
    "name",
    "site",
    "component",
]
EXTREMES = st.sampled_from(
    [
        10**400,
        -(10**400),
        10**4000,
        2**63,
        2**64 + 1,
        2**53 + 1,
        MAX_COUNT,
        MAX_COUNT + 1,
        1e308,
        -1e308,
        5e-324,
        -0.0,
        math.nan,
        math.inf,
        -math.inf,
        0,
        1,
        NOW,
        NOW * 1000,
        NOW * 1e9,
        4_102_444_800,  # 2100
        253_402_300_800 * 10**9,  # just after year 9999, in ns
    ]
)
NUMBERS = (
    EXTREMES | st.integers() | st.floats() | st.integers(min_value=-(10**30), max_value=10**30)
)
TEXT_TS = st.sampled_from(
    [
        "2026-11-23T10:00:00Z",
        "2099-01-01T00:00:00Z",
        "2026-11-23T10:00:00",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "2026-02-30T00:00:00Z",
        "",
    ]
)
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=20) | TEXT_TS
KEYS = st.sampled_from(FIELDS) | st.text(max_size=8)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=40,
)
NATIVE = st.dictionaries(st.sampled_from(FIELDS), SCALARS | JSON_VALUES, max_size=10)
TELEGRAF = st.fixed_dictionaries(
    {"fields": NATIVE, "tags": st.dictionaries(KEYS, SCALARS, max_size=3)},
    optional={"timestamp": SCALARS, "name": st.text(max_size=5)},
)
DOCUMENTS = NATIVE | TELEGRAF | st.fixed_dictionaries({"metrics": st.lists(TELEGRAF, max_size=4)})
COMPONENT = st.sampled_from([*COMPONENTS, "fax", ""])


def encode(document: Any) -> bytes | None:
    try:
        return json.dumps(document).encode()
    except (ValueError, RecursionError):  # ints over 4,300 digits: not something to send
        return None


def deep(depth: int, shape: str) -> bytes:
    """Nesting built as text: json.dumps itself recurses and could not write these."""
    if shape == "array":
        return b"[" * depth + b"1" + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if shape == "unclosed":
        return b"[" * depth
    return b'{"up": true, "x": ' + b"[" * depth + b"]" * depth + b"}"


def check(component: str, payload: bytes) -> None:
    """The property: accepted with sane values, or rejected under a known reason."""
    TALLY["examples"] += 1
    try:
        measurements = PARSER.parse_metrics(component, payload, NOW)
    except PayloadError as exc:
        assert exc.reason in REJECT_REASONS, exc.reason
        TALLY[f"rejected:{exc.reason}"] += 1
        return
    TALLY["accepted"] += 1
    for m in measurements:
        assert m.component in COMPONENTS
        assert math.isfinite(m.ts) and m.ts <= NOW + SKEW and m.ts <= MAX_EPOCH_SECONDS
        for name in COUNT_FIELDS:
            value = getattr(m, name)
            # Plain ints pass through as they are (the hot path), bounded like the rest.
            assert value is None or (isinstance(value, int | float) and 0 <= value <= MAX_COUNT)
        # What the pipeline does next must not fail on it either.
        assessment = assess(
            component=m.component,
            thresholds=Thresholds(),
            seats=m.seats,
            agents_unable_to_take_calls=m.agents_unable_to_take_calls,
            agents_unable_to_login=m.agents_unable_to_login,
            agents_expected=m.agents_expected,
            agents_logged_in=m.agents_logged_in,
            calls_offered=m.calls_offered,
            calls_rejected=m.calls_rejected,
            up=m.up,
        )
        assert math.isfinite(assessment.loss) and assessment.loss >= 0
        if m.calls_offered is not None and m.calls_rejected is not None:
            window = ComponentWindow(300.0)
            window.add_calls(m.ts, m.calls_offered, m.calls_rejected)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reasons = {k: v for k, v in sorted(TALLY.items()) if k != "examples"}
    print(
        f"\npayload fuzz: {TALLY['examples']} messages tried; {reasons}; peak RSS {peak_mb:.0f} MB"
    )
    # The parser's only state (counter baselines) is bounded by the configured components.
    assert len(PARSER._counters) <= 2 * len(COMPONENTS)


@FUZZ
@given(COMPONENT, st.binary(max_size=2048))
def test_random_bytes(component: str, payload: bytes) -> None:
    check(component, payload)


@FUZZ
@given(COMPONENT, DOCUMENTS)
def test_json_of_random_shape_and_values(component: str, document: Any) -> None:
    payload = encode(document)
    if payload is not None:
        check(component, payload)


@FUZZ
@given(
    COMPONENT,
    st.dictionaries(st.sampled_from(FIELDS[:12]), EXTREMES, min_size=1, max_size=12),
    st.booleans(),
)
def test_numeric_extremes_in_every_field(
    component: str, fields: dict[str, Any], telegraf: bool
) -> None:
    document: dict[str, Any] = {"fields": fields} if telegraf else fields
    payload = encode(document)
    if payload is not None:
        check(component, payload)


@FUZZ
@given(
    st.integers(min_value=0, max_value=30_000),
    st.sampled_from(["array", "object", "unclosed", "inside"]),
)
def test_nesting_of_any_depth(depth: int, shape: str) -> None:
    check("acd", deep(depth, shape))


@FUZZ
@given(st.binary(max_size=64) | st.sampled_from([b"online", b"offline", b'"online"', b""]))
def test_status_payloads(payload: bytes) -> None:
    TALLY["examples"] += 1
    try:
        PARSER.parse_status("acd", payload, NOW)
        TALLY["accepted"] += 1
    except PayloadError as exc:
        assert exc.reason in REJECT_REASONS
        TALLY[f"rejected:{exc.reason}"] += 1
