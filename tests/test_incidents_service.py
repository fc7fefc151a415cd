"""Incident service and repository: persistence, timeline, outbox rows in the same transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import incident_settings
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.model import Incident
from ccwatch.incidents.service import IncidentService
from ccwatch.incidents.vocabulary import Event
from ccwatch.severity import Severity
from ccwatch.state import SQLITE, STORE_ERRORS, StateStore

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")
MAJOR = Reading(Severity.MAJOR, 0.05, "5 of 100 agents cannot take calls (5.0%)")
CLEAN = Reading(Severity.NONE, 0.0, "no production loss")


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(tmp_path: Path, tickets: list[dict[str, Any]] | None = None) -> Config:
    return Config.model_validate(
        {
            "site": "blr1",
            "state": {"path": str(tmp_path / "state.db")},
            "classification": {"open_after": "0s", "resolve_after": "60s"},
            "tickets": tickets
            if tickets is not None
            else [
                {"type": "webhook", "name": "all", "url": "http://127.0.0.1:9/all"},
                {
                    "type": "webhook",
                    "name": "p1",
                    "url": "http://127.0.0.1:9/p1",
                    "severities": ["critical"],
                },
            ],
        }
    )


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def service_for(store: StateStore, config: Config, clock: Clock, **kwargs: Any) -> IncidentService:
    service = IncidentService(
        store,
        incident_settings(config),
        CollectorRegistry(),
        clock=clock,
        monotonic=clock,
        **kwargs,
    )
    service.load_sync()
    return service


def outbox(store: StateStore) -> list[dict[str, Any]]:
    rows = store.run_sync(lambda conn: conn.execute("SELECT * FROM outbox ORDER BY id").fetchall())
    return [dict(row) for row in rows]


async def observe(service: IncidentService, reading: Reading, now: float) -> None:
    clock = service.clock
    assert isinstance(clock, Clock)
    clock.now = now  # the fake clock is both the wall and the monotonic clock here
    await service.apply(service.observe("acd", reading, now))


def test_open_escalate_resolve_write_timeline_and_routed_outbox_rows(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    t = clock.now

    async def run() -> None:
        await observe(service, MAJOR, t)
        await observe(service, CRITICAL, t + 5)
        await observe(service, CLEAN, t + 10)
        await observe(service, CLEAN, t + 70)

    asyncio.run(run())
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert (incident.state, incident.severity, incident.peak_severity, incident.seq) == (
        "resolved",
        Severity.CRITICAL,
        Severity.CRITICAL,
        3,
    )
    timeline = store.run_sync(lambda conn: repository.load_timeline(conn, incident.id))
    assert [(e.change, e.severity.label) for e in timeline] == [
        ("opened", "major"),
        ("escalated", "critical"),
        ("resolved", "critical"),
    ]
    rows = outbox(store)
    # "all" gets every event; "p1" (critical only) gets the escalation and, routed by the
    # peak severity, the resolve.
    assert [(r["upstream"], r["event"], r["seq"]) for r in rows] == [
        ("all", "open", 1),
        ("all", "escalate", 2),
        ("p1", "escalate", 2),
        ("all", "resolve", 3),
        ("p1", "resolve", 3),
    ]
    dedup = f"ccwatch:blr1:acd:{incident.id}"
    assert {r["idempotency_key"] for r in rows if r["seq"] == 2} == {f"{dedup}:2"}
    body = json.loads(rows[1]["body"])
    assert body["event"] == "escalate" and body["dedup_key"] == dedup
    assert (body["severity"], body["priority"], body["state"]) == ("critical", "P1", "open")
    assert body["impact"] == CRITICAL.impact and body["opened_at"].endswith("Z")
    assert set(body["sla"]) == {"first_response_due", "resolution_due", "rca_due"}
    assert set(body["diagnostics"]) == {"metrics", "host", "log_excerpt"}
    assert all(r["status"] == "pending" and r["next_attempt_at"] == r["created_at"] for r in rows)


def test_event_extras_hook_is_merged_into_the_body(tmp_path: Path, store: StateStore) -> None:
    seen: list[tuple[str, int]] = []

    def extras(incident: Incident, event: str) -> dict[str, Any]:
        seen.append((event, incident.seq))
        return {"sla": {"first_response_due": "2026-11-23T11:30:00Z"}}

    def diagnostics(incident: Incident) -> dict[str, Any]:
        return {"host": {"load": 0.5}}

    clock = Clock()
    service = service_for(
        store, make_config(tmp_path), clock, body_extras=extras, diagnostics=diagnostics
    )

    async def run() -> None:
        await observe(service, CRITICAL, clock.now)
        held = outbox(store)[0]
        # The open waits for its diagnostics (gathered after the commit), not longer.
        assert held["next_attempt_at"] > held["created_at"]
        await service.wait_background()

    asyncio.run(run())
    row = outbox(store)[0]
    assert row["next_attempt_at"] == row["created_at"]
    body = json.loads(row["body"])
    assert body["sla"]["first_response_due"] == "2026-11-23T11:30:00Z"
    assert body["sla"]["resolution_due"] is None
    assert body["diagnostics"]["host"] == {"load": 0.5}
    assert seen == [("open", 1)]


def test_a_failing_write_rolls_back_the_incident_with_its_outbox_rows(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    # Make the outbox insert fail: the incident row written just before must not stay.
    if store.dialect is SQLITE:
        store.run_sync(
            lambda conn: conn.execute(
                "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    else:
        store.run_sync(
            lambda conn: conn.execute(
                "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
            )
        )
        store.run_sync(
            lambda conn: conn.execute(
                "CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox"
                " FOR EACH ROW EXECUTE FUNCTION fail_outbox()"
            )
        )
    asyncio.run(observe(service, CRITICAL, clock.now))
    assert store.run_sync(lambda conn: repository.list_incidents(conn)) == []
    assert service.metrics.write_failures._value.get() == 1
    # The disk has room again: the next message writes the open it could not write.
    on_table = "" if store.dialect is SQLITE else " ON outbox"
    store.run_sync(lambda conn: conn.execute(f"DROP TRIGGER fail_outbox{on_table}"))
    asyncio.run(observe(service, CRITICAL, clock.now + 1))
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert incident.state == "open"
    assert [r["event"] for r in outbox(store)] == ["open", "open"]


def test_restart_continues_the_incident_and_never_opens_it_twice(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    config = make_config(tmp_path)
    first = service_for(store, config, clock)
    asyncio.run(observe(first, CRITICAL, clock.now))
    second = service_for(store, config, clock)
    asyncio.run(observe(second, CRITICAL, clock.now + 5))
    incidents = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert len(incidents) == 1 and incidents[0].state == "open"
    assert [r["event"] for r in outbox(store)].count("open") == 2  # one per upstream
    # The database itself refuses a second active incident for the same component.
    with pytest.raises(STORE_ERRORS, match=r"(?i)unique"):
        store.run_sync(
            lambda conn: repository.save_incident(conn, replace(incidents[0], id="other"))
        )


def test_acknowledge_writes_timeline_and_acknowledge_event_once(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    asyncio.run(observe(service, CRITICAL, clock.now))
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    acked = asyncio.run(service.acknowledge(incident.id, "asha", clock.now + 60))
    again = asyncio.run(service.acknowledge(incident.id, "ravi", clock.now + 90))
    assert (acked.state, acked.acknowledged_by, again.acknowledged_by) == (
        "acknowledged",
        "asha",
        "asha",
    )
    events = [(r["upstream"], r["event"], r["seq"]) for r in outbox(store)]
    assert events.count(("all", "acknowledge", 2)) == 1 and ("p1", "acknowledge", 2) in events
    timeline = store.run_sync(lambda conn: repository.load_timeline(conn, incident.id))
    assert timeline[-1].change == "acknowledged" and timeline[-1].detail == "by asha"
    with pytest.raises(repository.UnknownIncidentError):
        asyncio.run(service.acknowledge("nope", "asha"))


def test_a_note_for_an_sla_escalation(tmp_path: Path, store: StateStore) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    asyncio.run(observe(service, CRITICAL, clock.now))
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    updated = asyncio.run(
        service.note(
            incident.id,
            "sla escalation L2",
            event=Event.ESCALATION_LEVEL,
            detail="first response overdue",
            updates={"first_response_due": clock.now + 5400},
        )
    )
    assert updated.seq == 2 and updated.first_response_due == clock.now + 5400
    timeline = store.run_sync(lambda conn: repository.load_timeline(conn, incident.id))
    assert (timeline[-1].change, timeline[-1].detail) == (
        "sla escalation L2",
        "first response overdue",
    )
    body = json.loads(outbox(store)[-1]["body"])
    assert body["sla"]["first_response_due"] is not None


def test_jobs_report_and_clear_their_incidents(tmp_path: Path, store: StateStore) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)

    async def run() -> None:
        await service.report(
            component="host",
            kind="checklist",
            severity=Severity.MINOR,
            impact="2 of 15 checks failed",
            detail={"failed": ["disk", "ntp"]},
        )
        await service.report(
            component="host",
            kind="checklist",
            severity=Severity.MINOR,
            impact="2 of 15 checks failed",
        )
        await service.report(
            component="host",
            kind="checklist",
            severity=Severity.MAJOR,
            impact="5 of 15 checks failed",
        )
        await service.clear(component="host", kind="checklist")
        await service.clear(component="host", kind="checklist")

    asyncio.run(run())
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert (incident.kind, incident.state, incident.peak_severity) == (
        "checklist",
        "resolved",
        Severity.MAJOR,
    )
    assert [r["event"] for r in outbox(store) if r["upstream"] == "all"] == [
        "open",
        "escalate",
        "resolve",
    ]


def test_open_incidents_gauge_follows_the_changes(tmp_path: Path, store: StateStore) -> None:
    clock = Clock()
    registry = CollectorRegistry()
    service = IncidentService(
        store,
        incident_settings(make_config(tmp_path, tickets=[])),
        registry,
        clock=clock,
        monotonic=clock,
    )
    service.load_sync()

    def gauge(severity: str) -> float | None:
        return registry.get_sample_value("ccwatch_incidents_open", {"severity": severity})

    asyncio.run(observe(service, CRITICAL, clock.now))
    assert (gauge("critical"), gauge("major")) == (1, 0)
    asyncio.run(observe(service, CLEAN, clock.now + 1))
    asyncio.run(observe(service, CLEAN, clock.now + 100))
    assert gauge("critical") == 0
    assert outbox(store) == []  # no upstream configured: nothing to deliver


def test_a_bug_in_a_write_abandons_the_transition_and_it_comes_back(
    tmp_path: Path, store: StateStore
) -> None:
    """A failing body hook (a bug) must not leave the component pending for good."""
    clock = Clock()
    calls: list[str] = []

    def broken_once(incident: Incident, event: Event) -> dict[str, Any]:
        calls.append(event.value)
        if len(calls) == 1:
            raise KeyError("a bug")
        return {}

    service = service_for(store, make_config(tmp_path), clock, body_extras=broken_once)
    asyncio.run(observe(service, CRITICAL, clock.now))
    assert store.run_sync(lambda conn: repository.list_incidents(conn)) == []
    asyncio.run(observe(service, CRITICAL, clock.now + 1))
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert incident.state == "open" and calls == ["open", "open"]


def test_transitions_cancelled_before_their_write_are_proposed_again(
    tmp_path: Path, store: StateStore
) -> None:
    """A config reload cancels the pipeline while a write waits for the lock: the
    transitions it carried must come back, not freeze the component."""
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)

    async def scenario() -> None:
        async with service._settled:  # another write holds the lock
            proposed = service.observe("acd", CRITICAL, clock.now)
            assert [t.change for t in proposed] == ["opened"]
            waiting = asyncio.create_task(service.apply(proposed))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        await observe(service, CRITICAL, clock.now + 1)

    asyncio.run(scenario())
    [incident] = store.run_sync(lambda conn: repository.list_incidents(conn))
    assert incident.state == "open"
