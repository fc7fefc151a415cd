"""The one place ccwatch talks MQTT: clients, TLS, topics, and reading what publishers send.

Used by the ingest source (``ingest/mqtt.py``), the ``mqtt_freshness`` check and
``ccwatch simulate``; each hands over the ``mqtt:`` sub-model (``MqttConfig``) and the
site, never the whole configuration.

- ``new_client``: an ``aiomqtt.Client`` with host, port, client id, session, keepalive,
  credentials (``password_env`` / ``password_file``) and TLS from ``MqttConfig``.
- ``subscriptions`` / ``subscribe``: ``<prefix>/<site>/+/metrics`` and ``…/+/status``.
- ``DropCountingQueue`` / ``drop_counting_queue``: aiomqtt's bounded incoming queue,
  handed to aiomqtt through its public ``queue_type=``; a message that finds it full is
  reported to a callback (counted, then redelivered) instead of only being logged.
- ``enable_manual_ack``: the one use of aiomqtt internals (see its docstring).
- ``load_json`` and ``parse_timestamp``: the one reading of payload JSON (depth-capped)
  and of timestamps, shared by the ingest parser and ``mqtt_freshness``.

Timestamps (``parse_timestamp``): RFC 3339 text with ``Z`` or a numeric offset
(``2026-11-23T10:00:00Z``, ``2026-11-23T15:30:00.250+05:30``), or an epoch number whose
magnitude gives the unit: seconds up to 1e11, then milliseconds up to 1e14, microseconds
up to 1e17, nanoseconds above. A time without an offset is **refused**, not taken as UTC:
a publisher writing local time would otherwise be read hours off, which opens or hides
incidents silently; a refusal is counted and logged, so it gets fixed. Times outside
year 1..9999 are refused too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiomqtt

from ccwatch.configbase import read_secret
from ccwatch.errors import PayloadError

if TYPE_CHECKING:  # config.py imports the check registry, which imports this module
    from ccwatch.settings import MqttConfig

# --- clients -------------------------------------------------------------------------------


def default_client_id(mqtt: MqttConfig, site: str) -> str:
    """The fixed id of ccwatch's persistent session: ``mqtt.client_id`` or ``ccwatch-<site>``."""
    return mqtt.client_id or f"ccwatch-{site}"


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context of ``mqtt.tls``, or None for plain TCP."""
    tls = mqtt.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        context.check_hostname = False
    return context


def new_client(
    mqtt: MqttConfig,
    identifier: str,
    *,
    clean_session: bool | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    queue_size: int | None = None,
    timeout: float | None = None,
    logger: logging.Logger | None = None,
) -> aiomqtt.Client:
    """A client for the broker of ``mqtt``; ``clean_session`` defaults to the config's.

    Must be called on the event loop (aiomqtt binds the running loop). The password is
    read here, from ``mqtt.password_env`` or ``mqtt.password_file``, so a rotated secret is
    picked up at the next connect.
    """
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=identifier,
        clean_session=mqtt.clean_session if clean_session is None else clean_session,
        username=mqtt.username,
        password=read_secret(mqtt.password_env, mqtt.password_file),
        keepalive=int(mqtt.keepalive.total_seconds()) or 60,
        tls_context=tls_context(mqtt),
        queue_type=queue_type,
        max_queued_incoming_messages=queue_size,
        timeout=timeout,
        logger=logger,
    )


def subscriptions(mqtt: MqttConfig, site: str) -> list[str]:
    """The topics ccwatch reads: every component's metrics and status of this site."""
    base = f"{mqtt.topic_prefix}/{site}/+"
    return [f"{base}/metrics", f"{base}/status"]


async def subscribe(client: aiomqtt.Client, mqtt: MqttConfig, site: str, qos: int) -> list[str]:
    """Subscribe ``subscriptions(mqtt, site)`` in one request; returns the topics."""
    topics = subscriptions(mqtt, site)
    await client.subscribe([(topic, qos) for topic in topics])
    return topics


_queue_put_nowait = asyncio.Queue.put_nowait


class DropCountingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's bounded incoming queue, given to it as ``queue_type=``.

    aiomqtt puts each received message with ``put_nowait`` and, when that raises
    ``QueueFull``, only logs a line. Here a full queue drops the message and calls
    ``on_drop`` (the source counts it and reconnects so the broker redelivers it: it was
    never acknowledged).
    """

    def __init__(self, maxsize: int = 0, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__(maxsize)
        self.on_drop = on_drop
        self.dropped = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            _queue_put_nowait(self, item)  # called per message: no super() lookup
        except asyncio.QueueFull:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()


def drop_counting_queue(
    on_drop: Callable[[], None], on_create: Callable[[DropCountingQueue], None]
) -> type[DropCountingQueue]:
    """A ``queue_type`` for ``new_client``: aiomqtt builds its queue as
    ``queue_type(maxsize=…)``; this class wires ``on_drop`` into it and hands the new queue
    to ``on_create``, so the caller can drain it without reaching into the client."""

    class _Queue(DropCountingQueue):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize, on_drop)
            on_create(self)

    return _Queue


Acknowledge = Callable[[int, int], Any]
"""``ack(mid, qos)``: paho's acknowledgement of one received message."""


def enable_manual_ack(client: aiomqtt.Client) -> Acknowledge:
    """Switch ``client`` to manual acknowledgement; returns the function acking a message.

    ccwatch acknowledges a QoS 1/2 message only after processing it, so a message it did
    not process (a crash, a dropped message) is redelivered from the persistent session.
    aiomqtt 2.5.x (pinned ``>=2.5,<2.6`` in pyproject.toml) has no public API for that
    (aiomqtt issue #345, PR #346); paho's ``manual_ack_set``/``ack`` are public, but the
    paho client is only reachable as aiomqtt's private ``Client._client``. This function
    is the only place ccwatch touches aiomqtt internals; tests/test_aiomqtt_internals.py
    checks, against a real broker, that an unacknowledged message comes back and an
    acknowledged one does not, so an upgrade that breaks it fails there. Call it before
    connecting.
    """
    paho_client = client._client
    paho_client.manual_ack_set(True)
    ack: Acknowledge = paho_client.ack  # called for every message: no wrapper around it
    return ack


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """A message's payload as bytes (aiomqtt types it loosely)."""
    payload = message.payload
    if type(payload) is bytes:
        return payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return str(payload).encode()


# --- payload JSON --------------------------------------------------------------------------

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects accepted; ccwatch's payloads need 3 (a Telegraf batch).
Deeper documents are refused before ``json.loads`` sees them (it recurses per level)."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(payload: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``payload`` nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count). Cheap: documents with at most ``limit`` opening brackets are
    not scanned at all."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", payload)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


_decode_json = json.JSONDecoder().decode  # json.loads minus its per-call type sniffing


def load_json(payload: bytes | bytearray | str) -> Any:
    """The JSON document of a payload; ``PayloadError`` ``not_json`` or ``schema`` (too deep)."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if json_depth_exceeds(raw):
        raise PayloadError("schema", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        # JSON text is UTF-8 (RFC 8259); a leading byte-order mark is tolerated (checked
        # here: the utf-8-sig codec is a Python-level codec, several times slower).
        if raw[:3] == b"\xef\xbb\xbf":
            raw = raw[3:]
        return _decode_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("not_json", f"{exc}"[:120]) from None
    except RecursionError:  # cannot happen below the depth cap; kept as a last guard
        raise PayloadError("schema", "JSON nested too deeply") from None


# --- timestamps ----------------------------------------------------------------------------

# (magnitude above which, factor to seconds): Telegraf writes seconds by default
# (json_timestamp_units); ms, µs and ns are told apart by size.
EPOCH_SCALES = ((1e17, 1e-9), (1e14, 1e-6), (1e11, 1e-3))
FASTEST_EPOCH_SECONDS = EPOCH_SCALES[-1][0]
"""Epoch numbers below this are seconds as they are (the ingest hot path skips parsing)."""
MAX_EPOCH_SECONDS = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
_MAX_EPOCH_NUMBER = MAX_EPOCH_SECONDS * 1e9

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_timestamp(value: object) -> float:
    """RFC 3339 text (offset required) or an epoch number (s/ms/µs/ns) → epoch seconds.

    Raises ``PayloadError``: ``schema`` for anything else (a naive time, a boolean, a number
    beyond year 9999, such as ``10**400``), ``nan`` for NaN/infinity, ``negative`` for a
    time before 1970 given as a number.
    """
    if isinstance(value, bool):
        raise PayloadError("schema", "ts must be RFC 3339 text or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError("nan", "ts is not a finite number")
        if value < 0:
            raise PayloadError("negative", "ts is negative")
        if value > _MAX_EPOCH_NUMBER:  # compared before float(): 10**400 cannot overflow
            raise PayloadError("schema", "ts is out of range (after year 9999 in any unit)")
        seconds = float(value)
        for above, scale in EPOCH_SCALES:
            if seconds >= above:
                return seconds * scale
        return seconds
    if isinstance(value, str):
        return _parse_rfc3339(value)
    raise PayloadError("schema", "ts must be RFC 3339 text or epoch seconds")


def _parse_rfc3339(value: str) -> float:
    match = _RFC3339.fullmatch(value.strip()) if len(value) <= 64 else None
    if match is None:
        if len(value) <= 64 and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}[Tt ][\d:.]+\s*", value):
            raise PayloadError("schema", f"ts {value[:40]!r} has no time zone (add Z)")
        raise PayloadError("schema", f"ts {value[:40]!r} is not RFC 3339")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if sign == "-":
                offset = -offset
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second (:60) is read as :59
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=timezone(offset),
        )
        return parsed.timestamp()
    except (ValueError, OverflowError):
        raise PayloadError("schema", f"ts {value[:40]!r} is not a valid time") from None
