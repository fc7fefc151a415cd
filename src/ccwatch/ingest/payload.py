"""MQTT payloads to measurements: native JSON and Telegraf JSON.

``PayloadParser.parse_metrics`` / ``parse_status`` return ``Measurement`` objects (a
Telegraf batch gives several) or raise ``PayloadError`` with one of the reasons in
``REJECT_REASONS``; nothing else escapes, whatever the bytes (tests/hostile fuzzes it).
Before anything is read: the size limit (``mqtt.max_payload_bytes``), then the nesting
depth (``ccwatch.mqtt.load_json``). Every number is bounded while parsing, so nothing
downstream sees a value it cannot compute with: counts in 0..``MAX_COUNT``, ``ts`` by
``ccwatch.mqtt.parse_timestamp`` (year 9999 at most) and at most ``max_clock_skew`` ahead
of the receive time (``clock_skew``: one message dated 2099 would otherwise outweigh every
later one of its component).

The parser keeps the last value of each ``*_total`` counter per component to turn
counters into deltas; a counter that goes down was reset (a restarted exporter), so the
new value is the delta, and a message older than the last one seen is not used for
counters (a QoS 1 redelivery must not look like a reset). A rejected message moves no
counter.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ccwatch.errors import PayloadError
from ccwatch.mqtt import FASTEST_EPOCH_SECONDS, load_json, parse_timestamp

REJECT_REASONS = (
    "not_json",
    "schema",
    "negative",
    "inconsistent",
    "too_large",
    "unknown_component",
    "nan",
    "topic",
    "clock_skew",
)

MAX_COUNT = 10**12
"""Largest count or counter value accepted (exact as a float); larger is ``schema``."""

# Count measures a payload may carry (non-negative numbers).
COUNT_FIELDS = (
    "seats",
    "agents_logged_in",
    "agents_expected",
    "agents_unable_to_login",
    "agents_unable_to_take_calls",
    "calls_offered",
    "calls_rejected",
)
COUNTER_FIELDS = {"calls_offered_total": "calls_offered", "calls_rejected_total": "calls_rejected"}


@dataclass(slots=True)
class Measurement:
    """One component's report; ``None`` means the message did not carry that measure."""

    site: str
    component: str
    ts: float
    received_at: float
    seats: float | None = None
    agents_logged_in: float | None = None
    agents_expected: float | None = None
    agents_unable_to_login: float | None = None
    agents_unable_to_take_calls: float | None = None
    calls_offered: float | None = None
    calls_rejected: float | None = None
    up: bool | None = None


def parse_topic(topic: str, prefix: str, site: str) -> tuple[str, str]:
    """``<prefix>/<site>/<component>/<metrics|status>`` → (component, kind)."""
    parts = topic.split("/")
    prefix_parts = prefix.split("/")
    n = len(prefix_parts)
    if (
        len(parts) != n + 3
        or parts[:n] != prefix_parts
        or parts[n] != site
        or parts[n + 2] not in ("metrics", "status")
        or not parts[n + 1]
    ):
        raise PayloadError("topic", f"unexpected topic {topic!r}")
    return parts[n + 1], parts[n + 2]


def _count(name: str, value: object) -> float:
    # bool is an int in Python; `true` agents is a schema error, not 1 agent.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError("schema", f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError("nan", f"{name} is not a finite number")
    if value < 0:
        raise PayloadError("negative", f"{name} is negative ({str(value)[:20]})")
    if value > MAX_COUNT:  # compared before float(): 10**400 cannot overflow
        raise PayloadError("schema", f"{name} is out of range (over {MAX_COUNT:.0e})")
    return float(value)


def _up(value: object) -> bool:
    if isinstance(value, bool):
        return value
    # Telegraf and many exporters write booleans as 0/1.
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "up", "down"):
        return value.lower() in ("true", "up")
    raise PayloadError("schema", "up must be true or false")


class PayloadParser:
    """Parses one site's payloads; holds the counter state for ``*_total`` deltas."""

    def __init__(
        self,
        site: str,
        components: Collection[str],
        max_payload_bytes: int,
        topic_prefix: str = "cc",
        max_clock_skew: float = 300.0,
    ) -> None:
        self.site = site
        self.components = frozenset(components)
        self.max_payload_bytes = max_payload_bytes
        self.topic_prefix = topic_prefix
        self.max_clock_skew = max_clock_skew
        # (component, counter field) -> (ts, last value)
        self._counters: dict[tuple[str, str], tuple[float, float]] = {}

    def parse_metrics(
        self, component: str, payload: bytes | bytearray | str, received_at: float
    ) -> list[Measurement]:
        """The measurements in one ``…/metrics`` message (a Telegraf batch may hold many)."""
        if len(payload) > self.max_payload_bytes:
            raise PayloadError("too_large", f"{len(payload)} bytes, over mqtt.max_payload_bytes")
        document = load_json(payload)
        if not isinstance(document, dict):
            raise PayloadError("schema", "the payload must be a JSON object")
        if "fields" in document:
            return [self._telegraf(component, document, received_at)]
        metrics = document.get("metrics")
        if isinstance(metrics, list) and "ts" not in document:
            batch = [m for m in metrics if isinstance(m, dict) and "fields" in m]
            if len(batch) != len(metrics) or not batch:
                raise PayloadError("schema", "a Telegraf batch must hold metric objects")
            # Each item may move a counter; one bad item rejects the batch, and a rejected
            # message must move nothing: restore the counters the good items moved.
            saved = dict(self._counters)
            try:
                return [self._telegraf(component, item, received_at) for item in batch]
            except PayloadError:
                self._counters = saved
                raise
        return [self._native(component, document, received_at)]

    def parse_status(self, component: str, payload: bytes | str, received_at: float) -> Measurement:
        """``…/status`` carries ``online`` or ``offline`` (retained, also the last will)."""
        if len(payload) > self.max_payload_bytes:
            raise PayloadError("too_large", f"{len(payload)} bytes, over mqtt.max_payload_bytes")
        self._check_component(component)
        try:
            text = payload.decode() if isinstance(payload, bytes | bytearray) else payload
        except UnicodeDecodeError:
            raise PayloadError("schema", "status is not UTF-8 text") from None
        word = text.strip().strip('"').lower()
        if word not in ("online", "offline"):
            raise PayloadError("schema", f"status must be online or offline, got {word[:20]!r}")
        return Measurement(
            site=self.site,
            component=component,
            ts=received_at,
            received_at=received_at,
            up=word == "online",
        )

    def _check_component(self, component: str) -> None:
        if component not in self.components:
            raise PayloadError(
                "unknown_component",
                f"component {component[:40]!r} is not configured; add it under components:",
            )

    def _telegraf(
        self, component: str, document: dict[str, object], received_at: float
    ) -> Measurement:
        fields, tags = document.get("fields"), document.get("tags", {})
        if not isinstance(fields, dict) or not isinstance(tags, dict):
            raise PayloadError("schema", "Telegraf fields and tags must be objects")
        site = tags.get("site", self.site)
        if site != self.site:
            raise PayloadError("schema", f"tag site={str(site)[:40]!r} is not this site")
        tag_component = tags.get("component", component)
        if not isinstance(tag_component, str):
            raise PayloadError("schema", "tag component must be text")
        flat = dict(fields)
        if "timestamp" in document:
            flat["ts"] = document["timestamp"]
        return self._native(tag_component, flat, received_at)

    def _native(
        self, component: str, document: dict[str, object], received_at: float
    ) -> Measurement:
        # This runs for every message: plain non-negative ints (what publishers send)
        # take a fast path, anything else goes through the checks that explain it.
        if component not in self.components:
            self._check_component(component)
        raw_ts = document.get("ts")
        if raw_ts is None:
            ts = received_at
        elif type(raw_ts) is float and 0 <= raw_ts < FASTEST_EPOCH_SECONDS:
            ts = raw_ts
        else:
            ts = parse_timestamp(raw_ts)
        if ts - received_at > self.max_clock_skew:
            raise PayloadError(
                "clock_skew",
                f"ts is {ts - received_at:.0f} s ahead of the receive time "
                f"(mqtt.max_clock_skew {self.max_clock_skew:g} s); check the publisher's clock",
            )
        get = document.get
        values: list[Any] = []
        present = False
        for name in COUNT_FIELDS:
            value = get(name)
            if value is not None:
                if type(value) is not int or not 0 <= value <= MAX_COUNT:
                    value = _count(name, value)
                present = True
            values.append(value)
        raw_up = get("up")
        up = None
        if raw_up is not None:
            up = _up(raw_up)
            present = True
        counters: list[tuple[str, float]] = []
        if "calls_offered_total" in document or "calls_rejected_total" in document:
            for counter_name in COUNTER_FIELDS:
                value = get(counter_name)
                if value is not None:
                    counters.append((counter_name, _count(counter_name, value)))
                    present = True
        if not present:
            raise PayloadError("schema", "no measure in the payload (seats, agents_*, calls_*, up)")
        seats, logged_in, expected, unable_to_login, unable_to_take_calls, offered, rejected = (
            values
        )
        measurement = Measurement(
            self.site,
            component,
            ts,
            received_at,
            seats,
            logged_in,
            expected,
            unable_to_login,
            unable_to_take_calls,
            offered,
            rejected,
            up,
        )
        if counters:
            self._apply_counters(measurement, counters)  # checks consistency, then stores
        else:
            _check_consistency(measurement)
        return measurement

    def _apply_counters(self, measurement: Measurement, counters: list[tuple[str, float]]) -> None:
        # Validate every counter before storing any, so a rejected message moves nothing.
        deltas: list[tuple[str, float]] = []
        updates: list[tuple[tuple[str, str], float]] = []
        for counter_name, value in counters:
            key = (measurement.component, counter_name)
            previous = self._counters.get(key)
            if previous is not None and measurement.ts < previous[0]:
                continue  # older than what we have: a redelivery or reordering
            updates.append((key, value))
            if previous is None:
                continue  # the first sample only sets the baseline
            delta = value - previous[1] if value >= previous[1] else value  # reset
            deltas.append((COUNTER_FIELDS[counter_name], delta))
        for field_name, delta in deltas:
            if getattr(measurement, field_name) is None:
                setattr(measurement, field_name, delta)
        _check_consistency(measurement)
        for key, value in updates:
            self._counters[key] = (measurement.ts, value)

    def forget_counters(self) -> None:
        self._counters.clear()


def _check_consistency(m: Measurement) -> None:
    offered, rejected = m.calls_offered, m.calls_rejected
    if offered is not None and rejected is not None and rejected > offered:
        raise PayloadError(
            "inconsistent", f"calls_rejected ({rejected:g}) > calls_offered ({offered:g})"
        )
    seats = m.seats
    if seats is None:
        return
    if seats == 0:
        raise PayloadError("inconsistent", "seats is 0")
    for name, value in (
        ("agents_logged_in", m.agents_logged_in),
        ("agents_expected", m.agents_expected),
        ("agents_unable_to_login", m.agents_unable_to_login),
        ("agents_unable_to_take_calls", m.agents_unable_to_take_calls),
    ):
        if value is not None and value > seats:
            raise PayloadError("inconsistent", f"{name} ({value:g}) > seats ({seats:g})")
