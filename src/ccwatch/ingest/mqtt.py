"""The MQTT source: aiomqtt's reconnect loop feeding the pipeline.

``MqttSource.run()`` connects with a fixed client id and (by default) a persistent
session, subscribes ``<prefix>/<site>/+/metrics`` and ``…/+/status`` on every connect,
and hands each message to the pipeline. On ``MqttError`` it backs off exponentially
(1 s, 2 s, 4 s … capped at ``mqtt.reconnect_max``, with jitter so a fleet does not
reconnect in step) and connects again.

Flow control, decided and measured (bench/ingest.py):

- Messages are acknowledged *after* the pipeline has taken them (paho's manual ack),
  so a QoS 1 message ccwatch did not process (a crash, a kill -9) is redelivered by the
  broker from the persistent session instead of being lost. The acknowledgements of a
  batch go out together (``ccwatch.mqtt.AckBatch``): once the messages the consumer
  found queued are processed, and before the pipeline waits on I/O.
- Reading: ``ccwatch.mqtt.PacketReader`` replaces aiomqtt's socket reader, which handed
  paho one packet per readable event (paho's ``loop_read`` ignores ``max_packets``) at
  three or four ``recv`` calls each; it reads up to 64 KiB per event and puts every
  message in it on the queue (bench/ingest.py: about 250 per event instead of 1).
- There is one bounded queue: aiomqtt's incoming queue (``mqtt.queue_size``), ccwatch's
  ``DropCountingQueue`` (aiomqtt's public ``queue_type=``). The broker's in-flight limit
  cannot be relied on to bound it: the Mosquitto 2.0.11 measured here sent over 13,000
  unacknowledged messages at once when a session with a backlog reconnected, whatever
  ``max_inflight_messages`` said. Each time the consumer wakes it takes every message
  already queued (aiomqtt's iterator costs a task and two loop turns per wake-up).
- Once subscribed, a full queue holds the reader (``PacketReader.hold_when_full``): it
  stops reading the socket, so TCP flow control leaves the backlog with the broker, and
  goes on when the consumer has emptied half the queue. Nothing is dropped then, however
  long the pipeline waits on the store.
- Before the subscription is confirmed the consumer does not run (it waits for the
  SUBACK, which the broker may send behind a backlog larger than the queue), so holding
  could wait for ever: a message that finds the queue full then is dropped and counted as
  ``ccwatch_ingest_dropped_total{reason="queue_full"}``; because the dropped message was
  never acknowledged the source reconnects at once, which makes the broker redeliver it.

Client set-up, TLS, topics, the reader and the batched acknowledgement live in
``ccwatch.mqtt``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.metrics import shared_metrics
from ccwatch.mqtt import (
    AckBatch,
    DropCountingQueue,
    PacketReader,
    default_client_id,
    drop_counting_queue,
    install_packet_reader,
    new_client,
    payload_bytes,
    subscribe,
)
from ccwatch.readiness import Readiness
from ccwatch.settings import MqttConfig

logger = logging.getLogger(__name__)

INITIAL_BACKOFF = 1.0
READINESS_NAME = "mqtt"

MessageHandler = Callable[[str, bytes, float], Awaitable[None] | None]
"""``(topic, payload, received_at)``; returns an awaitable only when there is I/O to wait
for (an incident change to write), so the common message costs no coroutine."""


class MqttMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(
            "ccwatch_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
        )
        self.reconnects = Counter(
            "ccwatch_mqtt_reconnects_total",
            "Connection attempts after a failed or lost connection",
            registry=registry,
        )
        self.dropped = Counter(
            "ccwatch_ingest_dropped_total",
            "Messages dropped before the pipeline, by reason (redelivered: never acknowledged)",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "ccwatch_ingest_queue_depth",
            "Messages received and waiting for the pipeline",
            registry=registry,
        )
        self.dropped.labels(reason="queue_full")


class _Redeliver(Exception):
    """Leave the session so the broker redelivers the messages the full queue dropped."""


def backoff_delays(cap: float, initial: float = INITIAL_BACKOFF) -> Callable[[], float]:
    """Successive reconnect delays: doubling up to ``cap``, each with "equal jitter"
    (between half and all of the step), so many instances spread out after an outage."""
    step = initial

    def next_delay() -> float:
        nonlocal step
        delay = min(step, cap)
        step = min(step * 2, cap)
        return delay / 2 + random.uniform(0, delay / 2)

    return next_delay


class MqttSource:
    """See the module docstring. ``run()`` runs until cancelled.

    ``mqtt`` is the ``mqtt:`` config, ``site`` selects the topics; the client id is
    ``client_id`` or else ``mqtt.client_id`` or ``ccwatch-<site>``.
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        site: str,
        handler: MessageHandler,
        registry: CollectorRegistry,
        readiness: Readiness | None = None,
        clock: Callable[[], float] = time.time,
        client_id: str | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.site = site
        self.client_id = client_id or default_client_id(mqtt, site)
        self.handler = handler
        self.readiness = readiness
        self.clock = clock
        self.metrics = shared_metrics(MqttMetrics, registry)
        self._aiomqtt_logger = logging.getLogger("ccwatch.ingest.aiomqtt")
        self._queue_type = drop_counting_queue(self._dropped, self._queue_created)
        self._queue: DropCountingQueue | None = None
        self._drops_in_session = 0
        self.connections = 0  # successful connects, for tests and the status page
        self.subscribed = False  # connected and subscribed now (the fleet's heartbeat asks)
        self.problem = "not connected yet"  # why not, when not
        self.reader: PacketReader | None = None  # the current session's, for tests and benches

    def _client(self) -> tuple[aiomqtt.Client, AckBatch, DropCountingQueue, PacketReader]:
        self._queue = None
        client = new_client(
            self.mqtt,
            self.client_id,
            queue_type=self._queue_type,
            queue_size=self.mqtt.queue_size,
            logger=self._aiomqtt_logger,
        )
        if self._queue is None:  # an aiomqtt that ignores queue_type= (pinned: 2.5.x)
            raise RuntimeError("aiomqtt did not build its incoming queue from queue_type")
        # Every packet read per wake-up; acknowledged after processing, in batches (see
        # the module docstring).
        self.reader = install_packet_reader(client, self._queue)
        return client, AckBatch(client), self._queue, self.reader

    async def run(self) -> None:
        mqtt = self.mqtt
        where = f"{mqtt.host}:{mqtt.port}"
        next_delay = backoff_delays(mqtt.reconnect_max.total_seconds())
        if self.readiness is not None:
            self.readiness.expect(READINESS_NAME, f"connecting to {where}")
        try:
            while True:
                connections_before = self.connections
                try:
                    await self._session(where)
                    problem = "the broker closed the connection"
                except _Redeliver as dropped:
                    logger.warning(
                        "MQTT: %s message(s) dropped on a full queue (mqtt.queue_size); "
                        "reconnecting so the broker redelivers them",
                        dropped,
                    )
                    self._disconnected("reconnecting for redelivery")
                    continue
                except aiomqtt.MqttError as exc:
                    problem = str(exc) or type(exc).__name__
                self._disconnected(problem)
                if self.connections > connections_before:
                    # The connection worked for a while: start again from short delays.
                    next_delay = backoff_delays(mqtt.reconnect_max.total_seconds())
                delay = next_delay()
                self.metrics.reconnects.inc()
                logger.warning(
                    "MQTT broker %s: %s; reconnecting in %.1f s (is the broker running and "
                    "mqtt.host/port right?)",
                    where,
                    problem,
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            self._disconnected("stopped")

    async def _session(self, where: str) -> None:
        qos = self.mqtt.qos
        client, ack, queue, reader = self._client()
        # Counted from before the connect: the broker redelivers the session's backlog
        # as soon as it accepts us, before the subscriptions are confirmed, and a drop
        # then must reconnect too.
        self._drops_in_session = 0
        async with client:
            topics = await subscribe(client, self.mqtt, self.site, qos)
            # From now on the consumer runs: a full queue holds the reader (the backlog
            # stays with the broker) instead of dropping (see the module docstring).
            reader.hold_when_full()
            self.connections += 1
            self.subscribed = True
            self.metrics.connected.set(1)
            if self.readiness is not None:
                self.readiness.set(READINESS_NAME, True, f"connected to {where}")
            logger.info(
                "MQTT connected to %s as %s, subscribed %s (QoS %d)",
                where,
                self.client_id,
                " ".join(topics),
                qos,
            )
            messages = client.messages
            # The bounded incoming queue (mqtt.queue_size). Waiting on it costs a task
            # and two loop turns, while the reader puts up to ~250 messages per turn;
            # so once woken we take every message already queued, then send their
            # acknowledgements together. Without that the queue grows under a burst (a
            # backlog after a restart) until it overflows (bench/ingest.py).
            depth = self.metrics.queue_depth
            async for first in messages:
                depth.set(len(messages))
                await self._process(ack, first)
                while not queue.empty():
                    await self._process(ack, queue.get_nowait())
                ack.flush()
                if self._drops_in_session:
                    raise _Redeliver(self._drops_in_session)

    async def _process(self, ack: AckBatch, message: aiomqtt.Message) -> None:
        payload = message.payload
        try:
            if type(payload) is not bytes:
                payload = payload_bytes(message)
            pending = self.handler(message.topic.value, payload, self.clock())
            if pending is not None:
                ack.flush()  # what is processed is acknowledged before waiting on I/O
                await pending
        except Exception:
            # A bug must not stop ingestion or make the broker redeliver the same message
            # forever: log it and acknowledge it like any other.
            logger.exception("processing a message on %s failed (a ccwatch bug)", message.topic)
        # Acknowledged only now that the pipeline has it (see the module docstring).
        if message.qos:
            ack(message.mid, message.qos)

    def _queue_created(self, queue: DropCountingQueue) -> None:
        self._queue = queue

    def _dropped(self) -> None:
        self.metrics.dropped.labels(reason="queue_full").inc()
        self._drops_in_session += 1

    def _disconnected(self, detail: str) -> None:
        self.subscribed = False
        self.problem = detail
        self.metrics.connected.set(0)
        if self.readiness is not None:
            self.readiness.set(READINESS_NAME, False, detail)
