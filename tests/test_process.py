"""The support process around a ticket (issue 11) over a real state database, on an
injected clock: reopen within reopen_window, auto-close as expired, reminders of an
unacknowledged critical incident, RCA delivered/deferred and the RCA draft."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import build_incident_service, open_state
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets.service import SlaWatcher, load_rca_draft
from tests.test_tickets_support import FakeClock

MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()
MINUTE, HOUR = 60.0, 3600.0
CRITICAL = Reading(Severity.CRITICAL, 0.4, "40 of 100 agents cannot take calls (40.0%)",
                   {"seats": 100, "calls_offered": 50, "calls_rejected": 20})  # fmt: skip
CLEAN = Reading(Severity.NONE, 0.0, "no production loss", {"seats": 100})


def config(**extra: Any) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "classification": {"open_after": "0s", "resolve_after": "0s", "stale_after": "2m"},
            "tickets": [{"type": "webhook", "url": "https://tickets.example/hook"}],
            "email": {"host": "127.0.0.1", "port": 2525, "from": "cc@blr1.example"},
            "escalation": {
                "levels": [
                    {"name": "RCA owner", "trigger": "rca_breach", "email": ["qa@x.example"]}
                ]
            },
            **extra,
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = open_state(tmp_path / "state.db")
    yield opened
    opened.close()


def events(store: StateStore) -> list[tuple[str, str]]:
    rows = store.run_sync(
        lambda c: c.execute(
            "SELECT upstream, event FROM outbox WHERE upstream = 'webhook' ORDER BY id"
        ).fetchall()
    )
    return [(r[0], r[1]) for r in rows]


def bodies(store: StateStore, event: str) -> list[dict[str, Any]]:
    rows = store.run_sync(
        lambda c: c.execute("SELECT body FROM outbox WHERE event = ? ORDER BY id", (event,))
    ).fetchall() if False else store.run_sync(
        lambda c: c.execute("SELECT body FROM outbox WHERE event = ? ORDER BY id", (event,)
                            ).fetchall()
    )  # fmt: skip
    return [json.loads(r[0]) for r in rows]


def all_bodies(store: StateStore) -> list[dict[str, Any]]:
    rows = store.run_sync(
        lambda c: c.execute("SELECT body FROM outbox WHERE upstream = 'webhook' ORDER BY id")
        .fetchall()
    )  # fmt: skip
    return [json.loads(r[0]) for r in rows]


class Mono:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def __call__(self) -> float:
        return self.clock.now - MONDAY_10 + 1000.0


def setup(store: StateStore, cfg: Config) -> tuple[Any, SlaWatcher, FakeClock]:
    clock = FakeClock(MONDAY_10)
    registry = CollectorRegistry()
    service = build_incident_service(cfg, store, registry, clock=clock)
    service.monotonic = Mono(clock)
    service.load_sync()
    watcher = SlaWatcher(
        service, cfg.sla, cfg.escalation, registry, upstreams={"webhook"},
        email_relay=True, clock=clock,
    )  # fmt: skip
    return service, watcher, clock


async def observe(service: Any, clock: FakeClock, reading: Reading, at: float) -> None:
    clock.now = at
    await service.apply(service.observe("acd", reading, at))


def test_a_fault_back_within_reopen_window_reopens_the_same_incident(store: StateStore) -> None:
    service, _, clock = setup(store, config(incidents={"reopen_window": "30m"}))

    async def scenario() -> None:
        await observe(service, clock, CRITICAL, MONDAY_10)
        await observe(service, clock, CLEAN, MONDAY_10 + 5 * MINUTE)
        await observe(service, clock, CRITICAL, MONDAY_10 + 20 * MINUTE)  # 15m later: back
        await observe(service, clock, CLEAN, MONDAY_10 + 25 * MINUTE)
        await observe(service, clock, CRITICAL, MONDAY_10 + 60 * MINUTE)  # 35m later: new

    asyncio.run(scenario())
    incidents = store.run_sync(lambda c: repository.list_incidents(c))
    assert len(incidents) == 2
    first = incidents[-1]
    timeline = [e.change for e in store.run_sync(lambda c: repository.load_timeline(c, first.id))]
    assert timeline == ["opened", "resolved", "reopened", "resolved"]
    assert first.data["reopen_count"] == 1 and first.state == "resolved"
    assert [e for _, e in events(store)] == ["open", "resolve", "reopen", "resolve", "open"]
    open_body, *_ = bodies(store, "open")
    assert open_body["impact_class"] == "outage"
    resolve_body = bodies(store, "resolve")[0]
    assert resolve_body["resolution"] == {
        "duration_s": 300.0, "peak_severity": "critical", "peak_loss": 0.4
    }  # fmt: skip
    assert {b["dedup_key"] for b in bodies(store, "reopen")} == {first.dedup_key}
    # A restart inside the window still reopens (the resolve is remembered from the store).
    service2, _, clock2 = setup(store, config())
    clock2.now = MONDAY_10 + 61 * MINUTE
    asyncio.run(observe(service2, clock2, CLEAN, MONDAY_10 + 61 * MINUTE))
    asyncio.run(observe(service2, clock2, CRITICAL, MONDAY_10 + 70 * MINUTE))
    assert len(store.run_sync(lambda c: repository.list_incidents(c))) == 2


def test_an_incident_nodata_past_auto_close_after_expires(store: StateStore) -> None:
    service, watcher, clock = setup(store, config(incidents={"auto_close_after": "1h"}))

    async def scenario() -> None:
        await observe(service, clock, CRITICAL, MONDAY_10)
        await service.acknowledge((await service.list_incidents())[0].id, "asha")
        clock.now = MONDAY_10 + 3 * MINUTE
        await service.tick()
        await watcher.evaluate()
        clock.now = MONDAY_10 + 3 * MINUTE + HOUR
        await service.tick()
        await watcher.evaluate(MONDAY_10 + 8 * HOUR)

    asyncio.run(scenario())
    (incident,) = store.run_sync(lambda c: repository.list_incidents(c, state="expired"))
    active = store.run_sync(lambda c: repository.list_incidents(c, state="active"))
    assert [i.component for i in active] == ["telemetry"]  # the site's telemetry-lost one
    acd = [b["event"] for b in all_bodies(store) if b["incident_id"] == incident.id]
    assert acd == ["open", "acknowledge", "nodata", "expire"]
    # The resolution clock stopped when it went silent: no breach 8 h later.
    changes = [e.change for e in store.run_sync(lambda c: repository.load_timeline(c, incident.id))]
    assert "sla_breach" not in changes and changes[-1] == "expired"


def test_an_unacknowledged_critical_incident_is_reminded_once_per_interval(
    store: StateStore,
) -> None:
    cfg = config(escalation={"repeat_interval": "30m"})
    service, watcher, clock = setup(store, cfg)

    async def scenario() -> str:
        await observe(service, clock, CRITICAL, MONDAY_10)
        for minutes in (29, 30, 31, 45):
            clock.now = MONDAY_10 + minutes * MINUTE
            await observe(service, clock, CRITICAL, clock.now)
            await watcher.evaluate()
        _, restarted, _ = setup(store, cfg)
        await restarted.evaluate(MONDAY_10 + 59 * MINUTE)
        await restarted.evaluate(MONDAY_10 + 60 * MINUTE)
        iid = (await service.list_incidents())[0].id
        clock.now = MONDAY_10 + 70 * MINUTE
        await service.acknowledge(iid, "asha")
        await restarted.evaluate(MONDAY_10 + 95 * MINUTE)
        return iid

    iid = asyncio.run(scenario())
    assert [e for _, e in events(store)] == ["open", "reminder", "reminder", "acknowledge"]
    timeline = store.run_sync(lambda c: repository.load_timeline(c, iid))
    assert next(e.detail for e in timeline if e.change == "reminder").startswith(
        "not acknowledged 30m after it opened"
    )


def test_rca_delivered_stops_the_rca_clock_and_deferred_moves_it(store: StateStore) -> None:
    service, watcher, clock = setup(store, config())

    async def life(component: str) -> str:
        clock.now = MONDAY_10
        await service.apply(service.observe(component, CRITICAL, clock.now))
        clock.now = MONDAY_10 + 30 * MINUTE
        await service.apply(service.observe(component, CLEAN, clock.now))
        await watcher.evaluate()
        return next(i.id for i in await service.list_incidents() if i.component == component)

    async def scenario() -> tuple[str, str, str]:
        delivered, deferred, ignored = await life("acd"), await life("ivr"), await life("dialer")
        await service.rca_delivered(delivered, "https://wiki.example/rca/42", "asha")
        until = MONDAY_10 + 10 * 24 * HOUR
        await service.rca_deferred(deferred, "waiting for the vendor's debug data", until, "asha")
        await watcher.evaluate(MONDAY_10 + 5 * 24 * HOUR)  # past 72 business hours
        return delivered, deferred, ignored

    delivered, deferred, ignored = asyncio.run(scenario())
    due = bodies(store, "rca_due")
    # Only the incident nobody delivered nor deferred escalates "RCA overdue".
    assert [b["incident_id"] for b in due] == [ignored]
    assert due[0]["rca_draft"].startswith("# RCA draft: dialer at blr1, critical (P1)")
    assert [e for _, e in events(store) if e.startswith("rca_")] == [
        "rca_delivered", "rca_deferred"
    ]  # fmt: skip
    asyncio.run(watcher.evaluate(MONDAY_10 + 14 * 24 * HOUR))  # past the deferred due time
    assert [b["incident_id"] for b in bodies(store, "rca_due")] == [ignored, deferred]
    _, draft = store.run_sync(lambda c: load_rca_draft(c, config().sla, delivered, clock.now)) or (
        None, "")  # fmt: skip
    assert "- Duration: 30m 00s" in draft
    assert "- Estimated lost production: 1200 agent-minutes unable to work" in draft
    assert "- Calls rejected: not reported by the metrics" in draft  # the last (clean) window
    print(draft)
