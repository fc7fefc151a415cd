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
- ``enable_manual_ack``, ``AckBatch`` and ``PacketReader`` (``install_packet_reader``):
  acknowledgement after processing, in batches, and reading every packet a socket read
  holds; the only uses of aiomqtt and paho internals, each named in its docstring and
  pinned in tests/test_aiomqtt_internals.py.
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
import contextlib
import json
import logging
import math
import re
import ssl
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as paho

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
_queue_get_nowait = asyncio.Queue.get_nowait


class DropCountingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's bounded incoming queue, given to it as ``queue_type=``.

    aiomqtt puts each received message with ``put_nowait`` and, when that raises
    ``QueueFull``, only logs a line. Here a full queue drops the message and calls
    ``on_drop`` (the source counts it and reconnects so the broker redelivers it: it was
    never acknowledged).

    ``on_room``, when set, is called once (then cleared) as soon as a ``get`` leaves the
    queue at most half full: a ``PacketReader`` holding for room sets it.
    """

    def __init__(self, maxsize: int = 0, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__(maxsize)
        self.on_drop = on_drop
        self.on_room: Callable[[], None] | None = None
        self.dropped = 0
        self._half = maxsize // 2

    def get_nowait(self) -> aiomqtt.Message:  # asyncio.Queue.get() ends in get_nowait()
        item = _queue_get_nowait(self)
        if self.on_room is not None and self.qsize() <= self._half:
            on_room, self.on_room = self.on_room, None
            on_room()
        return item

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
    paho client is only reachable as aiomqtt's private ``Client._client`` (also used by
    ``AckBatch`` and ``PacketReader`` below); tests/test_aiomqtt_internals.py
    checks, against a real broker, that an unacknowledged message comes back and an
    acknowledged one does not, so an upgrade that breaks it fails there. Call it before
    connecting.
    """
    paho_client = client._client
    paho_client.manual_ack_set(True)
    ack: Acknowledge = paho_client.ack  # called for every message: no wrapper around it
    return ack


# --- reading and acknowledging in batches -------------------------------------------------
#
# Why (bench/ingest.py, issue 14): aiomqtt's socket-readable callback calls paho's
# ``loop_read()``, and paho 2.x ignores its ``max_packets`` argument (it reads
# ``len(_out_messages) + len(_in_messages)`` packets, i.e. one while nothing of ours is in
# flight), each with three or four ``recv`` calls (command byte, remaining length byte by
# byte, body). So every received message costs an event-loop turn (epoll, the ready
# queue), three or four system calls, paho's generic packet dispatch (mutexes, two log calls, the
# filtered-callback lookup) and aiomqtt's ``Message``/``Topic`` validation; every manual
# acknowledgement costs paho's packet queue, a writer registration through
# ``call_soon_threadsafe`` and one ``send`` per 4-byte PUBACK. ``PacketReader`` and
# ``AckBatch`` remove that per-message cost at its root; aiomqtt keeps the connection,
# subscriptions, keepalive, ``client.messages`` and the incoming queue.

READ_CHUNK = 64 * 1024
"""Bytes asked of the socket per ``recv`` (one TLS record is at most 16 KiB)."""
MAX_READ_PER_WAKEUP = 64 * 1024
"""Bytes read per readable event before the loop gets a turn (about 250 messages of
ccwatch's size). This paces the reader to the consumer: waking the consumer takes it two
or three loop turns, and a reader taking all the socket holds would fill the queue in
them (Mosquitto 2.0 sends a reconnecting session's whole backlog without waiting for
acknowledgements), which before ``hold_when_full`` means drops; what is left is read on
the next turn."""
_TOPIC_CACHE_SIZE = 4096
_PUBACK = 0x40  # MQTT control packet type 4 (PUBACK), flags 0


class PacketReader:
    """Reads an aiomqtt client's socket in chunks and every complete packet in them.

    Installed with ``install_packet_reader(client, queue)`` before connecting; ``queue`` is
    the client's incoming queue (the one its ``queue_type`` built). On each readable event
    it reads up to ``MAX_READ_PER_WAKEUP`` bytes, then walks the MQTT framing itself:

    - a PUBLISH of QoS 0 or 1 under MQTT 3.1/3.1.1 becomes an ``aiomqtt.Message`` put on
      ``queue`` with ``put_nowait`` (as aiomqtt's own ``_on_message`` does); its ``Topic``
      is built once per topic. When the queue is full: until ``hold_when_full()`` the
      message is dropped (counted by the ``DropCountingQueue``); after it the reader
      holds: it keeps the rest of what it read, stops reading the socket (TCP flow
      control leaves the backlog with the broker) and goes on once the consumer has
      emptied half the queue;
    - every other packet (CONNACK, SUBACK, PINGRESP, PUBACK, QoS 2, a topic that is not
      valid UTF-8 or not a valid topic, anything malformed) is handed whole to paho's
      ``loop_read()``, which reads exactly that packet from memory (its private
      ``_sock_recv`` is replaced for that) and handles it as before;
    - end of stream or a socket error is handed to paho the same way, so paho closes the
      connection and aiomqtt sees the disconnect as before.

    Private internals used (each pinned in tests/test_aiomqtt_internals.py): aiomqtt's
    ``Client._client`` (the paho client) and ``Client._disconnected`` (set on an unexpected
    failure, as aiomqtt's own reader does); aiomqtt registering its reader through
    ``call_soon_threadsafe`` inside paho's ``on_socket_open`` callback (ours, scheduled
    after it on the same file descriptor, replaces it); paho's ``_sock_recv(bufsize)``
    (its one socket read) and ``_last_bytes_received`` (keepalive bookkeeping, refreshed
    per wake-up for the packets paho does not see).
    """

    def __init__(self, client: aiomqtt.Client, queue: DropCountingQueue) -> None:
        paho_client = client._client  # private: see the class docstring
        self._aiomqtt = client
        self._paho = paho_client
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._put = queue.put_nowait
        self._hold = False
        self._held = False
        self._fast = paho_client.protocol in (paho.MQTTv31, paho.MQTTv311)
        self._parts: list[bytes] = []  # received bytes not yet a complete packet
        self._have = 0  # their length
        self._need = 0  # the length of the packet they start, once known
        self._packet = b""  # the packet paho is reading now (see _paho_recv)
        self._packet_pos = 0
        self._handing = False
        self._closing: OSError | None = None
        self._fd = -1
        self._topics: dict[bytes, aiomqtt.Topic] = {}
        self._socket_recv: Callable[[int], bytes] = paho_client._sock_recv
        self.wakeups = 0
        """Readable events handled (``packets / wakeups`` is the batch size)."""
        self.packets = 0
        """Packets handled, by this reader and by paho."""
        self.holds = 0
        """Times a full queue held the reader (after ``hold_when_full``)."""
        paho_client._sock_recv = self._paho_recv  # type: ignore[method-assign]
        aiomqtt_socket_open = paho_client.on_socket_open
        if aiomqtt_socket_open is None:
            raise RuntimeError("aiomqtt set no on_socket_open callback on its paho client")

        def on_socket_open(pc: paho.Client, userdata: Any, sock: Any) -> None:
            # Runs on aiomqtt's connect thread: aiomqtt schedules its reader and keepalive
            # task on the loop; ours is scheduled after it and replaces the reader.
            aiomqtt_socket_open(pc, userdata, sock)
            self._loop.call_soon_threadsafe(self._attach, sock.fileno())

        paho_client.on_socket_open = on_socket_open

    def hold_when_full(self) -> None:
        """From now on a full queue holds the reader instead of dropping messages.

        Call it once the consumer takes messages without waiting on this connection:
        after the subscription is confirmed. Before, holding could wait for ever: the
        consumer waits for the SUBACK, which the broker may have sent behind a backlog
        larger than the queue."""
        self._hold = True

    def _attach(self, fd: int) -> None:
        self._parts.clear()
        self._have = self._need = 0
        self._fd = fd
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._read()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        # As aiomqtt's own reader does: a failing read is a broken connection.
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
        disconnected = self._aiomqtt._disconnected  # private: see the class docstring
        if not disconnected.done():
            disconnected.set_exception(exc)

    def _hold_for_room(self) -> None:
        self._held = True
        self.holds += 1
        self._loop.remove_reader(self._fd)
        self._queue.on_room = self._room

    def _room(self) -> None:
        self._loop.call_soon(self._resume)  # not inside the consumer's get()

    def _resume(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if self._paho.socket() is None:
                return  # closed meanwhile
            parts = self._parts
            if parts:
                kept = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                self._have = 0
                if not self._dispatch(kept):
                    return  # held again, or closed
            self._loop.add_reader(self._fd, self._on_readable)
        except Exception as exc:
            self._fail(exc)

    def _read(self) -> None:
        if self._held:  # a turn scheduled for TLS-buffered bytes before the hold
            return
        self.wakeups += 1
        recv = self._socket_recv
        parts = self._parts
        budget = MAX_READ_PER_WAKEUP
        received = False
        try:
            while budget > 0:
                try:
                    data = recv(READ_CHUNK)
                except BlockingIOError:
                    return
                except OSError as exc:
                    self._hand_over_close(exc)
                    return
                if not data:
                    self._hand_over_close(None)
                    return
                received = True
                budget -= len(data)
                parts.append(data)
                self._have += len(data)
                if self._have < self._need:  # a large packet still arriving: no re-join
                    continue
                joined = data if len(parts) == 1 else b"".join(parts)
                parts.clear()
                self._have = 0
                if not self._dispatch(joined):
                    return
            # Budget spent: the selector wakes us again for what the kernel holds, but
            # not for bytes a TLS socket has already decrypted: those on the next turn.
            pending = getattr(self._paho.socket(), "pending", None)
            if pending is not None and pending() > 0:
                self._loop.call_soon(self._on_readable)
        finally:
            if received:
                self._paho._last_bytes_received = time.monotonic()  # private (keepalive)

    def _dispatch(self, data: bytes) -> bool:
        """Handle every complete packet in ``data`` and keep the rest; False when the
        reader is held for room or paho closed the connection."""
        put = self._put
        message = aiomqtt.Message
        topics = self._topics
        fast = self._fast
        queue = self._queue
        room = queue.maxsize - queue.qsize() if queue.maxsize > 0 else -1  # -1: no bound
        size = len(data)
        pos = 0
        packets = 0
        need = 0  # bytes the incomplete packet at ``pos`` needs, when known
        try:
            while size - pos >= 2:
                header = data[pos]
                length = data[pos + 1]
                start = pos + 2
                if length & 0x80:  # remaining length: 1 to 4 bytes, 7 bits each
                    length &= 0x7F
                    shift = 7
                    while True:
                        if start >= size:
                            return True
                        if shift > 21:  # a fifth length byte: malformed, paho says so
                            packets += 1
                            packet = data[pos : start + 1]
                            pos = start + 1
                            return self._hand_to_paho(packet)
                        byte = data[start]
                        start += 1
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        if not byte & 0x80:
                            break
                end = start + length
                if end > size:
                    need = end - pos
                    return True
                if room == 0 and self._hold:
                    self._hold_for_room()  # the rest waits here, the backlog at the broker
                    return False
                packets += 1
                if fast and (header & 0xF6 == 0x30 or header & 0xF6 == 0x32):
                    # PUBLISH of QoS 0 (0x30) or 1 (0x32); dup (0x08) and retain (0x01) free
                    topic_end = start + 2 + (data[start] << 8 | data[start + 1])
                    qos = header >> 1 & 3
                    body = topic_end + 2 if qos else topic_end
                    if body <= end:
                        key = data[start + 2 : topic_end]
                        topic = topics.get(key) or self._topic(key)
                        if topic is not None:
                            mid = data[topic_end] << 8 | data[topic_end + 1] if qos else 0
                            put(message(topic, data[body:end], qos, bool(header & 1), mid, None))
                            pos = end
                            if room > 0:
                                room -= 1
                            continue
                packet = data[pos:end]
                pos = end
                if not self._hand_to_paho(packet):
                    return False
                if room >= 0:  # paho may have put a message (QoS 2) too
                    room = max(queue.maxsize - queue.qsize(), 0)
            return True
        finally:
            self.packets += packets
            if pos < size:
                self._parts.append(data[pos:] if pos else data)
                self._have = size - pos
            self._need = need

    def _topic(self, key: bytes) -> aiomqtt.Topic | None:
        try:
            topic = aiomqtt.Topic(key.decode())
        except (UnicodeDecodeError, ValueError):
            return None  # paho and aiomqtt report it as they always did
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[key] = topic
        return topic

    def _hand_to_paho(self, packet: bytes) -> bool:
        """paho reads and handles ``packet`` (one whole packet); False once it closed."""
        self._packet = packet
        self._packet_pos = 0
        self._handing = True
        try:
            self._paho.loop_read()
        finally:
            self._handing = False
            self._packet = b""
        return self._paho.socket() is not None

    def _hand_over_close(self, error: OSError | None) -> None:
        """The stream ended (``error`` None) or failed: paho reads that and disconnects."""
        self._closing = error
        self._handing = True
        try:
            self._paho.loop_read()
        finally:
            self._handing = False
            self._closing = None
        if self._paho.socket() is not None:  # paho did not close it: fail like aiomqtt
            raise error or ConnectionError("the broker closed the connection")

    def _paho_recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv``: the packet handed over, else the socket as before."""
        if not self._handing:
            return self._socket_recv(bufsize)
        if self._closing is not None:
            raise self._closing
        pos = self._packet_pos
        packet = self._packet
        if pos >= len(packet):
            if not packet:
                return b""  # the end of the stream, handed over by _hand_over_close
            raise BlockingIOError  # that packet is all there is now
        chunk = packet[pos : pos + bufsize]
        self._packet_pos = pos + len(chunk)
        return chunk


def install_packet_reader(client: aiomqtt.Client, queue: DropCountingQueue) -> PacketReader:
    """Make ``client`` read with a ``PacketReader`` delivering to ``queue``, the incoming
    queue its ``queue_type`` built (a ``DropCountingQueue``: its ``put_nowait`` never
    raises). Call it on the event loop, before connecting."""
    return PacketReader(client, queue)


_puback_structs: dict[int, struct.Struct] = {}


class AckBatch:
    """Manual acknowledgement, sent in batches: ``ack(mid, qos)`` per processed message,
    ``flush()`` once the batch is processed (and before waiting on I/O).

    Switches the client to manual acknowledgement (see ``enable_manual_ack``). PUBACKs
    are collected in order and queued on paho as one write at ``flush()``: one ``send``
    and one writer registration per batch instead of per message. A message is still
    acknowledged only after it was processed; one processed but not yet flushed when the
    process dies is redelivered, like one not processed. QoS 2 goes to paho's own ``ack``.

    Private internal used: paho's ``_packet_queue(command, packet, mid, qos)`` (the queue
    every outgoing packet goes through; pinned in tests/test_aiomqtt_internals.py).
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._ack = enable_manual_ack(client)
        self._paho = client._client  # private: see enable_manual_ack
        self._mids: list[int] = []
        self.sent = 0
        """PUBACKs handed to paho."""

    def __call__(self, mid: int, qos: int) -> None:
        if qos == 1:
            self._mids.append(mid)
        elif qos == 2:
            self.flush()
            self._ack(mid, qos)

    def flush(self) -> None:
        mids = self._mids
        if not mids:
            return
        count = len(mids)
        packer = _puback_structs.get(count)
        if packer is None:
            packer = struct.Struct(f"!{count}I")
            if len(_puback_structs) < 1024:
                _puback_structs[count] = packer
        # Each PUBACK is 0x40 0x02 <mid, 2 bytes>: one big-endian 32-bit word.
        packet = packer.pack(*[0x40020000 | mid for mid in mids])
        self._mids = []
        self.sent += count
        self._paho._packet_queue(_PUBACK, packet, 0, 0)  # private: see the docstring


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
