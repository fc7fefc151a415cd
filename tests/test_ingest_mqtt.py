"""The MQTT source and ``ccwatch.mqtt``: backoff, topics, TLS, and the bounded queue
against a real broker (a full queue counts a drop and the broker redelivers it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from ccwatch.config import Config, MqttConfig
from ccwatch.ingest.mqtt import MqttSource, backoff_delays
from ccwatch.mqtt import default_client_id, subscriptions, tls_context
from tests.conftest import Mosquitto


@given(st.floats(min_value=0.5, max_value=300), st.integers(min_value=1, max_value=40))
def test_backoff_doubles_with_jitter_and_never_exceeds_the_cap(cap: float, attempts: int) -> None:
    next_delay = backoff_delays(cap)
    delays = [next_delay() for _ in range(attempts)]
    assert all(0 < delay <= cap for delay in delays)
    # Each delay lies in the upper half of its step, so the sequence keeps growing
    # until it reaches the cap, whatever the jitter.
    steps = [min(cap, 2**i) for i in range(attempts)]
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps, strict=True))


def test_subscriptions_cover_metrics_and_status_of_this_site_only() -> None:
    mqtt = MqttConfig.model_validate({"topic_prefix": "contact/center"})
    assert subscriptions(mqtt, "blr1") == [
        "contact/center/blr1/+/metrics",
        "contact/center/blr1/+/status",
    ]


def test_client_id_is_the_configs_fixed_id_or_derived_from_the_site() -> None:
    for data in ({"site": "blr1"}, {"site": "blr1", "mqtt": {"client_id": "cc-fixed"}}):
        config = Config.model_validate(data)
        assert default_client_id(config.mqtt, config.site) == config.mqtt_client_id


def test_tls_context_only_when_configured(tmp_path: Path) -> None:
    assert tls_context(MqttConfig()) is None
    context = tls_context(MqttConfig.model_validate({"tls": {"insecure": True}}))
    assert context is not None and context.check_hostname is False


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10)
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


async def poll(predicate: object, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_a_full_queue_holds_the_reader_and_loses_nothing(mosquitto: Mosquitto) -> None:
    """Once subscribed, queue_size 2 and a handler stuck on the first message: two more
    fit in the queue, then the reader holds (stops reading the socket) instead of
    dropping; once the handler moves on, the rest arrives on the same connection."""
    mqtt = MqttConfig.model_validate(
        {"port": mosquitto.port, "client_id": "ccwatch-test-hold", "queue_size": 2}
    )
    registry = CollectorRegistry()
    total = 6

    async def scenario() -> tuple[list[int], MqttSource]:
        release = asyncio.Event()
        seen: list[int] = []

        async def handler(topic: str, payload: bytes, received_at: float) -> None:
            seen.append(json.loads(payload)["n"])
            await release.wait()

        source = MqttSource(mqtt, "blr1", handler, registry)
        task = asyncio.create_task(source.run())
        try:
            await poll(lambda: source.connections == 1)
            body = [("cc/blr1/acd/metrics", json.dumps({"n": n}).encode()) for n in range(total)]
            await asyncio.to_thread(publish, mosquitto, body)
            # 1 in the handler, 2 in the queue: the reader holds the rest.
            await poll(lambda: source.reader is not None and source.reader.holds >= 1)
            assert source._queue is not None and source._queue.full()
            release.set()
            await poll(lambda: len(seen) == total)
            return seen, source
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    seen, source = asyncio.run(scenario())
    assert seen == list(range(total))
    assert registry.get_sample_value("ccwatch_ingest_dropped_total", {"reason": "queue_full"}) == 0
    assert source.connections == 1


def test_a_full_queue_before_the_subscription_counts_the_drop_and_the_broker_redelivers_it(
    mosquitto: Mosquitto,
) -> None:
    """A persistent session with a backlog of 6 reconnects with queue_size 2: Mosquitto
    sends the backlog right after the CONNACK, before the SUBACK, while the consumer does
    not run yet, so the reader must not hold (it would wait for ever): 4 are dropped and
    counted, the source reconnects, and the broker redelivers them (never acknowledged)
    until all arrived.

    Failed before the source counted drops from the connect on: the redelivered backlog
    overflowed the queue again while subscribing, and that drop was forgotten (lost)."""
    mqtt = MqttConfig.model_validate(
        {"port": mosquitto.port, "client_id": "ccwatch-test-queue", "queue_size": 2}
    )
    registry = CollectorRegistry()
    total = 6

    def dropped() -> float:
        return registry.get_sample_value("ccwatch_ingest_dropped_total", {"reason": "queue_full"})

    async def run_until(source: MqttSource, predicate: object) -> None:
        task = asyncio.create_task(source.run())
        try:
            await poll(predicate)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def scenario() -> tuple[set[int], MqttSource]:
        seen: set[int] = set()

        def handler(topic: str, payload: bytes, received_at: float) -> None:
            seen.add(json.loads(payload)["n"])

        first = MqttSource(mqtt, "blr1", handler, registry)  # creates the session
        await run_until(first, lambda: first.connections == 1)
        body = [("cc/blr1/acd/metrics", json.dumps({"n": n}).encode()) for n in range(total)]
        await asyncio.to_thread(publish, mosquitto, body)  # queued for the session
        source = MqttSource(mqtt, "blr1", handler, registry)
        await run_until(source, lambda: len(seen) == total)
        return seen, source

    seen, source = asyncio.run(scenario())
    assert seen == set(range(total))
    assert dropped() >= total - 2
    assert source.connections >= 2, "a drop must reconnect so the broker redelivers"
