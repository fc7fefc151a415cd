"""The SLA watcher over real incidents in a real state database, on a fake clock:
due times stored, breaches counted once, each escalation step one outbox event and one
timeline entry, sent once across restarts; ack and resolution stop their clocks."""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import build_incident_service
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident
from ccwatch.incidents.service import IncidentService
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets.diagnostics import HostProbe
from ccwatch.tickets.service import DiagnosticsGatherer, SlaWatcher
from tests.test_tickets_support import FakeClock

MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()
MINUTE = 60.0
HOUR = 3600.0

CONFIG: dict[str, Any] = {
    "site": "blr1",
    "email": {"host": "127.0.0.1", "port": 2525, "from": "ccwatch@blr1.example", "starttls": False},
    "tickets": [
        {"type": "webhook", "url": "https://tickets.example/hook"},
        {"type": "webhook", "name": "engineering-hook", "url": "https://eng.example/hook"},
    ],
    "escalation": {
        "levels": [
            {"name": "L1 support", "trigger": "first_response_warning", "warn_at": 0.75,
             "email": ["l1@support.example"]},
            {"name": "L2 support", "trigger": "first_response_breach",
             "email": ["l2@support.example"]},
            {"name": "engineering", "trigger": "resolution_breach", "upstream": "engineering-hook",
             "email": ["eng@support.example"]},
            {"name": "RCA owner", "trigger": "rca_breach", "email": ["qa@support.example"]},
        ]
    },
}  # fmt: skip

Load = namedtuple("Load", "total available percent")


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def watcher_for(
    service: IncidentService, config: Config, registry: CollectorRegistry, clock: FakeClock
) -> SlaWatcher:
    return SlaWatcher(
        service,
        config.sla,
        config.escalation,
        registry,
        upstreams={u.upstream_name for u in config.tickets if u.enabled},
        email_relay=config.email is not None,
        clock=clock,
    )


def outbox(store: StateStore) -> list[dict[str, Any]]:
    rows = store.run_sync(
        lambda c: c.execute(
            "SELECT upstream, seq, event, idempotency_key, body FROM outbox ORDER BY id"
        ).fetchall()
    )
    return [
        {"upstream": r[0], "seq": r[1], "event": r[2], "key": r[3], "body": json.loads(r[4])}
        for r in rows
    ]


def timeline(store: StateStore, incident_id: str) -> list[tuple[str, str]]:
    entries = store.run_sync(lambda c: repository.load_timeline(c, incident_id))
    return [(entry.change, entry.detail) for entry in entries]


def test_escalation_path_over_an_incident_life(store: StateStore, tmp_path: Path) -> None:
    config = Config.model_validate(CONFIG)
    clock = FakeClock(MONDAY_10)
    registry = CollectorRegistry()
    woken: list[int] = []

    def on_change(incident: Incident, change: str) -> None:
        if change == "sla_escalation":
            woken.append(1)  # the dispatcher would be woken

    service = build_incident_service(config, store, registry, clock=clock, on_change=on_change)
    watcher = watcher_for(service, config, registry, clock)

    async def scenario() -> None:
        await service.report(
            component="acd",
            kind="checklist",
            severity=Severity.CRITICAL,
            impact="23 of 100 agents cannot take calls (23.0%)",
        )
        (incident,) = await service.list_incidents()
        iid = incident.id
        # The open event carries the seed-004 due times.
        opened = outbox(store)
        assert [row["event"] for row in opened] == ["open", "open"]
        assert opened[0]["body"]["sla"]["first_response_due"] == "2026-11-23T11:30:00Z"
        assert opened[0]["body"]["sla"]["resolution_due"] == "2026-11-23T16:00:00Z"

        assert await watcher.evaluate(MONDAY_10 + 60 * MINUTE) == []
        stored = await service.get(iid)
        assert stored is not None and stored.first_response_due == MONDAY_10 + 90 * MINUTE
        sample = registry.get_sample_value
        remaining = {"site": "blr1", "component": "acd", "kind": "first_response"}
        assert sample("ccwatch_incident_sla_remaining_seconds", remaining) == 30 * MINUTE

        assert await watcher.evaluate(MONDAY_10 + 68 * MINUTE) == [f"{iid}:L1 support"]
        assert await watcher.evaluate(MONDAY_10 + 69 * MINUTE) == []  # sent once
        restarted = watcher_for(service, config, registry, clock)
        assert await restarted.evaluate(MONDAY_10 + 70 * MINUTE) == []  # also after a restart

        clock.now = MONDAY_10 + 80 * MINUTE
        await service.acknowledge(iid, "asha")
        assert await watcher.evaluate(MONDAY_10 + 5 * HOUR) == []  # no L2: acked in time
        assert sample("ccwatch_incident_sla_remaining_seconds", remaining) is None

        assert await watcher.evaluate(MONDAY_10 + 6 * HOUR) == [f"{iid}:engineering"]
        breach = {"kind": "resolution", "severity": "critical"}
        assert sample("ccwatch_sla_breaches_total", breach) == 1
        assert sample("ccwatch_sla_breaches_total", {**breach, "kind": "first_response"}) is None
        await watcher.evaluate(MONDAY_10 + 7 * HOUR)
        assert sample("ccwatch_sla_breaches_total", breach) == 1  # counted once

        clock.now = MONDAY_10 + 8 * HOUR
        await service.clear(component="acd", kind="checklist")
        # RCA: 72 h of 24x5 business time after the resolution -> Thursday 18:00.
        assert await watcher.evaluate(MONDAY_10 + 8 * HOUR + 71 * HOUR) == []
        assert await watcher.evaluate(MONDAY_10 + 8 * HOUR + 72 * HOUR) == [f"{iid}:RCA owner"]

        rows = outbox(store)
        escalations = [r for r in rows if r["body"].get("escalation")]
        assert [
            (r["upstream"], r["event"], r["body"]["escalation"]["name"]) for r in escalations
        ] == [
            ("escalation-email", "sla_warning", "L1 support"),
            ("engineering-hook", "escalation_level", "engineering"),
            ("escalation-email", "escalation_level", "engineering"),
            ("escalation-email", "rca_due", "RCA owner"),
        ]
        assert escalations[0]["body"]["escalation"]["email"] == ["l1@support.example"]
        # seq keeps rising through lifecycle events and escalations: keys never collide.
        assert len({(r["upstream"], r["key"]) for r in rows}) == len(rows)
        seqs = sorted({r["seq"] for r in rows})
        assert seqs == list(range(1, len(seqs) + 1))
        changes = [change for change, _ in timeline(store, iid)]
        assert changes.count("sla_escalation") == 3
        assert changes.count("sla_breach") == 2  # resolution, then RCA
        final = await service.get(iid)
        assert final is not None and final.rca_due == MONDAY_10 + 8 * HOUR + 72 * HOUR

    asyncio.run(scenario())
    assert len(woken) == 3


def test_open_body_carries_diagnostics_from_the_hook(store: StateStore, tmp_path: Path) -> None:
    log = tmp_path / "acd.log"
    log.write_text("10:00 acd: trunk 3 down\n10:01 acd: login failed password=Sup3rSecretPw\n")
    config = Config.model_validate(
        {**CONFIG, "components": {"acd": {"seats": 100, "processes": ["acd-server"],
                                          "log_files": [str(log)]}}}
    )  # fmt: skip
    probe = HostProbe(
        loadavg=lambda: (1.0, 1.0, 1.0),
        memory=lambda: Load(8 << 30, 4 << 30, 50.0),
        disk=lambda path: type("Disk", (), {"free": 1 << 30, "percent": 90.0})(),
        processes=lambda: [],
        cpu_count=lambda: 2,
    )
    service = build_incident_service(config, store, CollectorRegistry(), clock=FakeClock(MONDAY_10))
    service.diagnostics = DiagnosticsGatherer(config.components, probe=probe)

    async def scenario() -> None:
        await service.report(
            component="acd", kind="checklist", severity=Severity.MAJOR, impact="5 of 100"
        )
        await service.wait_background()

    asyncio.run(scenario())
    body = outbox(store)[0]["body"]
    assert body["diagnostics"]["host"]["processes"]["acd-server"]["running"] is False
    assert body["diagnostics"]["log_excerpt"][0] == "10:00 acd: trunk 3 down"
    assert body["sla"]["resolution_due"] == "2026-11-25T10:00:00Z"  # major: 48 h
