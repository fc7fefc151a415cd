"""What ccwatch relies on in aiomqtt 2.5.x beyond its documented behaviour.

One private attribute: ``ccwatch.mqtt.enable_manual_ack`` reaches paho through
``aiomqtt.Client._client`` (aiomqtt has no public manual-ack API yet: issue #345, PR #346),
so a QoS 1 message is acknowledged only after ccwatch processed it. And one public
parameter whose contract matters: ``queue_type=`` must build the incoming queue and
receive every message through ``put_nowait`` (that is where drops are counted).

pyproject pins aiomqtt to 2.5.x. These tests check the behaviour against a real broker,
so an upgrade that moves the attribute or changes what it does fails here, naming the
cause, instead of an end-to-end test timing out or messages being lost in production.
"""

from __future__ import annotations

import asyncio
import threading

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ccwatch.config import MqttConfig
from ccwatch.mqtt import DropCountingQueue, drop_counting_queue, enable_manual_ack, new_client
from tests.conftest import Mosquitto

TOPIC = "cc/blr1/acd/metrics"


def publish(broker: Mosquitto, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10)
    client.publish(TOPIC, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_the_pinned_aiomqtt_has_what_enable_manual_ack_reaches_for() -> None:
    async def build() -> aiomqtt.Client:
        return new_client(MqttConfig(port=1), "internals-probe", clean_session=False)

    client = asyncio.run(build())
    inner = getattr(client, "_client", None)
    assert isinstance(inner, paho.Client), "aiomqtt.Client._client moved: see enable_manual_ack"
    assert callable(getattr(inner, "manual_ack_set", None)) and callable(
        getattr(inner, "ack", None)
    )


def test_manual_ack_holds_a_message_until_acknowledged(mosquitto: Mosquitto) -> None:
    """Unacknowledged → redelivered on the next connect of the session; acknowledged → gone.

    A marker published after each reconnect shows what the broker had pending: a
    redelivery comes before it, nothing else does (no waiting for an absence)."""
    mqtt = MqttConfig(port=mosquitto.port, client_id="ccwatch-internals", clean_session=False)

    async def first_message(marker: bytes, acknowledge: bool) -> bytes:
        client = new_client(mqtt, "ccwatch-internals")
        ack = enable_manual_ack(client)
        async with client:
            await client.subscribe(TOPIC, qos=1)
            await asyncio.to_thread(publish, mosquitto, marker)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    if acknowledge:
                        ack(message.mid, message.qos)
                    assert isinstance(message.payload, bytes)
                    return message.payload
        raise AssertionError("no message")

    async def scenario() -> list[bytes]:
        return [
            await first_message(b"one", acknowledge=False),  # received, not acknowledged
            await first_message(b"two", acknowledge=True),  # "one" again, now acknowledged
            await first_message(b"three", acknowledge=True),  # "two" was never acknowledged
            await first_message(b"four", acknowledge=True),
        ]

    # The subscription of the first call persists in the session: "two" is queued for us
    # while we handle "one" again, so each later call sees the previous marker first.
    assert asyncio.run(scenario()) == [b"one", b"one", b"two", b"three"]


def test_queue_type_builds_the_incoming_queue_and_receives_every_message(
    mosquitto: Mosquitto,
) -> None:
    mqtt = MqttConfig(port=mosquitto.port, queue_size=1)
    created: list[DropCountingQueue] = []
    drops: list[int] = []

    async def scenario() -> int:
        client = new_client(
            mqtt,
            "ccwatch-internals-queue",
            clean_session=True,
            queue_type=drop_counting_queue(lambda: drops.append(1), created.append),
            queue_size=mqtt.queue_size,
        )
        assert len(created) == 1 and created[0].maxsize == 1, "queue_type= was not used"
        async with client:
            await client.subscribe(TOPIC, qos=1)
            for payload in (b"a", b"b", b"c"):
                await asyncio.to_thread(publish, mosquitto, payload)
            async with asyncio.timeout(10):
                while len(drops) < 2:  # nobody consumes: "a" fills the queue, b and c drop
                    await asyncio.sleep(0.02)
            return len(client.messages)

    assert asyncio.run(scenario()) == 1
    assert created[0].dropped == 2
