"""Reconciler load (issue 12): open ClickUp tickets polled against a fake ClickUp.

The fake ClickUp (tests/fakedesks/clickup.py) runs in a process of its own, so the CPU
time measured here is ccwatch's alone (its event loop and the state store's thread). A
real ``IncidentService`` opens ``--tickets`` incidents (job reports, one component each);
the ClickUp adapter delivers each ``open`` event (one task each, linked in
``desk_tickets``); then the ``Reconciler`` (``ccwatch.tickets.reconciler``) polls every
open ticket once — one full pass — first with ``requests_per_minute`` unlimited, then
with ``--rpm`` (100: ClickUp's Free/Unlimited/Business limit per token). A poll of a
ticket without a first response is two requests (the task and its comments).

Printed per pass: polls, requests, requests/min achieved, CPU seconds
(``time.process_time``) per 100 polls, wall time of the pass; and a baseline in the same
run: a bare aiohttp GET loop (one request at a time, as the reconciler polls) of the
same task URLs against the same fake.

    .venv/bin/python bench/desks.py [--tickets 500] [--rpm 100] [--limited-tickets N]

``--limited-tickets`` polls only the first N tickets in the rate-limited pass (at 100
requests a minute a full pass of 500 tickets takes about 9 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from ccwatch.compose import incident_settings, open_state  # noqa: E402
from ccwatch.config import Config  # noqa: E402
from ccwatch.incidents.events import event_body  # noqa: E402
from ccwatch.incidents.service import IncidentService  # noqa: E402
from ccwatch.incidents.vocabulary import Event  # noqa: E402
from ccwatch.severity import Severity  # noqa: E402
from ccwatch.state import StateStore  # noqa: E402
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent  # noqa: E402
from ccwatch.tickets.adapters.clickup import ClickUpAdapter, ClickUpUpstream  # noqa: E402
from ccwatch.tickets.links import TicketLinks  # noqa: E402
from ccwatch.tickets.reconciler import Reconciler  # noqa: E402

TOKEN = "pk_1_BENCHBENCHBENCHBENCH"
LIST_ID = "901"
DAY = 86400.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"the fake ClickUp does not listen on {port}")


def adapter(url: str, links: TicketLinks, rpm: int | None) -> ClickUpAdapter:
    os.environ["CCWATCH_BENCH_CLICKUP_TOKEN"] = TOKEN
    config = ClickUpUpstream.model_validate(
        {
            "type": "clickup",
            "url": url,
            "list_id": LIST_ID,
            "token_env": "CCWATCH_BENCH_CLICKUP_TOKEN",
            "requests_per_minute": rpm,
            "poll_interval": "1h",
        }
    )
    return ClickUpAdapter(config, AdapterContext("blr1", links=links))


class Clock:
    """The reconciler's clock: moved a day on between passes, so every ticket is due."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def open_tickets(store: StateStore, url: str, tickets: int) -> IncidentService:
    config = Config.model_validate(
        {"site": "blr1", "state": {"path": str(store.path)}, "tickets": []}
    )
    service = IncidentService(store, incident_settings(config), CollectorRegistry())
    await service.load()
    for n in range(tickets):
        await service.report(
            component=f"line{n:04d}",
            kind="bench",
            severity=Severity.MAJOR,
            impact=f"bench incident {n}",
        )
    creator = adapter(url, TicketLinks(store), None)
    for incident in await service.list_incidents():
        body = event_body(incident, Event.OPEN)
        await creator.deliver(
            TicketEvent("clickup", incident.id, incident.seq, "open",
                        f"{incident.dedup_key}:{incident.seq}", body)
        )  # fmt: skip
    await creator.aclose()
    return service


async def one_pass(
    store: StateStore, service: IncidentService, url: str, rpm: int | None, clock: Clock,
    limit: int | None,
) -> dict[str, float]:  # fmt: skip
    links = TicketLinks(store)
    desk = adapter(url, links, rpm)
    reconciler = Reconciler(
        {"clickup": desk}, links, service, CollectorRegistry(), clock=clock  # type: ignore[arg-type]
    )
    clock.offset += DAY
    due = await links.due("clickup", clock(), limit or 1_000_000)
    cpu, wall = time.process_time(), time.perf_counter()
    for link in due:
        await reconciler.reconcile(desk, link)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    requests = desk.http.requests
    await desk.aclose()
    return {"polls": len(due), "requests": requests, "wall": wall, "cpu": cpu}


async def bare_loop(url: str, task_ids: list[str]) -> dict[str, float]:
    headers = {"Authorization": TOKEN, "Accept": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        cpu, wall = time.process_time(), time.perf_counter()
        for task_id in task_ids:
            async with session.get(f"{url}/api/v2/task/{task_id}") as answer:
                await answer.read()
                assert answer.status == 200, answer.status
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    return {"requests": len(task_ids), "wall": wall, "cpu": cpu}


def row(label: str, result: dict[str, Any]) -> str:
    per_minute = result["requests"] / result["wall"] * 60
    cpu_per_100 = result["cpu"] / max(1, result["polls"]) * 100
    return (
        f"  {label:<26}{result['polls']:>6.0f}{result['requests']:>10.0f}{per_minute:>14.0f}"
        f"{cpu_per_100:>17.3f}{result['wall']:>10.2f}"
    )


async def main_async(args: argparse.Namespace, workdir: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakedesks.clickup", "--port", str(port),
         "--token", TOKEN, "--list", LIST_ID],
        cwd=ROOT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    store = open_state(workdir / "state.db")
    try:
        wait_port(port)
        started = time.perf_counter()
        service = await open_tickets(store, url, args.tickets)
        print(
            f"Reconciler load: {args.tickets} open ClickUp tickets (fake ClickUp in its own "
            f"process; set-up: {time.perf_counter() - started:.1f} s)"
        )
        clock = Clock()
        unlimited = await one_pass(store, service, url, None, clock, None)
        limited = await one_pass(store, service, url, args.rpm, clock, args.limited_tickets)
        links = await TicketLinks(store).listing(limit=args.tickets)
        task_ids = [link.ticket_id for link in links] * 2  # as many requests as a pass
        bare = await bare_loop(url, task_ids[: int(unlimited["requests"])])
        print(
            f"  {'one full pass':<26}{'polls':>6}{'requests':>10}{'requests/min':>14}"
            f"{'CPU s/100 polls':>17}{'wall s':>10}"
        )
        print(row("unlimited", unlimited))
        print(row(f"requests_per_minute {args.rpm}", limited))
        per_minute = bare["requests"] / bare["wall"] * 60
        print(
            f"  bare aiohttp GET loop (baseline): {bare['requests']:.0f} requests, "
            f"{per_minute:.0f} requests/min, CPU {bare['cpu'] / bare['requests'] * 200:.3f} s "
            f"per 200 requests (= 100 polls' worth), wall {bare['wall']:.2f} s"
        )
        if limited["polls"] < args.tickets:
            projected = args.tickets * limited["requests"] / max(1, limited["polls"]) / args.rpm
            print(
                f"  (rate-limited pass cut at {limited['polls']:.0f} tickets; a full pass at "
                f"{args.rpm} requests/min takes about {projected:.1f} min)"
            )
        await service.aclose()
    finally:
        store.close()
        fake.terminate()
        fake.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--rpm", type=int, default=100)
    parser.add_argument("--limited-tickets", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccwatch-bench-") as tmp:
        asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    main()
