"""Zendesk desk adapter against a fake Zendesk built from its API reference
(tests/fakedesks/zendesk.py): one ticket per incident, idempotent create, comments,
solve, errors, polling and the reconciler with a real incident service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ccwatch.compose import open_state
from ccwatch.config import Config, validate_data
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.state import StateStore
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent
from ccwatch.tickets.adapters.zendesk import PRIORITIES, ZendeskAdapter, ZendeskUpstream
from ccwatch.tickets.desk import Phase, TicketRef
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.reconciler import Reconciler
from tests.fakedesks.saas import open_critical
from tests.fakedesks.zendesk import FakeZendesk
from tests.test_incidents_service import Clock, make_config, service_for
from tests.test_readme_examples import yaml_blocks
from tests.test_tickets_support import generic_body

TOKEN = "zdTOKEN-5ecret-0123456789abcdef"
INCIDENT = "0123456789abcdef0123456789abcdef"
DEDUP = f"ccwatch:blr1:acd:{INCIDENT}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_TEST_ZENDESK_TOKEN", TOKEN)


def adapter_for(fake: FakeZendesk, store: StateStore, **extra: Any) -> ZendeskAdapter:
    config = ZendeskUpstream.model_validate(
        {
            "type": "zendesk",
            "url": fake.url,
            "email": fake.email,
            "api_token_env": "CCWATCH_TEST_ZENDESK_TOKEN",
            **extra,
        }
    )
    return ZendeskAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))


def event(kind: str, seq: int, severity: str = "critical", **extra: Any) -> TicketEvent:
    body = generic_body(INCIDENT, seq, kind, severity=severity, **extra)
    return TicketEvent("zendesk", INCIDENT, seq, kind, f"{DEDUP}:{seq}", body)


def test_open_creates_one_ticket_with_priority_subject_and_reference(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store, group_id=77)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("open", 1))  # a redelivery changes nothing
            [ticket] = fake.tickets.values()
            f = ticket.fields
            assert (f["priority"], f["type"], f["status"], f["group_id"]) == (
                "urgent", "incident", "new", 77,
            )  # fmt: skip
            assert f["external_id"] == DEDUP and f["tags"] == ["ccwatch"]
            assert f["subject"].startswith("[ccwatch P1 CRITICAL] blr1/acd: 23 of 100")
            assert ticket.comments[0].public and f"Reference: {DEDUP}" in ticket.comments[0].body
            assert f"{DEDUP}:1" in fake.idempotency
            link = await adapter.links.get("zendesk", INCIDENT)
            assert link is not None and link.ticket_id == str(ticket.id)
            assert link.url == f"{fake.url}/agent/tickets/{ticket.id}"
            # Major and minor incidents get their own priorities.
            assert adapter.ticket_body(event("open", 1, "major"))["ticket"]["priority"] == "high"
            assert adapter.ticket_body(event("open", 1, "minor"))["ticket"]["priority"] == "normal"
            await adapter.aclose()

    asyncio.run(scenario())


def test_a_crash_between_create_and_link_still_leaves_one_ticket(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store)
            first = await adapter.create(event("open", 1))  # created; the link never saved
            # The retry of the same request is answered from the idempotency key.
            again = await adapter.create(event("open", 1))
            assert again == first and len(fake.tickets) == 1
            # Hours later the key is gone: the restart finds the ticket by external_id.
            fake.clock = lambda: __import__("time").time() + 3 * 3600
            await adapter.deliver(event("open", 1))
            assert len(fake.tickets) == 1 and fake.count("POST") == 2
            link = await adapter.links.get("zendesk", INCIDENT)
            assert link is not None and link.ticket_id == first.id
            await adapter.aclose()

    asyncio.run(scenario())


def test_later_events_comment_and_resolve_solves_with_the_summary(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("escalate", 2))
            await adapter.deliver(event("sla_breach", 3))
            resolution = {"duration_seconds": 3600, "peak_severity": "critical"}
            await adapter.deliver(event("resolve", 4, resolution=resolution))
            [ticket] = fake.tickets.values()
            later = ticket.comments[1:]
            assert [c.public for c in later] == [False, False, False]
            assert "ccwatch: escalate (event #2)" in later[0].body
            assert "sla breach (event #3)" in later[1].body
            assert ticket.fields["status"] == "solved"
            assert (
                "ccwatch: resolved" in later[2].body and "duration seconds: 3600" in later[2].body
            )
            link = await adapter.links.get("zendesk", INCIDENT)
            assert link is not None and link.closed
            await adapter.aclose()

    asyncio.run(scenario())


def test_expire_solves_and_a_closed_ticket_is_left_alone(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(event("open", 1))
            [ticket] = fake.tickets.values()
            await adapter.deliver(event("expire", 2))
            assert ticket.fields["status"] == "solved"
            assert "ccwatch: expire" in ticket.comments[-1].body
            # The vendor closed it meanwhile: solving again is a no-op, not a dead letter.
            fake.set_status(ticket.id, "closed")
            await adapter.resolve(TicketRef(str(ticket.id)), event("resolve", 3))
            # A still-failing comment on a closed ticket is dropped, not retried forever.
            await adapter.comment(TicketRef(str(ticket.id)), "still failing", None)
            assert len(ticket.comments) == 2
            await adapter.aclose()

    asyncio.run(scenario())


def test_429_pauses_the_desk_and_401_never_shows_the_token(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store)
            fake.throttle(1, retry_after=30)
            with pytest.raises(TemporaryUpstreamError) as caught:
                await adapter.deliver(event("open", 1))
            assert caught.value.retry_after == 30
            assert adapter.limiter.wait_needed() > 25
            await adapter.aclose()
        async with FakeZendesk(api_token="another-token") as fake:
            adapter = adapter_for(fake, store)
            with pytest.raises(PermanentUpstreamError) as refused:
                await adapter.deliver(event("open", 1))
            assert "HTTP 401" in str(refused.value) and TOKEN not in str(refused.value)
            assert not fake.tickets
            await adapter.aclose()

    asyncio.run(scenario())


def test_oauth_bearer_and_invalid_fields_are_refused_like_zendesk(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCWATCH_TEST_ZENDESK_OAUTH", "oauth-abc")

    async def scenario() -> None:
        async with FakeZendesk(oauth_token="oauth-abc") as fake:
            config = ZendeskUpstream.model_validate(
                {
                    "type": "zendesk",
                    "url": fake.url,
                    "oauth_token_env": "CCWATCH_TEST_ZENDESK_OAUTH",
                }
            )
            adapter = ZendeskAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))
            ref = await adapter.create(event("open", 1))
            assert ref.id in {str(t) for t in fake.tickets}
            # The fake validates like Zendesk: a bad priority is a 422, a dead letter.
            with pytest.raises(PermanentUpstreamError, match="HTTP 422"):
                await adapter.http.request(
                    "POST",
                    f"{fake.url}/api/v2/tickets.json",
                    json_body={"ticket": {"comment": {"body": "x"}, "priority": "P1"}},
                )
            await adapter.aclose()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="email"):
        ZendeskUpstream.model_validate(
            {"type": "zendesk", "url": "https://v.zendesk.com",
             "api_token_env": "CCWATCH_TEST_ZENDESK_TOKEN"}
        )  # fmt: skip


def test_poll_maps_status_and_finds_the_first_real_reply(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store)
            ref = await adapter.create(event("open", 1))
            ticket_id = int(ref.id)
            view = await adapter.poll(ref)
            assert (view.status, view.phase, view.first_response_at) == ("new", Phase.NEW, None)
            agent = fake.add_user("Asha Rao")
            # A trigger's comment and an agent's auto-acknowledgement do not count,
            # nor does an internal note.
            fake.reply(
                ticket_id, agent, "Thanks, a ticket was opened", channel="rule", rel="trigger"
            )
            fake.reply(
                ticket_id, agent, "This is an automated message: we have received your request"
            )
            fake.reply(ticket_id, agent, "checking logs", public=False)
            fake.set_status(ticket_id, "open")
            view = await adapter.poll(ref)
            assert (view.phase, view.first_response_at) == (Phase.IN_PROGRESS, None)
            fake.reply(ticket_id, agent, "Looking at the ACD now")
            fake.assign(ticket_id, agent)
            view = await adapter.poll(ref)
            assert view.responder == "Asha Rao" and view.assignee == "Asha Rao"
            assert view.first_response_at == pytest.approx(
                fake.tickets[ticket_id].comments[-1].created_at
            )
            fake.set_status(ticket_id, "pending")
            assert (await adapter.poll(ref)).phase is Phase.WAITING
            fake.set_status(ticket_id, "hold")
            assert (await adapter.poll(ref)).phase is Phase.IN_PROGRESS
            fake.set_status(ticket_id, "solved")
            assert (await adapter.poll(ref)).phase is Phase.SOLVED
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_vendors_reply_acknowledges_the_incident_through_the_service(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path, tickets=[]), clock)

    async def scenario() -> None:
        incident, open_event = await open_critical(service, clock.now, "zendesk")
        async with FakeZendesk(api_token=TOKEN) as fake:
            adapter = adapter_for(fake, store, acknowledge_on=["reply"])
            await adapter.deliver(open_event)
            [ticket] = fake.tickets.values()
            reconciler = Reconciler(
                {"zendesk": adapter}, adapter.links, service, CollectorRegistry()
            )
            agent = fake.add_user("Asha Rao")
            fake.reply(ticket.id, agent, "Auto-reply: we are on it", channel="rule", rel="trigger")
            assert await reconciler.poll_due("zendesk") == 1
            assert (await service.get(incident.id)).acknowledged_at is None  # type: ignore[union-attr]
            fake.reply(ticket.id, agent, "Asha here, restarting the ACD service")
            link = await adapter.links.get("zendesk", incident.id)
            assert link is not None
            await reconciler.reconcile(adapter, link)
            acked = await service.get(incident.id)
            assert acked is not None and acked.acknowledged_by == "zendesk:Asha Rao"
            link = await adapter.links.get("zendesk", incident.id)
            assert link is not None and link.responder == "Asha Rao" and link.phase == "in_progress"
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_ZENDESK_TOKEN", "secret-for-the-example")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "zendesk"]
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README zendesk example")
    assert config.tickets[0].priority("critical", PRIORITIES) == "urgent"
