"""The MQTT source: aiomqtt's reconnect loop feeding the pipeline.

``MqttSource.run()`` connects with a fixed client id and (by default) a persistent
session, subscribes ``<prefix>/<site>/+/metrics`` and ``…/+/status`` on every connect,
and hands each message to the pipeline. On ``MqttError`` it backs off exponentially
(1 s, 2 s, 4 s … capped at ``mqtt.reconnect_max``, with jitter so a fleet does not
reconnect in step) and connects again.

Flow control, decided and measured (bench/ingest.py):

- Messages are acknowledged *after* the pipeline has taken them (paho's manual ack),
  so a QoS 1 message ccwatch did not process (a crash, a kill -9) is redelivered by the
  broker from the persistent session instead of being lost.
- There is one bounded queue: aiomqtt's incoming queue (``mqtt.queue_size``). A second
  hand-off queue with an awaited ``put`` would not give backpressure: paho reads the
  socket in aiomqtt's reader callback and enqueues without any await point, so the read
  cannot be held back from there. Nor can the broker's in-flight limit be relied on:
  the Mosquitto 2.0.11 measured here sent over 13,000 unacknowledged messages at once
  when a session with a backlog reconnected, whatever ``max_inflight_messages`` said.
  What keeps the queue short is the consumer: each time it wakes it takes every message
  already queued (aiomqtt's iterator costs a task and two loop turns per message while
  the socket delivers one per turn, so one-at-a-time consumption falls behind). A
  200,000-message backlog then drains with the queue near empty and nothing dropped.
- If the bound is hit anyway, aiomqtt drops the message. That is counted as
  ``ccwatch_ingest_dropped_total{reason="queue_full"}``, and because the dropped message
  was never acknowledged the source reconnects at once, which makes the broker
  redeliver it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.config import Config
from ccwatch.configbase import read_secret
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness

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
    """Leave the session so the broker redelivers the messages aiomqtt dropped."""


class _DropCounter(logging.Filter):
    """aiomqtt reports a full incoming queue only as a log line; count it as a metric."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter
        self.on_drop: Callable[[], None] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue is full" in record.getMessage():
            self.counter.labels(reason="queue_full").inc()
            if self.on_drop is not None:
                self.on_drop()
        return True


def subscriptions(config: Config) -> list[str]:
    base = f"{config.mqtt.topic_prefix}/{config.site}/+"
    return [f"{base}/metrics", f"{base}/status"]


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


def tls_context(config: Config) -> ssl.SSLContext | None:
    tls = config.mqtt.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        context.check_hostname = False
    return context


class MqttSource:
    """See the module docstring. ``run()`` runs until cancelled."""

    def __init__(
        self,
        config: Config,
        handler: MessageHandler,
        registry: CollectorRegistry,
        readiness: Readiness | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.handler = handler
        self.readiness = readiness
        self.clock = clock
        self.metrics = shared_metrics(MqttMetrics, registry)
        self._aiomqtt_logger = logging.getLogger("ccwatch.ingest.aiomqtt")
        drop_counter = next(
            (f for f in self._aiomqtt_logger.filters if isinstance(f, _DropCounter)), None
        )
        if drop_counter is None:
            drop_counter = _DropCounter(self.metrics.dropped)
            self._aiomqtt_logger.addFilter(drop_counter)
        drop_counter.on_drop = self._dropped
        self._drops_in_session = 0
        self.connections = 0  # successful connects, for tests and the status page

    def _client(self) -> aiomqtt.Client:
        mqtt = self.config.mqtt
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=self.config.mqtt_client_id,
            clean_session=mqtt.clean_session,
            username=mqtt.username,
            password=read_secret(mqtt.password_env, mqtt.password_file),
            keepalive=int(mqtt.keepalive.total_seconds()) or 60,
            tls_context=tls_context(self.config),
            max_queued_incoming_messages=mqtt.queue_size,
            logger=self._aiomqtt_logger,
        )
        # aiomqtt 2.x exposes no manual-ack switch; paho's is public API. See the module
        # docstring for why we acknowledge after processing.
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        mqtt = self.config.mqtt
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
        qos = self.config.mqtt.qos
        async with self._client() as client:
            paho = client._client
            for topic in subscriptions(self.config):
                await client.subscribe(topic, qos=qos)
            self.connections += 1
            self.metrics.connected.set(1)
            if self.readiness is not None:
                self.readiness.set(READINESS_NAME, True, f"connected to {where}")
            logger.info(
                "MQTT connected to %s as %s, subscribed %s (QoS %d)",
                where,
                self.config.mqtt_client_id,
                " ".join(subscriptions(self.config)),
                qos,
            )
            messages = client.messages
            # aiomqtt's bounded incoming queue (mqtt.queue_size). Waiting on it costs a
            # task and two loop turns per message, while the socket delivers one message
            # per turn; so once woken we take every message already queued. Without
            # that the queue grows under a burst (a backlog after a restart) until it
            # overflows; with it the queue stays near empty (bench/ingest.py).
            queue: asyncio.Queue[aiomqtt.Message] = client._queue
            depth = self.metrics.queue_depth
            self._drops_in_session = 0
            async for first in messages:
                depth.set(queue.qsize())
                await self._process(paho, first)
                while not queue.empty():
                    await self._process(paho, queue.get_nowait())
                if self._drops_in_session:
                    raise _Redeliver(self._drops_in_session)

    async def _process(self, paho: Any, message: aiomqtt.Message) -> None:
        payload = message.payload
        if type(payload) is not bytes:
            payload = payload.encode() if isinstance(payload, str) else str(payload).encode()
        try:
            pending = self.handler(message.topic.value, payload, self.clock())
            if pending is not None:
                await pending
        except Exception:
            # A bug must not stop ingestion or make the broker redeliver the same message
            # forever: log it and acknowledge it like any other.
            logger.exception("processing a message on %s failed (a ccwatch bug)", message.topic)
        if message.qos:
            # Acknowledged only now that the pipeline has it (see the module docstring).
            paho.ack(message.mid, message.qos)

    def _dropped(self) -> None:
        self._drops_in_session += 1

    def _disconnected(self, detail: str) -> None:
        self.metrics.connected.set(0)
        if self.readiness is not None:
            self.readiness.set(READINESS_NAME, False, detail)
