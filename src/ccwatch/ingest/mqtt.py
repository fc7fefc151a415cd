"""The MQTT source: aiomqtt's reconnect loop feeding the pipeline.

``MqttSource.run()`` connects with a fixed client id and (by default) a persistent
session, subscribes ``<prefix>/<site>/+/metrics`` and ``…/+/status`` on every connect,
and hands each message to the pipeline. On ``MqttError`` it backs off exponentially
(1 s, 2 s, 4 s … capped at ``mqtt.reconnect_max``, with jitter so a fleet does not
reconnect in step) and connects again.

Flow control, decided and measured (bench/ingest.py): messages are acknowledged
*after* the pipeline has taken them (paho's manual ack), not when they arrive. So the
broker never has more than its ``max_inflight_messages`` of ours unacknowledged, the
queue between the socket and the pipeline (aiomqtt's incoming queue, bounded by
``mqtt.queue_size``) cannot fill up, and a QoS 1 message that ccwatch did not process
(a crash, a kill) is redelivered instead of lost. A second hand-off queue would only
add a copy and a task switch per message; backpressure reaches the broker instead. If
the bound is ever hit anyway (a broker with unlimited in-flight messages), aiomqtt
drops the message; that is counted as ``ccwatch_ingest_dropped_total{reason=
"queue_full"}`` and the broker redelivers it on the next connect, as it was never
acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.config import Config
from ccwatch.configbase import read_secret
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness

logger = logging.getLogger(__name__)

INITIAL_BACKOFF = 1.0
READINESS_NAME = "mqtt"

MessageHandler = Callable[[str, bytes, float], Awaitable[None]]


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


class _DropCounter(logging.Filter):
    """aiomqtt reports a full incoming queue only as a log line; count it as a metric."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue is full" in record.getMessage():
            self.counter.labels(reason="queue_full").inc()
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
        if not any(isinstance(f, _DropCounter) for f in self._aiomqtt_logger.filters):
            self._aiomqtt_logger.addFilter(_DropCounter(self.metrics.dropped))
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
            handler, clock, messages = self.handler, self.clock, client.messages
            depth = self.metrics.queue_depth
            processed = 0
            async for message in messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                try:
                    await handler(message.topic.value, bytes(payload), clock())
                except Exception:
                    # A bug must not stop ingestion or make the broker redeliver the same
                    # message forever: log it and acknowledge it like any other.
                    logger.exception(
                        "processing a message on %s failed (a ccwatch bug)", message.topic
                    )
                if message.qos:
                    paho.ack(message.mid, message.qos)
                processed += 1
                if processed & 0xFF == 0:
                    depth.set(len(messages))

    def _disconnected(self, detail: str) -> None:
        self.metrics.connected.set(0)
        if self.readiness is not None:
            self.readiness.set(READINESS_NAME, False, detail)
