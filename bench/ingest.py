"""The core loop's throughput, memory and latency, each beside its baseline.

1. Drain: N QoS 1 messages (``--messages``, default 200,000) are pre-loaded into
   persistent sessions on a Mosquitto of the bench's own (free port; one publish pass,
   the broker queues a copy for each session). Then, in the same run and alternating
   round by round, each of these drains a session of its own:
   - bare paho: a paho-mqtt client in its own ``loop_forever()`` loop (the library's
     select loop), manual acknowledgement: ``ack()`` in ``on_message`` after counting the
     message, i.e. acknowledged after (empty) processing, one PUBACK per message;
   - bare aiomqtt: ``async for message in client.messages`` only counting (auto-ack, as
     aiomqtt does by default);
   - ccwatch MQTT source with a handler that only counts (the MQTT layer's own cost);
   - ccwatch pipeline: the MQTT source + pipeline (parse -> window -> classify ->
     lifecycle -> SQLite for incident changes), acknowledged after processing.
   Prints each round, each rate over all rounds, packets read per socket-readable event
   (aiomqtt: paho ``loop_read`` calls; ccwatch: its ``PacketReader``) and the ratios
   pipeline/bare paho (target >= 90 %) and pipeline/bare aiomqtt.
2. Memory: 1,000,000 messages over 1,000 components fed to the pipeline in-process
   (no broker: this measures ccwatch's own state, not socket buffers). Prints the RSS
   at 500k and 1M (target < 80 MB, flat between the two) and the in-process rate.
3. Latency: ccwatch connected to the broker with open_after 0 while another process
   publishes 1,000 msg/s of background traffic; a probe publishes a critical payload
   for a fresh component every 50 ms and times publish -> incident committed in SQLite.
   Prints p50/p99 (target p99 < 50 ms) beside the same probe with no background load.

    .venv/bin/python bench/ingest.py [--messages 200000] [--rounds 2] [--only drain]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ccwatch.compose import build_incident_service, build_pipeline, open_state
from ccwatch.config import Config
from ccwatch.incidents.model import Incident
from ccwatch.ingest.mqtt import MqttSource

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
STANDARD = ("acd", "ivr", "dialer", "voice_logger", "reports")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "log_dest none\n"
        )
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def make_config(workdir: Path, port: int, components: list[str], **classification: Any) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "bench-pipeline"},
            "state": {"path": str(workdir / f"state-{time.monotonic_ns()}.db")},
            "components": {name: {"seats": 100} for name in components},
            "classification": {"open_after": "30s", "resolve_after": "5m", **classification},
        }
    )


def payload(i: int, ts: float, unable: int = 0) -> bytes:
    """A realistic ACD-style report (about 230 bytes)."""
    return json.dumps(
        {
            "ts": round(ts, 3),
            "interval_s": 10,
            "seats": 100,
            "agents_logged_in": 98,
            "agents_expected": 98,
            "agents_unable_to_login": 0,
            "agents_unable_to_take_calls": unable,
            "calls_offered": 40 + i % 7,
            "calls_rejected": 1 if i % 500 == 0 else 0,
            "up": True,
        }
    ).encode()


def paho_client(
    port: int, client_id: str = "", clean: bool = True, inflight: int = 20
) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.max_inflight_messages_set(inflight)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("cannot connect to the bench broker")
    return client


# --- 1. drain ---------------------------------------------------------------------------


def preload(port: int, count: int, session_ids: list[str]) -> float:
    for session_id in session_ids:
        client = paho_client(port, session_id, clean=False)
        client.subscribe("cc/blr1/+/metrics", qos=1)
        time.sleep(0.3)
        client.loop_stop()
        client.disconnect()
    publisher = paho_client(port, inflight=2000)
    started = time.perf_counter()
    now = time.time()
    info = None
    for i in range(count):
        component = STANDARD[i % len(STANDARD)]
        # One ACD outage in the middle, so the lifecycle and the store do real work.
        unable = 23 if component == "acd" and count // 3 <= i < count // 2 else 0
        info = publisher.publish(f"cc/blr1/{component}/metrics", payload(i, now, unable), qos=1)
        if i % 5000 == 4999:
            info.wait_for_publish(60)
    assert info is not None
    info.wait_for_publish(120)
    elapsed = time.perf_counter() - started
    publisher.loop_stop()
    publisher.disconnect()
    return elapsed


def drain_paho(port: int, count: int, session: str) -> tuple[float, float]:
    """Bare paho: its own loop, ack in ``on_message``; (seconds, packets per loop_read)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=session, clean_session=False)
    client.manual_ack_set(True)
    received = 0
    started = finished = 0.0

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal received, started, finished
        if received == 0:
            started = time.perf_counter()
        received += 1
        client.ack(message.mid, message.qos)  # after "processing" (counting)
        if received == count:
            finished = time.perf_counter()
            client.disconnect()

    client.on_message = on_message
    client.on_connect = lambda client, *args: client.subscribe("cc/blr1/+/metrics", qos=1)
    reads = count_loop_reads(client)
    client.connect("127.0.0.1", port)
    client.loop_forever()
    return finished - started, count / max(reads(), 1)


def count_loop_reads(client: paho.Client) -> Any:
    """Count ``loop_read`` calls (a bench-only wrapper: one per socket-readable event)."""
    calls = 0
    loop_read = client.loop_read

    def counted(max_packets: int = 1) -> Any:
        nonlocal calls
        calls += 1
        return loop_read(max_packets)

    client.loop_read = counted  # type: ignore[method-assign]
    return lambda: calls


async def drain_bare(port: int, count: int, session: str) -> tuple[float, float]:
    """Bare aiomqtt; (seconds, packets per loop_read call of its socket-readable callback)."""
    received = 0
    started = 0.0
    client = aiomqtt.Client("127.0.0.1", port, identifier=session, clean_session=False)
    reads = count_loop_reads(client._client)
    async with client:
        await client.subscribe("cc/blr1/+/metrics", qos=1)
        async for _message in client.messages:
            if received == 0:
                started = time.perf_counter()
            received += 1
            if received == count:
                break
    return time.perf_counter() - started, count / max(reads(), 1)


async def drain_source(config: Config, count: int) -> tuple[float, float]:
    """ccwatch's MQTT source with a handler that only counts; (seconds, packets per wake-up)."""
    done = asyncio.Event()
    received = 0
    started = finished = 0.0

    def handler(topic: str, body: bytes, received_at: float) -> None:
        nonlocal received, started, finished
        if received == 0:
            started = time.perf_counter()
        received += 1
        if received == count:
            finished = time.perf_counter()
            done.set()

    source = MqttSource(config.mqtt, config.site, handler, CollectorRegistry())
    task = asyncio.create_task(source.run())
    await done.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    reader = source.reader
    per_wakeup = reader.packets / max(reader.wakeups, 1) if reader is not None else 0.0
    return finished - started, per_wakeup


async def drain_pipeline(config: Config, count: int) -> tuple[float, dict[str, Any]]:
    registry = CollectorRegistry()
    store = open_state(config.state.path)
    service = build_incident_service(config, store, registry)
    pipeline = build_pipeline(config, service, registry)
    done = asyncio.Event()
    received = 0
    started = 0.0
    finished = 0.0

    def handler(topic: str, body: bytes, received_at: float) -> Awaitable[None] | None:
        nonlocal received, started, finished
        if received == 0:
            started = time.perf_counter()
        pending = pipeline.handle_message(topic, body, received_at)
        received += 1
        if received == count:
            finished = time.perf_counter()
            done.set()
        return pending

    source = MqttSource(config.mqtt, config.site, handler, registry)
    task = asyncio.create_task(source.run())
    await done.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    incidents = store.run_sync(
        lambda conn: conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
    )
    stats = {
        "incidents": incidents,
        "dropped": registry.get_sample_value(
            "ccwatch_ingest_dropped_total", {"reason": "queue_full"}
        ),
        "rejected": sum(
            s.value
            for m in registry.collect()
            if m.name == "ccwatch_ingest_rejected"
            for s in m.samples
            if s.name.endswith("_total")
        ),
    }
    store.close()
    return finished - started, stats


def with_client_id(config: Config, client_id: str) -> Config:
    return config.model_copy(
        update={"mqtt": config.mqtt.model_copy(update={"client_id": client_id})}
    )


def bench_drain(workdir: Path, count: int, rounds: int = 2) -> None:
    """Rounds run bare paho, bare aiomqtt, ccwatch source, ccwatch pipeline in turn on
    sessions pre-loaded together, so a change in the machine's load during the run hits
    all of them alike."""
    broker = Broker(workdir)
    times: dict[str, list[float]] = {"paho": [], "aiomqtt": [], "source": [], "pipeline": []}
    per_read: dict[str, list[float]] = {"paho": [], "aiomqtt": [], "source": []}
    try:
        base = make_config(workdir, broker.port, list(STANDARD), open_after="0s")
        pipes = [
            with_client_id(make_config(workdir, broker.port, list(STANDARD), open_after="0s"),
                           f"bench-pipe-{i}")
            for i in range(rounds)
        ]  # fmt: skip
        sources = [with_client_id(base, f"bench-source-{i}") for i in range(rounds)]
        pahos = [f"bench-paho-{i}" for i in range(rounds)]
        bares = [f"bench-bare-{i}" for i in range(rounds)]
        sessions = [
            *pahos, *bares, *(c.mqtt_client_id for c in sources), *(c.mqtt_client_id for c in pipes)
        ]  # fmt: skip
        publish_seconds = preload(broker.port, count, sessions)
        print(
            f"pre-loaded {count:,} QoS 1 messages into {len(sessions)} sessions in "
            f"{publish_seconds:.1f} s; {rounds} rounds of paho, aiomqtt, source, pipeline"
        )
        for number in range(rounds):
            paho_s, paho_read = drain_paho(broker.port, count, pahos[number])
            bare_s, bare_read = asyncio.run(drain_bare(broker.port, count, bares[number]))
            source_s, source_read = asyncio.run(drain_source(sources[number], count))
            pipe_s, stats = asyncio.run(drain_pipeline(pipes[number], count))
            for key, value in (("paho", paho_s), ("aiomqtt", bare_s), ("source", source_s),
                               ("pipeline", pipe_s)):  # fmt: skip
                times[key].append(value)
            for key, value in (("paho", paho_read), ("aiomqtt", bare_read),
                               ("source", source_read)):  # fmt: skip
                per_read[key].append(value)
            print(
                f"  round {number + 1}: paho {count / paho_s:>7,.0f}, aiomqtt "
                f"{count / bare_s:>7,.0f}, source {count / source_s:>7,.0f}, pipeline "
                f"{count / pipe_s:>7,.0f} msg/s ({stats['incidents']} incident(s), "
                f"{stats['rejected']:.0f} rejected, {stats['dropped']:.0f} dropped); "
                f"pipeline/paho {paho_s / pipe_s * 100:.1f} %"
            )
    finally:
        broker.stop()
    rate = {key: count * rounds / sum(values) for key, values in times.items()}
    reads = {key: sum(values) / len(values) for key, values in per_read.items()}
    print(
        f"  bare paho loop (manual ack)     : {rate['paho']:>9,.0f} msg/s  "
        f"({reads['paho']:.1f} packets per loop_read)"
    )
    print(
        f"  bare aiomqtt loop               : {rate['aiomqtt']:>9,.0f} msg/s  "
        f"({reads['aiomqtt']:.1f} packets per readable event)"
    )
    print(
        f"  ccwatch MQTT source, no pipeline: {rate['source']:>9,.0f} msg/s  "
        f"({reads['source']:.1f} packets per readable event)"
    )
    print(f"  ccwatch pipeline (ack after)    : {rate['pipeline']:>9,.0f} msg/s  (all rounds)")
    print(
        f"  ratio pipeline/bare paho        : {rate['pipeline'] / rate['paho'] * 100:.1f} %  "
        "(target >= 90 %)"
    )
    print(f"  ratio pipeline/bare aiomqtt     : {rate['pipeline'] / rate['aiomqtt'] * 100:.1f} %")


# --- 2. memory ----------------------------------------------------------------------------


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def bench_memory(workdir: Path, count: int, components: int = 1000) -> None:
    names = [f"c{i:04d}" for i in range(components)]
    config = make_config(workdir, 1, names, open_after="0s", resolve_after="60s")
    registry = CollectorRegistry()
    store = open_state(config.state.path)
    service = build_incident_service(config, store, registry)
    pipeline = build_pipeline(config, service, registry)
    topics = [f"cc/blr1/{name}/metrics" for name in names]
    base = time.time() - count * 0.001
    gc.collect()
    before = rss_mb()
    samples: dict[int, float] = {}

    async def feed() -> float:
        started = time.perf_counter()
        for i in range(count):
            now = base + i * 0.001  # a simulated 1,000 msg/s, so windows and holds move
            component = i % components
            # Every 50th component has an outage for a while: incidents open and resolve.
            phase = (i // 100_000) % 2
            unable = 23 if component % 50 == 0 and phase == 1 else 0
            transitions = pipeline.handle(topics[component], payload(i, now, unable), now)
            if transitions:
                await service.apply(transitions)
            if i + 1 in (count // 2, count):
                gc.collect()
                samples[i + 1] = rss_mb()
        return time.perf_counter() - started

    elapsed = asyncio.run(feed())
    incidents = store.run_sync(
        lambda conn: conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
    )
    store.close()
    half, full = samples[count // 2], samples[count]
    print(
        f"  RSS before {before:.1f} MB, after {count // 2:,}: {half:.1f} MB, after {count:,}: "
        f"{full:.1f} MB (growth {full - half:+.1f} MB; target < 80 MB and flat)"
    )
    print(
        f"  in-process pipeline rate  : {count / elapsed:>9,.0f} msg/s over {components:,} "
        f"components ({incidents} incidents written)"
    )


# --- 3. latency ----------------------------------------------------------------------------

BACKGROUND = """
import json, sys, time, threading
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, rate = int(sys.argv[1]), float(sys.argv[2])
client = paho.Client(CallbackAPIVersion.VERSION2)
client.connect("127.0.0.1", port)
client.loop_start()
components = ["acd", "ivr", "dialer", "voice_logger", "reports"]
body = json.dumps({"seats": 100, "agents_logged_in": 98, "agents_expected": 98,
                   "agents_unable_to_take_calls": 0, "calls_offered": 40, "calls_rejected": 0,
                   "up": True})
start = time.perf_counter()
i = 0
while True:
    client.publish(f"cc/blr1/{components[i % 5]}/metrics", body, qos=1)
    i += 1
    delay = start + i / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
"""


async def probe_latency(config: Config, probes: int, probe_port: int) -> list[float]:
    registry = CollectorRegistry()
    store = open_state(config.state.path)
    service = build_incident_service(config, store, registry)
    pipeline = build_pipeline(config, service, registry)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    all_done = asyncio.Event()

    def on_change(incident: Incident, change: str) -> None:
        if change == "opened" and incident.component in sent:
            latencies.append(time.perf_counter() - sent.pop(incident.component))
            if len(latencies) == probes:
                all_done.set()

    service.on_change = on_change
    source = MqttSource(config.mqtt, config.site, pipeline.handle_message, registry)
    task = asyncio.create_task(source.run())
    while source.connections == 0:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    publisher = paho_client(probe_port)
    body = json.dumps({"seats": 100, "agents_unable_to_take_calls": 23, "up": True})

    def publish_probes() -> None:
        for i in range(probes):
            component = f"p{i:04d}"
            sent[component] = time.perf_counter()
            publisher.publish(f"cc/blr1/{component}/metrics", body, qos=1)
            time.sleep(0.05)

    thread = threading.Thread(target=publish_probes, daemon=True)
    thread.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), timeout=probes * 0.05 + 30)
    thread.join()
    publisher.loop_stop()
    publisher.disconnect()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store.close()
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_latency(workdir: Path, probes: int, rate: float) -> None:
    broker = Broker(workdir)
    names = [*STANDARD, *(f"p{i:04d}" for i in range(probes))]
    try:
        for label, load in (("no background load", 0.0), (f"{rate:,.0f} msg/s background", rate)):
            background = None
            if load:
                background = subprocess.Popen(
                    [sys.executable, "-c", BACKGROUND, str(broker.port), str(load)]
                )
                time.sleep(1.0)
            config = make_config(workdir, broker.port, names, open_after="0s")
            config = config.model_copy(
                update={"mqtt": config.mqtt.model_copy(update={"client_id": f"bench-lat-{load:g}"})}
            )
            latencies = asyncio.run(probe_latency(config, probes, broker.port))
            if background is not None:
                background.terminate()
                background.wait(10)
            ms = [v * 1000 for v in latencies]
            print(
                f"  {label:<26}: p50 {percentile(ms, 0.5):6.1f} ms  "
                f"p99 {percentile(ms, 0.99):6.1f} ms  max {max(ms):6.1f} ms  "
                f"({len(ms)}/{probes} probes; target p99 < 50 ms)"
            )
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating drain rounds")
    parser.add_argument("--only", choices=["drain", "memory", "latency"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ccwatch").setLevel(logging.WARNING)
    print(f"ccwatch ingest bench, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="ccwatch-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "drain"):
            print(f"1. drain {args.messages:,} pre-loaded QoS 1 messages (same run, same broker)")
            bench_drain(workdir, args.messages, args.rounds)
        if args.only in (None, "memory"):
            print(f"2. memory: {args.memory_messages:,} messages over 1,000 components, in-process")
            bench_memory(workdir, args.memory_messages)
        if args.only in (None, "latency"):
            print(f"3. publish -> incident committed, open_after 0, {args.probes} probes")
            bench_latency(workdir, args.probes, args.rate)


if __name__ == "__main__":
    main()
