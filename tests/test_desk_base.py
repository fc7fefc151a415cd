"""The service-desk base: one ticket per incident, crash recovery, the event → call mapping,
the rate limiter, the reconciler's mapping onto a real incident service, and the ticket
links in notification bodies.

The desk here is an in-memory ``DeskAdapter`` (its five calls keep tickets in a dict):
what is under test is the base's logic. Each real desk's API is tested in its own
``tests/test_desk_<type>.py`` against a real Request Tracker or a validating fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ccwatch.compose import open_state
from ccwatch.config import load_config
from ccwatch.incidents import repository
from ccwatch.incidents.events import event_body
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.model import Incident
from ccwatch.incidents.vocabulary import Event
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets import links as links_table
from ccwatch.tickets.adapters.base import AdapterContext, RecordingAdapter, TicketEvent
from ccwatch.tickets.desk import (
    DeskAdapter,
    DeskUpstream,
    DeskView,
    Phase,
    RateLimiter,
    TicketRef,
)
from ccwatch.tickets.links import Seen, TicketLinks
from ccwatch.tickets.outbox import OutboxDispatcher
from ccwatch.tickets.reconciler import Reconciler, acknowledges
from tests.test_incidents_service import Clock, make_config, service_for

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")


class MemoryUpstream(DeskUpstream):
    type: Literal["memory"] = "memory"


@dataclass
class Ticket:
    id: str
    key: str
    subject: str
    priority: str
    comments: list[str] = field(default_factory=list)
    status: str = "new"
    resolved_with: str | None = None


class MemoryDesk(DeskAdapter):
    """A desk in a dict; ``find`` searches by the dedup key as desks without an
    idempotent create do."""

    def __init__(self, config: MemoryUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.tickets: dict[str, Ticket] = {}
        self.view: DeskView = DeskView("new", Phase.NEW)
        self.reopened: list[str] = []

    async def create(self, event: TicketEvent) -> TicketRef:
        ticket_id = str(len(self.tickets) + 1)
        self.tickets[ticket_id] = Ticket(
            ticket_id,
            event.dedup_key,
            f"{event.body.get('summary')}",
            self.priority(event, {"critical": "P1", "major": "P2", "minor": "P3"}),
        )
        return TicketRef(ticket_id, f"https://desk.invalid/t/{ticket_id}")

    async def find(self, event: TicketEvent) -> TicketRef | None:
        for ticket in self.tickets.values():
            if ticket.key == event.dedup_key:
                return TicketRef(ticket.id, f"https://desk.invalid/t/{ticket.id}")
        return None

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        self.tickets[ref.id].comments.append(text)

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        self.tickets[ref.id].status = "resolved"
        self.tickets[ref.id].resolved_with = event.event

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        self.tickets[ref.id].status = "open"
        self.reopened.append(ref.id)

    async def poll(self, ref: TicketRef) -> DeskView:
        return self.view


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


def desk_for(store: StateStore, clock: Clock | None = None, **config: Any) -> MemoryDesk:
    upstream = MemoryUpstream.model_validate({"name": "desk", **config})
    context = AdapterContext(site="blr1", links=TicketLinks(store), clock=clock or Clock())
    return MemoryDesk(upstream, context)


def incident(seq: int = 1, severity: Severity = Severity.CRITICAL) -> Incident:
    return Incident(
        id="inc1",
        site="blr1",
        component="acd",
        kind="metrics",
        severity=severity,
        peak_severity=severity,
        state="open",
        production_loss=0.23,
        peak_loss=0.23,
        impact="23 of 100 agents cannot take calls (23.0%)",
        opened_at=1_795_000_000.0,
        updated_at=1_795_000_000.0,
        seq=seq,
    )


def event(kind: Event, seq: int) -> TicketEvent:
    body = event_body(incident(seq), kind)
    return TicketEvent("desk", "inc1", seq, kind.value, f"{body['dedup_key']}:{seq}", body)


def test_one_ticket_per_incident_whatever_is_delivered_twice(store: StateStore) -> None:
    desk = desk_for(store)

    async def run() -> None:
        await desk.deliver(event(Event.OPEN, 1))
        await desk.deliver(event(Event.OPEN, 1))  # a re-send after a crash
        await desk.deliver(event(Event.ESCALATION_LEVEL, 2))
        await desk.deliver(event(Event.RESOLVE, 3))

    asyncio.run(run())
    assert list(desk.tickets) == ["1"]
    ticket = desk.tickets["1"]
    assert ticket.priority == "P1"
    assert len(ticket.comments) == 1 and "escalation level" in ticket.comments[0]
    assert ticket.status == "resolved" and ticket.resolved_with == "resolve"
    link = store.run_sync(lambda c: links_table.get(c, "desk", "inc1"))
    assert link is not None and link.closed and link.ticket_id == "1"


def test_a_crash_between_the_desks_create_and_the_link_finds_the_ticket_again(
    store: StateStore,
) -> None:
    desk = desk_for(store)

    async def run() -> None:
        await desk.create(event(Event.OPEN, 1))  # the desk has it; ccwatch died before saving
        await desk.deliver(event(Event.OPEN, 1))

    asyncio.run(run())
    assert list(desk.tickets) == ["1"]


def test_the_first_event_a_desk_sees_may_be_an_escalation(store: StateStore) -> None:
    desk = desk_for(store, severities=["critical"])

    async def run() -> None:
        await desk.deliver(event(Event.ESCALATE, 2))
        await desk.deliver(event(Event.SLA_WARNING, 3))

    asyncio.run(run())
    # Created from the escalation (its description says it all), then one comment.
    assert len(desk.tickets) == 1 and len(desk.tickets["1"].comments) == 1


def test_a_resolve_never_creates_a_ticket_and_a_reopen_reopens(store: StateStore) -> None:
    desk = desk_for(store)
    links = TicketLinks(store)

    async def run() -> None:
        await desk.deliver(event(Event.RESOLVE, 2))
        assert desk.tickets == {}
        await desk.deliver(event(Event.OPEN, 3))
        await desk.deliver(event(Event.RESOLVE, 4))
        assert (await links.get("desk", "inc1")).closed  # type: ignore[union-attr]
        await desk.deliver(event(Event.REOPEN, 5))
        assert not (await links.get("desk", "inc1")).closed  # type: ignore[union-attr]

    asyncio.run(run())
    assert desk.reopened == ["1"] and desk.tickets["1"].status == "open"


def test_the_rate_limiter_keeps_any_minute_within_the_limit_and_a_429_pauses_it() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(3, clock=lambda: now[0], sleep=sleep)

    async def run() -> None:
        for _ in range(4):
            await limiter.acquire()
        limiter.pause(30)
        await limiter.acquire()

    asyncio.run(run())
    # Three at once, the fourth when the first leaves the 60 s window, then the 30 s pause:
    # never more than 3 in any minute.
    assert slept == [pytest.approx(60.0), pytest.approx(30.0)]


def test_what_acknowledges_follows_the_desks_config() -> None:
    reply = DeskView("open", Phase.IN_PROGRESS, first_response_at=5.0, responder="vendor")
    assigned = DeskView("new", Phase.NEW, assignee="tier1")
    assert acknowledges(reply, ["reply"]) == "vendor"
    assert acknowledges(assigned, ["reply"]) is None
    assert acknowledges(assigned, ["assign"]) == "tier1"
    assert acknowledges(DeskView("open", Phase.IN_PROGRESS), ["in_progress"]) == "open"
    assert acknowledges(DeskView("new", Phase.NEW), ["reply", "assign", "in_progress"]) is None


def test_the_reconciler_acknowledges_on_the_vendors_reply_and_answers_a_premature_solve(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    desk = desk_for(store, clock)
    links = TicketLinks(store)
    reconciler = Reconciler({"desk": desk}, links, service, CollectorRegistry(), clock=clock)

    async def run() -> str:
        await service.apply(service.observe("acd", CRITICAL, clock.now))
        (opened,) = await service.list_incidents("active")
        body = event_body(opened, Event.OPEN)
        await desk.deliver(
            TicketEvent("desk", opened.id, opened.seq, "open", f"{opened.dedup_key}:1", body)
        )
        assert await reconciler.poll_due("desk") == 1  # nothing new on the desk yet
        assert (await service.get(opened.id)).acknowledged_at is None  # type: ignore[union-attr]

        clock.now += 120
        desk.view = DeskView("open", Phase.IN_PROGRESS, clock.now - 30, "vendor-l1")
        assert await reconciler.poll_due("desk") == 1
        acked = await service.get(opened.id)
        assert acked is not None and acked.acknowledged_by == "desk:vendor-l1"

        clock.now += 120
        desk.view = DeskView("resolved", Phase.SOLVED, clock.now - 150, "vendor-l1")
        await reconciler.poll_due("desk")
        clock.now += 120
        await reconciler.poll_due("desk")  # still solved: no second comment, no loop
        return opened.id

    incident_id = asyncio.run(run())
    comments = desk.tickets["1"].comments
    assert len(comments) == 1 and "still sees this fault" in comments[0]
    timeline = store.run_sync(lambda c: repository.load_timeline(c, incident_id))
    changes = [entry.change for entry in timeline]
    assert changes.count("acknowledged") == 1 and changes.count("upstream_solved") == 1
    link = store.run_sync(lambda c: links_table.get(c, "desk", incident_id))
    assert link is not None and link.status == "resolved" and link.responder == "vendor-l1"


def test_notifications_carry_the_ticket_of_the_desk(store: StateStore) -> None:
    links = TicketLinks(store)
    pager = RecordingAdapter(name="pager")
    dispatcher = OutboxDispatcher(
        store, {"pager": pager}, registry=CollectorRegistry(), links=links
    )
    row_event = event(Event.ESCALATE, 2)

    async def run() -> None:
        await links.save("desk", "inc1", "42", "https://desk.invalid/t/42", 1.0)
        row = repository.OutboxRow(
            id=1,
            incident_id="inc1",
            upstream="pager",
            seq=2,
            event="escalate",
            idempotency_key=row_event.idempotency_key,
            body=row_event.body_bytes().decode(),
            created_at=0.0,
            attempts=0,
            next_attempt_at=0.0,
        )
        outcome = await dispatcher._attempt("pager", row)
        assert outcome.status == "delivered"

    asyncio.run(run())
    (sent,) = pager.delivered
    assert sent.body["tickets"] == [
        {"upstream": "desk", "id": "42", "url": "https://desk.invalid/t/42"}
    ]


def test_tickets_list_shows_each_desk_ticket_with_its_last_seen_status(
    tmp_path: Path, state_section: dict[str, Any]
) -> None:
    import yaml
    from click.testing import CliRunner

    from ccwatch.cli import cli

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({"site": "blr1", "state": state_section}))
    store = open_state(load_config(config_path).state)
    try:
        link = store.run_sync(
            lambda c: links_table.save(c, "rt", "0a1b2c3d", "42", "http://rt/42", 1.0)
        )
        store.run_sync(
            lambda c: links_table.observed(
                c,
                link,
                Seen(1_795_000_000.0, 1_795_000_060.0, status="stalled", phase="waiting"),
            )
        )
    finally:
        store.close()
    listed = CliRunner().invoke(cli, ["-c", str(config_path), "tickets", "list"])
    assert listed.exit_code == 0, listed.output
    assert "0a1b2c3d" in listed.output and "stalled" in listed.output
    assert "http://rt/42" in listed.output and "2026-11-18T" in listed.output
    as_json = CliRunner().invoke(
        cli, ["-c", str(config_path), "tickets", "list", "--desk", "--format", "json"]
    )
    (row,) = json.loads(as_json.output)
    assert (row["ticket_id"], row["status"], row["phase"]) == ("42", "stalled", "waiting")


def test_the_incident_page_links_each_desks_ticket_and_its_last_seen_status(
    tmp_path: Path, store: StateStore
) -> None:
    from types import SimpleNamespace

    from ccwatch.pages import data
    from ccwatch.pages.views import render

    clock = Clock()
    config = make_config(tmp_path)
    service = service_for(store, config, clock)
    links = TicketLinks(store)

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        await service.apply(service.observe("acd", CRITICAL, clock.now))
        (opened,) = await service.list_incidents("active")
        rt = await links.save(
            "rt", opened.id, "42", "https://rt.example/Ticket/Display.html?id=42", clock.now
        )
        await links.save("jira", opened.id, "CC-7", "javascript:alert(1)", clock.now)
        await links.observed(
            rt,
            Seen(
                polled_at=clock.now + 90,
                next_poll_at=clock.now + 150,
                status="stalled",
                phase="waiting",
                first_response_at=clock.now + 60,
                responder="vendor",
            ),
        )
        runtime = SimpleNamespace(store=store, config=config)
        page = await data.incident_page(runtime, opened.id, clock.now + 100)  # type: ignore[arg-type]
        assert page is not None
        return page, data.incident_json(page)

    page, as_json = asyncio.run(run())
    by_upstream = {t["upstream"]: t for t in as_json["desk_tickets"]}
    assert by_upstream["rt"]["status"] == "stalled" and by_upstream["rt"]["responder"] == "vendor"
    assert by_upstream["jira"]["url"] is None  # not an http(s) link: never rendered as one
    page["tickets"].setdefault("rt", [])
    page["tickets"].setdefault("jira", [])
    html = render("incident.html", site="blr1", **page)
    assert 'href="https://rt.example/Ticket/Display.html?id=42"' in html
    assert "stalled" in html and "first reply by vendor" in html
    assert "javascript:" not in html and "CC-7" in html


def test_an_acknowledgement_made_by_the_desk_is_not_echoed_back(store: StateStore) -> None:
    desk = desk_for(store)

    def ack(by: str, seq: int) -> TicketEvent:
        body = {**event_body(incident(seq), Event.ACKNOWLEDGE), "acknowledged_by": by}
        return TicketEvent("desk", "inc1", seq, "acknowledge", f"{body['dedup_key']}:{seq}", body)

    async def run() -> None:
        await desk.deliver(event(Event.OPEN, 1))
        await desk.deliver(ack("desk:vendor-l1", 2))  # the desk said so: it knows
        await desk.deliver(ack("asha", 3))  # an operator in ccwatch: worth a line

    asyncio.run(run())
    (comment,) = desk.tickets["1"].comments
    assert "acknowledge" in comment


@given(
    per_minute=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=80),
)
def test_no_minute_ever_holds_more_requests_than_the_limit(
    per_minute: int, gaps: list[float]
) -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(per_minute, clock=lambda: now[0], sleep=sleep)
    sent: list[float] = []

    async def run() -> None:
        for gap in gaps:
            now[0] += gap
            await limiter.acquire()
            sent.append(now[0])

    asyncio.run(run())
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 60.0) <= per_minute


def test_a_fleet_site_polls_only_the_tickets_of_its_own_incidents(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path), clock)
    links = TicketLinks(store)

    async def run() -> tuple[list[str], list[str], list[str]]:
        await service.apply(service.observe("acd", CRITICAL, clock.now))
        (ours,) = await service.list_incidents("active")
        await links.save("desk", ours.id, "1", None, clock.now)
        await links.save("desk", "someone-elses", "2", None, clock.now)  # no such incident here
        every = [t.ticket_id for t in await links.due("desk", clock.now + 1)]
        blr1 = [t.ticket_id for t in await links.due("desk", clock.now + 1, site="blr1")]
        del2 = [t.ticket_id for t in await links.due("desk", clock.now + 1, site="del2")]
        return every, blr1, del2

    every, blr1, del2 = asyncio.run(run())
    assert sorted(every) == ["1", "2"] and blr1 == ["1"] and del2 == []
