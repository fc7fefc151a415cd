"""The Request Tracker desk adapter against a real RT 5 (tests/rt.py, session fixture
``rt_server``): one ticket per incident (also after a crash between RT's create and
ccwatch's link), comments, resolve/expire/reopen with RT's status read back, errors, the
poll mapping (vendor reply, auto-replies, RT's own EmailRecord, stalled, resolved,
rejected, owner) and the reconciler on a real incident service.

Each test uses incidents of its own (a fresh id), so they share the session's RT.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import open_state
from ccwatch.config import Config, validate_data
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.incidents.events import event_body
from ccwatch.incidents.vocabulary import Event
from ccwatch.state import StateStore
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent
from ccwatch.tickets.adapters.rt import PRIORITIES, RTAdapter, RTUpstream
from ccwatch.tickets.desk import Phase, TicketRef
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.reconciler import Reconciler
from tests.rt import RTServer
from tests.test_incidents_service import CRITICAL, Clock, make_config, observe, service_for
from tests.test_readme_examples import yaml_blocks
from tests.test_rt_server import search
from tests.test_tickets_support import generic_body

TOKEN_ENV = "CCWATCH_TEST_RT_TOKEN"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture
def rt(rt_server: RTServer, monkeypatch: pytest.MonkeyPatch) -> RTServer:
    monkeypatch.setenv(TOKEN_ENV, rt_server.ccwatch_token)
    return rt_server


def adapter_for(
    rt: RTServer, store: StateStore, clock: Clock | None = None, **extra: Any
) -> RTAdapter:
    config = RTUpstream.model_validate(
        {"type": "rt", "url": rt.base_url, "queue": rt.queue, "token_env": TOKEN_ENV, **extra}
    )
    context = AdapterContext("blr1", links=TicketLinks(store))
    if clock is not None:
        context.clock = clock
    return RTAdapter(config, context)


class Incident:
    """A fresh incident id and its events."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.dedup = f"ccwatch:blr1:acd:{self.id}"

    def event(self, kind: str, seq: int, severity: str = "critical", **extra: Any) -> TicketEvent:
        body = generic_body(self.id, seq, kind, severity=severity, **extra)
        return TicketEvent("rt", self.id, seq, kind, f"{self.dedup}:{seq}", body)


def tickets_of(rt: RTServer, key: str) -> list[str]:
    return [item["id"] for item in search(rt, key)["items"]]


def history(rt: RTServer, ticket_id: str) -> list[dict[str, Any]]:
    answer = rt.rest(
        "GET",
        f"ticket/{ticket_id}/history",
        params={"fields": "Type,Creator,Created,Field,OldValue,NewValue", "per_page": 100},
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def text_of(rt: RTServer, transaction_id: str) -> str:
    answer = rt.rest(
        "GET", f"transaction/{transaction_id}/attachments", params={"fields": "Content"}
    )
    return "\n".join(str(a.get("Content") or "") for a in answer.json()["items"])


def texts(rt: RTServer, ticket_id: str, kind: str) -> list[str]:
    return [text_of(rt, t["id"]) for t in history(rt, ticket_id) if t["Type"] == kind]


def status(rt: RTServer, ticket_id: str) -> str:
    return str(rt.rest("GET", f"ticket/{ticket_id}").json()["Status"])


def reply(rt: RTServer, ticket_id: str, text: str, user: str = "vendor") -> None:
    answer = rt.rest(
        "POST",
        f"ticket/{ticket_id}/correspond",
        user=user,
        json={"Content": text, "ContentType": "text/plain"},
    )
    assert answer.status_code == 201, answer.text


def set_fields(rt: RTServer, ticket_id: str, **fields: Any) -> None:
    answer = rt.rest("PUT", f"ticket/{ticket_id}", user="vendor", json=fields)
    assert answer.status_code == 200 and "isn't" not in answer.text, answer.text


def test_open_creates_one_ticket_with_priority_subject_and_dedup_key(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store, requestor="ccwatch@ccwatch.test")
        await adapter.deliver(incident.event("open", 1))
        await adapter.deliver(incident.event("open", 1))  # a redelivery: still one ticket
        link = await adapter.links.get("rt", incident.id)
        assert link is not None
        assert link.url == f"{rt.base_url}/Ticket/Display.html?id={link.ticket_id}"
        assert tickets_of(rt, incident.dedup) == [link.ticket_id]
        ticket = rt.rest("GET", f"ticket/{link.ticket_id}").json()
        assert ticket["Priority"] == "100" and ticket["Status"] == "new"
        assert ticket["Subject"].startswith("[ccwatch P1 CRITICAL] blr1/acd: 23 of 100 agents")
        assert [r["id"] for r in ticket["Requestor"]] == ["ccwatch"]
        assert [(cf["name"], cf["values"]) for cf in ticket["CustomFields"]] == [
            (rt.dedup_field, [incident.dedup])
        ]
        [created] = [t for t in history(rt, link.ticket_id) if t["Type"] == "Create"]
        assert created["Creator"]["id"] == rt.ccwatch_user
        assert f"Reference: {incident.dedup}" in text_of(rt, created["id"])
        # Major and minor: RT 5's Medium (50) and Low (0).
        assert adapter.ticket_body(incident.event("open", 1, "major"))["Priority"] == 50
        assert adapter.ticket_body(incident.event("open", 1, "minor"))["Priority"] == 0
        assert "Requestor" not in adapter_for(rt, store).ticket_body(incident.event("open", 1))
        await adapter.aclose()

    asyncio.run(scenario())


def test_a_crash_between_rts_create_and_the_link_still_leaves_one_ticket(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store)
        created = await adapter.create(incident.event("open", 1))  # RT has it; no link saved
        assert await adapter.links.get("rt", incident.id) is None
        # The restarted daemon delivers the open again: found by the custom field.
        restarted = adapter_for(rt, store)
        await restarted.deliver(incident.event("open", 1))
        await restarted.deliver(incident.event("escalate", 2))
        assert tickets_of(rt, incident.dedup) == [created.id]
        link = await restarted.links.get("rt", incident.id)
        assert link is not None and link.ticket_id == created.id
        assert len(texts(rt, created.id, "Comment")) == 1
        await adapter.aclose()
        await restarted.aclose()

    asyncio.run(scenario())


def test_later_events_comment_and_resolve_resolves_with_the_summary(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store)
        await adapter.deliver(incident.event("open", 1))
        link = await adapter.links.get("rt", incident.id)
        assert link is not None
        await adapter.deliver(incident.event("escalate", 2))
        await adapter.deliver(incident.event("sla_breach", 3))
        resolution = {"duration_seconds": 3600, "peak_severity": "critical"}
        await adapter.deliver(incident.event("resolve", 4, resolution=resolution))
        assert status(rt, link.ticket_id) == "resolved"
        comments = texts(rt, link.ticket_id, "Comment")
        assert len(comments) == 3 and texts(rt, link.ticket_id, "Correspond") == []
        assert "ccwatch: escalate (event #2)" in comments[0]
        assert "ccwatch: sla breach (event #3)" in comments[1]
        assert "ccwatch: resolved" in comments[2] and "duration seconds: 3600" in comments[2]
        assert "critical production loss on acd at blr1" in comments[2]
        changes = [
            (t["Creator"]["id"], t["OldValue"], t["NewValue"])
            for t in history(rt, link.ticket_id)
            if t["Type"] == "Status"
        ]
        assert changes == [("ccwatch", "new", "resolved")]
        closed = await adapter.links.get("rt", incident.id)
        assert closed is not None and closed.closed

        # A reopen sets it back to open with the event as a comment.
        await adapter.deliver(incident.event("reopen", 5))
        assert status(rt, link.ticket_id) == "open"
        assert "ccwatch: reopen (event #5)" in texts(rt, link.ticket_id, "Comment")[-1]
        reopened = await adapter.links.get("rt", incident.id)
        assert reopened is not None and not reopened.closed
        await adapter.aclose()

    asyncio.run(scenario())


def test_expire_resolves_and_public_replies_when_configured(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store, comment_as="correspond")
        await adapter.deliver(incident.event("open", 1))
        link = await adapter.links.get("rt", incident.id)
        assert link is not None
        # A correspondence on a new ticket: RT opens it, then ccwatch's status wins.
        await adapter.deliver(incident.event("expire", 2))
        assert status(rt, link.ticket_id) == "resolved"
        [said] = texts(rt, link.ticket_id, "Correspond")
        assert said.startswith("ccwatch: expire")
        assert texts(rt, link.ticket_id, "Comment") == []
        await adapter.aclose()

    asyncio.run(scenario())


def test_a_status_rt_refuses_is_a_permanent_error_and_a_solved_ticket_stays_solved(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store, resolve_status="closed")  # not in RT's lifecycle
        ref = await adapter.create(incident.event("open", 1))
        # RT answers 201 "Status 'closed' isn't a valid status": read back, not trusted.
        with pytest.raises(PermanentUpstreamError) as refused:
            await adapter.resolve(ref, incident.event("resolve", 2))
        assert "is 'new', not 'closed'" in str(refused.value)
        assert "isn't a valid status" in str(refused.value)
        assert status(rt, ref.id) == "new"
        # The vendor rejected the ticket meanwhile: resolving it is done, not an error.
        set_fields(rt, ref.id, Status="rejected")
        await adapter.resolve(ref, incident.event("resolve", 3))
        assert status(rt, ref.id) == "rejected"
        await adapter.aclose()

    asyncio.run(scenario())


def test_bad_token_is_permanent_and_never_shown_and_a_foreign_queue_is_refused(
    rt: RTServer, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident = Incident()
    bad = rt.ccwatch_token[:-4] + "0000"
    monkeypatch.setenv(TOKEN_ENV, bad)

    async def scenario() -> None:
        adapter = adapter_for(rt, store)
        with pytest.raises(PermanentUpstreamError) as refused:
            await adapter.deliver(incident.event("open", 1))
        message = str(refused.value)
        assert "HTTP 401" in message and "Unauthorized" in message
        assert bad not in message and rt.ccwatch_token not in message
        with pytest.raises(PermanentUpstreamError, match="HTTP 401"):
            await adapter.poll(TicketRef("1"))
        await adapter.aclose()

        monkeypatch.setenv(TOKEN_ENV, rt.ccwatch_token)
        general = adapter_for(rt, store, queue="General")
        with pytest.raises(PermanentUpstreamError, match=r"HTTP 403.*No permission"):
            await general.create(incident.event("open", 1))
        with pytest.raises(PermanentUpstreamError, match="HTTP 404"):
            await general.poll(TicketRef("999999"))
        await general.aclose()

    asyncio.run(scenario())
    assert tickets_of(rt, incident.dedup) == []


def test_a_throttling_proxy_in_front_of_rt_pauses_the_desk(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RT itself never answers 429; a reverse proxy in front of it may (nginx
    ``limit_req``), and a restarting one answers 503: both are retried."""
    from aiohttp import web

    token = "1-2-" + "a" * 32
    monkeypatch.setenv(TOKEN_ENV, token)
    answers = [(429, "30"), (503, None)]

    async def throttled(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"token {token}"
        status, retry_after = answers.pop(0)
        headers = {"Retry-After": retry_after} if retry_after else {}
        return web.json_response({"message": "busy"}, status=status, headers=headers)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", throttled)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        config = RTUpstream.model_validate(
            {"type": "rt", "url": f"http://127.0.0.1:{port}", "queue": "ccwatch",
             "token_env": TOKEN_ENV}
        )  # fmt: skip
        throttled_desk = RTAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))
        restarting_desk = RTAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))
        try:
            with pytest.raises(TemporaryUpstreamError) as caught:
                await throttled_desk.deliver(Incident().event("open", 1))
            assert caught.value.retry_after == 30 and token not in str(caught.value)
            assert throttled_desk.limiter.wait_needed() > 25  # polls and deliveries wait
            with pytest.raises(TemporaryUpstreamError, match="HTTP 503"):
                await restarting_desk.poll(TicketRef("7"))
        finally:
            await throttled_desk.aclose()
            await restarting_desk.aclose()
            await runner.cleanup()

    asyncio.run(scenario())


def test_a_dedup_field_rt_drops_is_reported_on_the_first_create(
    rt: RTServer, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    incident = Incident()

    async def scenario() -> None:
        adapter = adapter_for(rt, store, dedup_field="not_applied_here")
        with caplog.at_level(logging.ERROR, logger="ccwatch.tickets.adapters.rt"):
            await adapter.create(incident.event("open", 1))
            await adapter.create(incident.event("open", 1))
        await adapter.aclose()

    asyncio.run(scenario())
    [record] = [r for r in caplog.records if "not_applied_here" in r.getMessage()]
    assert "a crash between create and commit could open a second ticket" in record.getMessage()


def test_poll_maps_rts_statuses_and_finds_the_vendors_first_real_reply(
    rt: RTServer, store: StateStore
) -> None:
    incident = Incident()

    async def scenario() -> None:
        # With a requestor RT mails an auto-reply (an EmailRecord by RT_System).
        adapter = adapter_for(rt, store, requestor="ccwatch@ccwatch.test")
        ref = await adapter.create(incident.event("open", 1))
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.first_response_at, view.assignee) == (
            "new", Phase.NEW, None, None,
        )  # fmt: skip
        kinds = [(t["Type"], t["Creator"]["id"]) for t in history(rt, ref.id)]
        assert ("EmailRecord", "RT_System") in kinds  # RT's own auto-reply: not a reply

        # ccwatch's own correspondence and the vendor's auto-responder are not replies;
        # the latter opens the ticket (RT's scrip), which alone does not acknowledge.
        reply(rt, ref.id, "ccwatch: still failing", user="ccwatch")
        reply(rt, ref.id, "This is an automated message: we have received your request")
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.first_response_at) == (
            "open", Phase.IN_PROGRESS, None,
        )  # fmt: skip

        reply(rt, ref.id, "Looking at the ACD now.")
        reply(rt, ref.id, "Restarted the service.")
        vendor = [
            t for t in history(rt, ref.id)
            if t["Type"] == "Correspond" and t["Creator"]["id"] == "vendor"
        ]  # fmt: skip
        [_, first, _] = vendor  # the auto-reply, the first real reply, the next one
        assert "Looking" in text_of(rt, first["id"])
        view = await adapter.poll(ref)
        assert view.responder == "vendor"
        assert view.first_response_at == datetime.fromisoformat(first["Created"]).timestamp()

        set_fields(rt, ref.id, Status="stalled", Owner="vendor")
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.assignee) == ("stalled", Phase.WAITING, "vendor")
        assert view.responder == "vendor"  # remembered: one request a poll from now on
        set_fields(rt, ref.id, Status="resolved")
        assert (await adapter.poll(ref)).phase is Phase.SOLVED
        set_fields(rt, ref.id, Status="rejected")
        assert (await adapter.poll(ref)).phase is Phase.SOLVED
        set_fields(rt, ref.id, Status="open")
        assert (await adapter.poll(ref)).phase is Phase.IN_PROGRESS

        # A restarted adapter finds the same first reply again from RT's transactions.
        fresh = adapter_for(rt, store)
        again = await fresh.poll(ref)
        assert (again.first_response_at, again.responder) == (
            view.first_response_at, "vendor",
        )  # fmt: skip
        await adapter.aclose()
        await fresh.aclose()

    asyncio.run(scenario())


def test_the_vendors_reply_acknowledges_the_incident_through_the_service(
    rt: RTServer, tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path, tickets=[]), clock)

    async def scenario() -> None:
        await observe(service, CRITICAL, clock.now)
        [incident] = await service.list_incidents()
        body = event_body(incident, Event.OPEN)
        adapter = adapter_for(rt, store, clock)
        await adapter.deliver(
            TicketEvent("rt", incident.id, incident.seq, "open", f"{incident.dedup_key}:1", body)
        )
        link = await adapter.links.get("rt", incident.id)
        assert link is not None
        desks = {"rt": adapter}
        reconciler = Reconciler(desks, adapter.links, service, CollectorRegistry(), clock=clock)
        assert await reconciler.poll_due("rt") == 1
        reply(rt, link.ticket_id, "Auto-reply: out of office until Monday")
        clock.now += 120
        assert await reconciler.poll_due("rt") == 1
        still = await service.get(incident.id)
        assert still is not None and still.acknowledged_at is None  # opened, not answered
        reply(rt, link.ticket_id, "Vendor L1 here: restarting the ACD service")
        clock.now += 120
        assert await reconciler.poll_due("rt") == 1
        acked = await service.get(incident.id)
        assert acked is not None and acked.acknowledged_by == "rt:vendor"
        seen = await adapter.links.get("rt", incident.id)
        assert seen is not None and (seen.status, seen.phase, seen.responder) == (
            "open", "in_progress", "vendor",
        )  # fmt: skip
        await adapter.aclose()

    asyncio.run(scenario())


def test_config_needs_a_token_and_numeric_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "1-2-abc")
    base = {"type": "rt", "url": "https://rt.example.com", "queue": "ccwatch"}
    with pytest.raises(ValueError, match="token_env or token_file"):
        RTUpstream.model_validate(base)
    with pytest.raises(ValueError, match="RT's priority is a number"):
        RTUpstream.model_validate({**base, "token_env": TOKEN_ENV, "priorities": {"major": "High"}})
    config = RTUpstream.model_validate({**base, "token_env": TOKEN_ENV})
    assert config.priority("critical", PRIORITIES) == "100"
    assert (config.waiting_statuses, config.solved_statuses) == (
        ["stalled"],
        ["resolved", "rejected"],
    )
    assert config.acknowledge_on == ["reply", "assign"]


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_RT_TOKEN", "1-27-readme-example-token")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "rt"]
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README rt example")
    [upstream] = config.tickets
    assert isinstance(upstream, RTUpstream) and upstream.queue == "ccwatch"
