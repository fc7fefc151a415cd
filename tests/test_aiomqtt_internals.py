"""What ccwatch relies on in aiomqtt 2.5.x and paho-mqtt 2.x beyond their documented behaviour.

- ``ccwatch.mqtt.enable_manual_ack`` and ``AckBatch`` reach paho through the private
  ``aiomqtt.Client._client`` (aiomqtt has no public manual-ack API yet: issue #345,
  PR #346), so a QoS 1 message is acknowledged only after ccwatch processed it;
  ``AckBatch`` queues its PUBACKs through paho's private ``_packet_queue``.
- ``ccwatch.mqtt.PacketReader`` replaces aiomqtt's socket reader (scheduled after it from
  paho's ``on_socket_open``), feeds paho single packets through paho's private
  ``_sock_recv``, refreshes paho's ``_last_bytes_received`` and reports failures on
  aiomqtt's private ``Client._disconnected``.
- One public parameter whose contract matters: ``queue_type=`` must build the incoming
  queue and receive every message through ``put_nowait`` (that is where drops are
  counted).

pyproject pins aiomqtt to 2.5.x. These tests check the behaviour against a real broker,
so an upgrade that moves an attribute or changes what it does fails here, naming the
cause, instead of an end-to-end test timing out or messages being lost in production.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ccwatch.config import MqttConfig
from ccwatch.mqtt import (
    MAX_READ_PER_WAKEUP,
    AckBatch,
    DropCountingQueue,
    PacketReader,
    drop_counting_queue,
    enable_manual_ack,
    install_packet_reader,
    new_client,
)
from tests.conftest import MOSQUITTO, Mosquitto, free_port, wait_for_port

TOPIC = "cc/blr1/acd/metrics"


def publish(broker: Mosquitto, payload: bytes) -> None:
    publish_all(broker, [(TOPIC, payload, 1, False)])


def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish ``(topic, payload, qos, retain)`` in order, each confirmed before the next."""
    client = paho.Client(CallbackAPIVersion.VERSION2)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10)
    for topic, payload, qos, retain in messages:
        client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)
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


# --- PacketReader and AckBatch ----------------------------------------------------------------


def reading_client(
    mqtt: MqttConfig, identifier: str
) -> tuple[aiomqtt.Client, PacketReader, AckBatch, DropCountingQueue]:
    """A client as the ingest source builds it: its queue, PacketReader and AckBatch."""
    created: list[DropCountingQueue] = []
    client = new_client(
        mqtt,
        identifier,
        queue_type=drop_counting_queue(lambda: None, created.append),
        queue_size=100_000,
    )
    return client, install_packet_reader(client, created[0]), AckBatch(client), created[0]


def test_the_pinned_paho_and_aiomqtt_have_what_the_packet_reader_reaches_for() -> None:
    async def build() -> tuple[aiomqtt.Client, PacketReader]:
        client, reader, _ack, _queue = reading_client(MqttConfig(port=1), "internals-reader")
        return client, reader

    client, _reader = asyncio.run(build())
    inner = client._client
    assert isinstance(client._disconnected, asyncio.Future), "aiomqtt.Client._disconnected moved"
    assert list(inspect.signature(paho.Client._sock_recv).parameters) == ["self", "bufsize"], (
        "paho's _sock_recv changed: PacketReader feeds paho through it"
    )
    assert list(inspect.signature(paho.Client._packet_queue).parameters)[:5] == [
        "self", "command", "packet", "mid", "qos"
    ], "paho's _packet_queue changed: AckBatch queues its PUBACKs with it"  # fmt: skip
    assert isinstance(inner._last_bytes_received, float), "paho's keepalive bookkeeping moved"
    # install_packet_reader chained aiomqtt's on_socket_open and replaced paho's reads.
    assert inner.on_socket_open is not client._on_socket_open
    assert inner._sock_recv != paho.Client._sock_recv.__get__(inner)


def test_the_packet_reader_takes_a_backlog_many_packets_per_wakeup(mosquitto: Mosquitto) -> None:
    """A backlog queued for a persistent session arrives complete and in order, read by
    PacketReader (not by aiomqtt's reader: its counters would stay at 0) with many
    packets per readable event."""
    mqtt = MqttConfig(port=mosquitto.port, client_id="ccwatch-reader", clean_session=False)
    count = 2000
    payloads = [b'{"n": %d, "pad": "%s"}' % (n, b"x" * 200) for n in range(count)]

    async def scenario() -> tuple[list[bytes], PacketReader]:
        client, _reader, _ack, _queue = reading_client(mqtt, "ccwatch-reader")
        async with client:  # create the session and its subscription, then leave
            await client.subscribe(TOPIC, qos=1)
        await asyncio.to_thread(publish_all, mosquitto, [(TOPIC, p, 1, False) for p in payloads])
        client, reader, ack, queue = reading_client(mqtt, "ccwatch-reader")
        received: list[bytes] = []
        async with client:
            await client.subscribe(TOPIC, qos=1)
            async with asyncio.timeout(20):
                async for message in client.messages:
                    for one in (message, *(queue.get_nowait() for _ in range(queue.qsize()))):
                        assert isinstance(one.payload, bytes) and one.qos == 1
                        received.append(one.payload)
                        ack(one.mid, one.qos)
                    ack.flush()
                    if len(received) >= count:
                        break
        return received, reader

    received, reader = asyncio.run(scenario())
    assert received == payloads
    assert reader.packets >= count + 2  # CONNACK and SUBACK came through it too
    assert reader.packets > 2 * reader.wakeups, (reader.packets, reader.wakeups)


def test_the_packet_reader_delivers_every_qos_retained_and_split_packets(
    mosquitto: Mosquitto,
) -> None:
    """QoS 0 and 1 take the reader's own path, QoS 2 paho's; a retained message keeps its
    flag; a payload larger than one read arrives whole, between small ones."""
    mqtt = MqttConfig(port=mosquitto.port)
    big = bytes(range(256)) * ((3 * MAX_READ_PER_WAKEUP) // 256 + 7)
    retained = ("cc/blr1/ivr/metrics", b"retained", 1, True)
    live = [
        (TOPIC, b"qos0", 0, False),
        (TOPIC, b"qos1", 1, False),
        (TOPIC, big, 1, False),
        (TOPIC, b"after-big", 1, False),
        (TOPIC, b"qos2", 2, False),
        ("cc/blr1/dialer/status", b"", 1, False),
    ]

    async def scenario() -> list[tuple[str, bytes, int, bool]]:
        await asyncio.to_thread(publish_all, mosquitto, [retained])
        client, reader, ack, _queue = reading_client(mqtt, "ccwatch-reader-kinds")
        got: list[tuple[str, bytes, int, bool]] = []
        async with client:
            await client.subscribe("cc/blr1/#", qos=2)
            publisher = asyncio.create_task(asyncio.to_thread(publish_all, mosquitto, live))
            async with asyncio.timeout(20):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    got.append((message.topic.value, message.payload, message.qos, message.retain))
                    ack(message.mid, message.qos)
                    ack.flush()
                    if len(got) == 1 + len(live):
                        break
            await publisher
        assert reader.packets > len(live)
        return got

    got = asyncio.run(scenario())
    assert got[0] == retained
    assert sorted(got[1:], key=lambda m: m[1]) == sorted(live, key=lambda m: m[1])
    assert [m[1] for m in got[1:] if m[2] < 2] == [m[1] for m in live if m[2] < 2]


def test_ack_batch_acknowledges_on_flush_only(mosquitto: Mosquitto) -> None:
    """An ``ack`` not yet flushed is not sent (the message comes back on the next
    connect); a flushed one is (it does not). Markers as in the manual-ack test above."""
    mqtt = MqttConfig(port=mosquitto.port, client_id="ccwatch-batch", clean_session=False)

    async def first_two(marker: bytes, flush: bool) -> list[bytes]:
        client, _reader, ack, _queue = reading_client(mqtt, "ccwatch-batch")
        got: list[bytes] = []
        async with client:
            await client.subscribe(TOPIC, qos=1)
            await asyncio.to_thread(publish, mosquitto, marker)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(message.payload)
                    ack(message.mid, message.qos)
                    if flush:
                        ack.flush()
                    if message.payload == marker:
                        return got
        raise AssertionError("no marker")

    async def scenario() -> list[list[bytes]]:
        return [
            await first_two(b"one", flush=False),  # acknowledged, never flushed
            await first_two(b"two", flush=True),  # "one" again, then "two"; both flushed
            await first_two(b"three", flush=True),  # nothing before "three"
        ]

    assert asyncio.run(scenario()) == [[b"one"], [b"one", b"two"], [b"three"]]


def test_the_packet_reader_reports_a_lost_connection(mosquitto: Mosquitto) -> None:
    """The broker goes away: paho sees the end of the stream through the reader and
    aiomqtt's message iterator raises MqttError, as it does with aiomqtt's own reader."""
    mqtt = MqttConfig(port=mosquitto.port)

    async def scenario() -> None:
        client, _reader, _ack, _queue = reading_client(mqtt, "ccwatch-reader-lost")
        async with client:
            await client.subscribe(TOPIC, qos=1)
            await asyncio.to_thread(mosquitto.stop)
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(10):
                    async for _message in client.messages:
                        pass

    asyncio.run(scenario())


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Mosquitto with only a TLS listener (self-signed for 127.0.0.1): (port, CA file)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "broker.pem", tmp_path / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    conf = tmp_path / "mosquitto-tls.conf"
    # "user root": started as root, Mosquitto reads the key after dropping to its own
    # user, which cannot read the test's folder; without root the line is ignored.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\ncertfile {cert}\nkeyfile {key}\n"
        "max_inflight_messages 0\nmax_queued_messages 0\nlog_dest none\nuser root\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield port, cert
    finally:
        process.terminate()
        process.wait(10)


def test_the_packet_reader_reads_tls(tls_mosquitto: tuple[int, Path]) -> None:
    """Over TLS (records of at most 16 KiB, bytes the selector cannot see once OpenSSL
    has them): a backlog with a payload larger than one read arrives whole and in order."""
    port, ca_file = tls_mosquitto
    mqtt = MqttConfig.model_validate(
        {"port": port, "client_id": "ccwatch-tls", "clean_session": False,
         "tls": {"ca_file": str(ca_file)}}
    )  # fmt: skip
    big = bytes(range(256)) * ((2 * MAX_READ_PER_WAKEUP) // 256 + 3)
    payloads = [b"%d" % n + b"." * 300 for n in range(1500)]
    payloads[700] = big

    def publish_tls() -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.tls_set(ca_certs=str(ca_file))
        connected = threading.Event()
        client.on_connect = lambda *args: connected.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert connected.wait(10)
        infos = [client.publish(TOPIC, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(20)
        client.loop_stop()
        client.disconnect()

    async def scenario() -> tuple[list[bytes], PacketReader]:
        client, _reader, _ack, _queue = reading_client(mqtt, "ccwatch-tls")
        async with client:  # the session and its subscription
            await client.subscribe(TOPIC, qos=1)
        await asyncio.to_thread(publish_tls)
        client, reader, ack, queue = reading_client(mqtt, "ccwatch-tls")
        received: list[bytes] = []
        async with client:
            await client.subscribe(TOPIC, qos=1)
            async with asyncio.timeout(30):
                async for message in client.messages:
                    for one in (message, *(queue.get_nowait() for _ in range(queue.qsize()))):
                        assert isinstance(one.payload, bytes)
                        received.append(one.payload)
                        ack(one.mid, one.qos)
                    ack.flush()
                    if len(received) >= len(payloads):
                        break
        return received, reader

    received, reader = asyncio.run(scenario())
    assert received == payloads
    assert reader.packets > 2 * reader.wakeups
