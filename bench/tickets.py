"""Ticket delivery: publish-to-upstream latency and outbox drain rate, each beside a baseline.

1. Latency: ``ccwatch run`` (subprocess) with ``open_after: 0`` and a webhook upstream
   pointing at a local aiohttp receiver; the bench publishes a critical payload (QoS 1)
   for a fresh component and times MQTT publish -> webhook request for its ``open``
   received, over 200 incidents. Printed beside the bare HTTP round trip (httpx POST
   of a body of the same size to the same receiver). Target p99 < 100 ms.
2. Drain: 10,000 pending outbox rows (500 incidents x 20 events) are delivered by the
   ``OutboxDispatcher`` + webhook adapter to a receiver in its own process. Printed
   beside bare aiohttp POSTs (the adapter's client) with the same concurrency (16), and
   beside the dispatcher with an in-memory adapter (the outbox's own cost: SQLite
   reads, redaction, status writes).

    .venv/bin/python bench/tickets.py [--incidents 200] [--backlog 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.test_tickets_support import Received, Receiver, generic_body  # noqa: E402

from ccwatch.compose import open_state  # noqa: E402
from ccwatch.config import validate_data  # noqa: E402
from ccwatch.state import StateStore, transaction  # noqa: E402
from ccwatch.tickets.adapters import AdapterContext, RecordingAdapter  # noqa: E402
from ccwatch.tickets.adapters.webhook import WebhookAdapter, WebhookUpstream  # noqa: E402
from ccwatch.tickets.outbox import OutboxDispatcher  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ms(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:6.2f} ms   "
        f"p99 {percentile(values, 0.99) * 1000:6.2f} ms   "
        f"max {max(values) * 1000:6.2f} ms"
    )


# --- 1. publish -> upstream latency -------------------------------------------------


class Arrivals:
    """Receiver validator: notes when each component's open arrived."""

    def __init__(self) -> None:
        self.opened: dict[str, float] = {}
        self.condition = threading.Condition()

    def __call__(self, request: Received) -> None:
        with contextlib.suppress(ValueError, KeyError):
            body = request.json
            if body["event"] == "open":
                with self.condition:
                    self.opened.setdefault(body["component"], time.perf_counter())
                    self.condition.notify_all()

    def wait(self, component: str, timeout: float = 10) -> float:
        with self.condition:
            if not self.condition.wait_for(lambda: component in self.opened, timeout):
                raise TimeoutError(f"no open ticket for {component}")
            return self.opened[component]


def latency(workdir: Path, incidents: int) -> None:
    broker_port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
    arrivals = Arrivals()
    receiver = Receiver(validator=arrivals).start()  # type: ignore[arg-type]
    http_port = free_port()
    components = [f"line{n:03d}" for n in range(incidents)]
    config = {
        "site": "blr1",
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "ccwatch-bench"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "state": {"path": str(workdir / "state.db")},
        "components": {name: {"seats": 100} for name in components},
        "classification": {"open_after": "0s", "resolve_after": "5m", "stale_after": "1h"},
        "tickets": [{"type": "webhook", "url": receiver.url + "/tickets"}],
        "logging": {"level": "warning"},
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(config_path), "run"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stderr=(workdir / "ccwatch.log").open("wb"),
    )
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    try:
        wait_port(broker_port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        publisher.connect("127.0.0.1", broker_port)
        publisher.loop_start()
        payload = json.dumps({"seats": 100, "agents_unable_to_take_calls": 25, "up": True})
        samples: list[float] = []
        for component in components:
            started = time.perf_counter()
            publisher.publish(f"cc/blr1/{component}/metrics", payload, qos=1)
            samples.append(arrivals.wait(component) - started)
        body = json.dumps(generic_body("0" * 32, 1, "open")).encode()
        bare: list[float] = []
        with httpx.Client() as client:
            for _ in range(incidents):
                started = time.perf_counter()
                client.post(receiver.url + "/tickets", content=body,
                            headers={"Content-Type": "application/json"})  # fmt: skip
                bare.append(time.perf_counter() - started)
        print(f"1. publish -> webhook received, {incidents} incidents (open_after 0)")
        print(f"   ccwatch (MQTT -> classify -> incident + outbox -> webhook): {ms(samples)}")
        print(f"   bare HTTP round trip to the same receiver (baseline):       {ms(bare)}")
    finally:
        publisher.loop_stop()
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(10)
        broker.terminate()
        broker.wait(10)
        receiver.close()


# --- 2. outbox drain ---------------------------------------------------------------


def fill_outbox(store: StateStore, upstream: str, backlog: int, per_incident: int = 20) -> None:
    now = time.time()

    def write(connection: Any) -> None:
        with transaction(connection):
            for n in range(backlog):
                incident, seq = f"{n // per_incident:032x}", n % per_incident + 1
                body = generic_body(incident, seq, "open" if seq == 1 else "update")
                connection.execute(
                    "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key,"
                    " body, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (upstream, incident, seq, body["event"], f"{body['dedup_key']}:{seq}",
                     json.dumps(body), now, now),
                )  # fmt: skip

    store.run_sync(write)


async def drain(store: StateStore, adapter: Any, backlog: int) -> float:
    dispatcher = OutboxDispatcher(store, {adapter.name: adapter}, registry=CollectorRegistry())
    started = time.perf_counter()
    delivered = 0
    while delivered < backlog:
        await dispatcher.drain_once(adapter.name)
        delivered = await store.run(
            lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE status='delivered'").fetchone()[
                0
            ]
        )
    elapsed = time.perf_counter() - started
    await adapter.aclose()
    return backlog / elapsed


async def bare_posts(url: str, backlog: int, concurrency: int = 16) -> float:
    """The same POSTs with the same HTTP client (aiohttp), no outbox: the baseline."""
    body = json.dumps(generic_body("0" * 32, 1, "open")).encode()
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def post(n: int) -> None:
            async with (
                semaphore,
                session.post(url, data=body, headers={"Idempotency-Key": f"bare:{n}"}) as reply,
            ):
                await reply.read()

        started = time.perf_counter()
        await asyncio.gather(*(post(n) for n in range(backlog)))
        return backlog / (time.perf_counter() - started)


# A receiver in a process of its own (as a ticket system would be), counting keys.
RECEIVER = """
import sys
from aiohttp import web
keys = []
async def take(request):
    await request.read()
    keys.append(request.headers.get("Idempotency-Key", ""))
    return web.json_response({"ok": True})
async def count(request):
    return web.json_response({"requests": len(keys), "distinct": len(set(keys) - {""})})
app = web.Application()
app.router.add_post("/tickets", take)
app.router.add_get("/count", count)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def drain_rate(workdir: Path, backlog: int) -> None:
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    url = f"http://127.0.0.1:{port}/tickets"
    try:
        wait_port(port)
        webhook = validate_data(WebhookUpstream, {"type": "webhook", "url": url}, "bench")
        store = open_state(workdir / "drain-webhook.db")
        fill_outbox(store, "webhook", backlog)
        webhook_rate = asyncio.run(
            drain(store, WebhookAdapter(webhook, AdapterContext("blr1")), backlog)
        )
        store.close()
        counted = httpx.get(f"http://127.0.0.1:{port}/count").json()
        assert counted["distinct"] == counted["requests"] == backlog, counted
        store = open_state(workdir / "drain-memory.db")
        fill_outbox(store, "recording", backlog)
        memory_rate = asyncio.run(drain(store, RecordingAdapter(name="recording"), backlog))
        store.close()
        bare_rate = asyncio.run(bare_posts(url, backlog))
    finally:
        receiver.terminate()
        receiver.wait(10)
    print(f"2. outbox drain of a {backlog:,}-event backlog (500 incidents, in order per incident)")
    print(f"   dispatcher + webhook adapter -> receiver: {webhook_rate:8.0f} events/s")
    print(f"   bare aiohttp POSTs, 16 in flight (baseline):{bare_rate:7.0f} requests/s")
    print(f"   dispatcher + in-memory adapter (outbox):  {memory_rate:8.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--only", choices=["latency", "drain"], help="run one of the two")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccwatch-bench-") as tmp:
        workdir = Path(tmp)
        if args.only != "drain":
            latency(workdir, args.incidents)
        if args.only != "latency":
            drain_rate(workdir, args.backlog)


if __name__ == "__main__":
    main()
