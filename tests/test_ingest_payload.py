"""MQTT payloads: native and Telegraf JSON, counters, and every rejection reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccwatch.errors import PayloadError
from ccwatch.ingest.payload import Measurement, PayloadParser, parse_topic
from ccwatch.mqtt import parse_timestamp

COMPONENTS = ("acd", "ivr", "dialer", "voice_logger", "reports")
NOW = 1_795_430_000.0  # 2026-11-23T10:33:20Z, after the examples' ts


def parser(max_bytes: int = 65536) -> PayloadParser:
    return PayloadParser("blr1", COMPONENTS, max_bytes)


def parse_one(body: Any, component: str = "acd", p: PayloadParser | None = None) -> Measurement:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    [measurement] = (p or parser()).parse_metrics(component, payload, NOW)
    return measurement


def reason_of(body: Any, component: str = "acd", p: PayloadParser | None = None) -> str:
    with pytest.raises(PayloadError) as caught:
        parse_one(body, component, p)
    return caught.value.reason


def test_native_payload_from_the_design() -> None:
    m = parse_one(
        {
            "ts": "2026-11-23T10:00:00Z",
            "interval_s": 10,
            "seats": 100,
            "agents_logged_in": 78,
            "agents_expected": 98,
            "agents_unable_to_login": 0,
            "agents_unable_to_take_calls": 23,
            "calls_offered": 400,
            "calls_rejected": 12,
            "up": True,
        }
    )
    assert (m.component, m.seats, m.agents_unable_to_take_calls, m.calls_rejected, m.up) == (
        "acd",
        100,
        23,
        12,
        True,
    )
    assert m.ts == parse_timestamp("2026-11-23T10:00:00+00:00")


def test_missing_ts_means_receive_time_and_epoch_units_are_recognised() -> None:
    assert parse_one({"up": True}).ts == NOW
    assert parse_one({"up": True, "ts": 1_795_000_000}).ts == 1_795_000_000
    assert parse_one({"up": True, "ts": 1_795_000_000_000}).ts == pytest.approx(1_795_000_000)
    assert parse_one({"up": True, "ts": 1_795_000_000_000_000_000}).ts == pytest.approx(
        1_795_000_000
    )


def test_telegraf_json_with_tags_and_batches() -> None:
    single = {
        "name": "acd",
        "tags": {"site": "blr1", "component": "dialer", "host": "cc1"},
        "fields": {"calls_offered": 100, "calls_rejected": 12},
        "timestamp": 1_795_000_000,
    }
    m = parse_one(single, component="acd")
    assert (m.component, m.calls_offered, m.calls_rejected, m.ts) == (
        "dialer",
        100,
        12,
        1_795_000_000,
    )
    batch = {"metrics": [single, {**single, "tags": {"component": "ivr"}}]}
    measurements = parser().parse_metrics("acd", json.dumps(batch).encode(), NOW)
    assert [m.component for m in measurements] == ["dialer", "ivr"]
    assert reason_of({**single, "tags": {"site": "del2"}}) == "schema"


def test_counters_become_deltas_and_survive_a_reset() -> None:
    p = parser()
    first = parse_one({"ts": 100, "calls_offered_total": 1000, "calls_rejected_total": 10}, p=p)
    assert first.calls_offered is None  # the first sample only sets the baseline
    second = parse_one({"ts": 110, "calls_offered_total": 1040, "calls_rejected_total": 14}, p=p)
    assert (second.calls_offered, second.calls_rejected) == (40, 4)
    reset = parse_one({"ts": 120, "calls_offered_total": 30, "calls_rejected_total": 1}, p=p)
    assert (reset.calls_offered, reset.calls_rejected) == (30, 1)
    # A redelivered older message must not look like a reset.
    old = parse_one({"ts": 110, "calls_offered_total": 1040, "calls_rejected_total": 14}, p=p)
    assert old.calls_offered is None
    after = parse_one({"ts": 130, "calls_offered_total": 50, "calls_rejected_total": 1}, p=p)
    assert (after.calls_offered, after.calls_rejected) == (20, 0)


def test_status_topic_online_and_offline() -> None:
    assert parser().parse_status("ivr", b"offline", NOW).up is False
    assert parser().parse_status("ivr", b"online", NOW).up is True
    with pytest.raises(PayloadError, match="online or offline"):
        parser().parse_status("ivr", b"maybe", NOW)


def test_topic_parsing() -> None:
    assert parse_topic("cc/blr1/acd/metrics", "cc", "blr1") == ("acd", "metrics")
    assert parse_topic("a/b/blr1/ivr/status", "a/b", "blr1") == ("ivr", "status")
    with pytest.raises(PayloadError):
        parse_topic("cc/del2/acd/metrics", "cc", "blr1")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        ([1, 2], "schema"),
        ({"ts": "2026-11-23T10:00:00Z"}, "schema"),
        ({"seats": "100"}, "schema"),
        ({"seats": True}, "schema"),
        ({"up": "sometimes"}, "schema"),
        ({"up": True, "ts": "yesterday"}, "schema"),
        ({"up": True, "ts": "2026-11-23T10:00:00"}, "schema"),
        ({"agents_unable_to_take_calls": -1, "seats": 100}, "negative"),
        ({"calls_offered": 10, "calls_rejected": 11}, "inconsistent"),
        ({"seats": 100, "agents_logged_in": 101}, "inconsistent"),
        ({"seats": 100, "agents_unable_to_take_calls": 101}, "inconsistent"),
        ({"seats": 0, "agents_unable_to_take_calls": 0}, "inconsistent"),
        (b'{"seats": NaN}', "nan"),
        (b'{"calls_offered": Infinity, "calls_rejected": 0}', "nan"),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(body: Any, reason: str) -> None:
    assert reason_of(body) == reason


def test_unknown_component_and_too_large() -> None:
    assert reason_of({"up": True}, component="fax") == "unknown_component"
    huge = json.dumps({"up": True, "pad": "x" * 70_000}).encode()
    assert reason_of(huge) == "too_large"


def test_size_limit_is_checked_before_parsing() -> None:
    # Not even JSON, but too large: the size decides, so no parser time is spent on it.
    assert reason_of(b"[" * 1000, p=parser(max_bytes=100)) == "too_large"


def test_rejected_counter_message_does_not_move_the_baseline() -> None:
    p = parser()
    parse_one({"ts": 1, "calls_offered_total": 100, "calls_rejected_total": 0}, p=p)
    assert reason_of({"ts": 2, "calls_offered_total": 110, "calls_rejected_total": 50}, p=p) == (
        "inconsistent"
    )
    ok = parse_one({"ts": 3, "calls_offered_total": 120, "calls_rejected_total": 5}, p=p)
    assert (ok.calls_offered, ok.calls_rejected) == (20, 5)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(
        st.sampled_from(["site", "component", "calls_offered", "up", "x"]), scalars, max_size=3
    )
)
field_names = st.sampled_from(
    [
        "ts",
        "seats",
        "agents_logged_in",
        "agents_expected",
        "agents_unable_to_login",
        "agents_unable_to_take_calls",
        "calls_offered",
        "calls_rejected",
        "up",
        "calls_offered_total",
        "calls_rejected_total",
        "fields",
        "tags",
        "metrics",
        "timestamp",
    ]
)


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_are_rejected_with_a_reason(payload: bytes) -> None:
    try:
        parser().parse_metrics("acd", payload, NOW)
    except PayloadError as exc:
        assert exc.reason


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_values, max_size=8))
def test_any_json_object_either_parses_or_is_rejected_with_a_reason(body: dict[str, Any]) -> None:
    try:
        payload = json.dumps(body).encode()
    except ValueError:
        return
    try:
        parser().parse_metrics("acd", payload, NOW)
    except PayloadError as exc:
        assert exc.reason


# --- hostile input (issue 10, "Bad MQTT input"): each failed on the old parser -----------


def test_deeply_nested_json_is_a_schema_rejection_not_a_recursion_error() -> None:
    # The old parser handed this to json.loads, which raised RecursionError.
    assert reason_of(b"[" * 20_000) == "schema"
    assert reason_of(b'{"up": true, "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}") == "schema"
    # Brackets inside strings are text, not nesting; moderate nesting is fine.
    assert parse_one({"up": True, "note": "[" * 500, "x": [[[[1]]]]}).up is True


def test_huge_integers_are_schema_rejections_and_store_nothing() -> None:
    # The old parser raised OverflowError on the ts and passed the count on unchecked.
    assert reason_of({"up": True, "ts": 10**400}) == "schema"
    assert reason_of({"seats": 100, "agents_unable_to_take_calls": 10**400}) == "schema"
    assert reason_of({"calls_offered": 10**400, "calls_rejected": 0}) == "schema"
    assert reason_of({"seats": 10**400}) == "schema"
    assert reason_of({"up": True, "ts": 1e300}) == "schema"
    assert reason_of({"seats": 100, "agents_logged_in": -(10**400)}) == "negative"
    p = parser()
    parse_one({"ts": 1, "calls_offered_total": 100, "calls_rejected_total": 0}, p=p)
    assert reason_of({"ts": 2, "calls_offered_total": 10**400, "calls_rejected_total": 0}, p=p) == (
        "schema"
    )
    after = parse_one({"ts": 3, "calls_offered_total": 150, "calls_rejected_total": 1}, p=p)
    assert (after.calls_offered, after.calls_rejected) == (50, 1), "the bad one moved nothing"


def test_a_ts_beyond_the_clock_skew_is_rejected_as_clock_skew() -> None:
    assert reason_of({"up": True, "ts": "2099-01-01T00:00:00Z"}) == "clock_skew"
    assert reason_of({"up": True, "ts": NOW + 301}) == "clock_skew"
    assert reason_of({"up": True, "ts": int((NOW + 3600) * 1000)}) == "clock_skew"  # ms
    assert parse_one({"up": True, "ts": NOW + 299}).ts == NOW + 299  # within 5 min: kept
    strict = PayloadParser("blr1", COMPONENTS, 65536, max_clock_skew=0.0)
    assert reason_of({"up": True, "ts": NOW + 1}, p=strict) == "clock_skew"
    telegraf = {"fields": {"up": 1}, "timestamp": int(NOW + 86_400)}
    assert reason_of(telegraf) == "clock_skew"


def test_a_rejected_telegraf_batch_moves_no_counter() -> None:
    p = parser()
    good = {"fields": {"calls_offered_total": 100, "calls_rejected_total": 0}, "timestamp": 1}
    parser_input = {"metrics": [good]}
    p.parse_metrics("acd", json.dumps(parser_input).encode(), NOW)
    moved = {"fields": {"calls_offered_total": 200, "calls_rejected_total": 0}, "timestamp": 2}
    bad = {"fields": {"up": 1}, "timestamp": "2099-01-01T00:00:00Z"}
    with pytest.raises(PayloadError) as caught:
        p.parse_metrics("acd", json.dumps({"metrics": [moved, bad]}).encode(), NOW)
    assert caught.value.reason == "clock_skew"
    after = parse_one({"ts": 3, "calls_offered_total": 130, "calls_rejected_total": 0}, p=p)
    assert after.calls_offered == 30, "the rejected batch's first item moved the baseline"


# --- the one timestamp parser ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:00:00Z", 1_795_428_000.0),
        ("2026-11-23t10:00:00z", 1_795_428_000.0),
        ("2026-11-23 10:00:00Z", 1_795_428_000.0),
        ("2026-11-23T15:30:00+05:30", 1_795_428_000.0),
        ("2026-11-23T05:00:00-05:00", 1_795_428_000.0),
        ("2026-11-23T10:00:00.250Z", 1_795_428_000.25),
        ("2026-11-23T10:00:00.123456789Z", 1_795_428_000.123456),
    ],
)
def test_rfc3339_with_an_offset(text: str, expected: float) -> None:
    assert parse_timestamp(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T10:00:00",  # naive: refused, never guessed as UTC or local
        "2026-11-23",
        "20261123T100000Z",
        "2026-13-01T00:00:00Z",
        "2026-11-23T10:00:00+25:00",
        "yesterday",
        "2026-11-23T10:00:00Z" + " " * 100,
    ],
)
def test_anything_else_as_text_is_refused(text: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_timestamp(text)
    assert caught.value.reason == "schema"


def test_a_naive_time_is_refused_with_a_hint() -> None:
    with pytest.raises(PayloadError, match="no time zone"):
        parse_timestamp("2026-11-23T10:00:00")


@given(st.datetimes(timezones=st.timezones(), allow_imaginary=False))
def test_any_aware_time_reads_back_as_its_instant(moment: Any) -> None:
    text = moment.isoformat()
    if moment.utcoffset() is None or moment.utcoffset().seconds % 60 or moment.year < 1:
        return
    if moment.utcoffset().microseconds:
        return
    assert parse_timestamp(text) == pytest.approx(moment.timestamp(), abs=1e-6)


@given(st.integers(min_value=0, max_value=4_102_444_800))  # up to 2100, in seconds
def test_epoch_units_agree(seconds: int) -> None:
    if seconds < 1e8:
        return  # before 1973 the units overlap (a 1970 time in ms looks like seconds)
    for factor in (1, 1000, 1_000_000, 1_000_000_000):
        assert parse_timestamp(seconds * factor) == pytest.approx(seconds, abs=1e-3)


def test_a_payload_with_a_utf8_byte_order_mark_is_read() -> None:
    from ccwatch.mqtt import load_json

    assert load_json(b'\xef\xbb\xbf{"seats": 100}') == {"seats": 100}
