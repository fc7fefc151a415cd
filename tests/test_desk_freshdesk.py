"""Freshdesk desk adapter against a fake Freshdesk built from its API reference
(tests/fakedesks/freshdesk.py): one ticket per incident found again by its tag (ticket
list first, the eventually consistent search after), notes, resolve, errors, polling and
the reconciler with a real incident service."""

from __future__ import annotations

import asyncio
import time
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
from ccwatch.tickets.adapters.freshdesk import (
    FreshdeskAdapter,
    FreshdeskUpstream,
    dedup_tag,
)
from ccwatch.tickets.desk import Phase
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.reconciler import Reconciler
from tests.fakedesks.freshdesk import FakeFreshdesk
from tests.fakedesks.saas import open_critical
from tests.test_incidents_service import Clock, make_config, service_for
from tests.test_readme_examples import yaml_blocks
from tests.test_tickets_support import generic_body

KEY = "fdKEY0123456789abcdefSECRET"
INCIDENT = "fedcba9876543210fedcba9876543210"
DEDUP = f"ccwatch:blr1:acd:{INCIDENT}"
REQUESTER = "ccwatch@site.example.com"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_TEST_FRESHDESK_KEY", KEY)


def adapter_for(fake: FakeFreshdesk, store: StateStore, **extra: Any) -> FreshdeskAdapter:
    config = FreshdeskUpstream.model_validate(
        {
            "type": "freshdesk",
            "url": fake.url,
            "api_key_env": "CCWATCH_TEST_FRESHDESK_KEY",
            "requester_email": REQUESTER,
            **extra,
        }
    )
    return FreshdeskAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))


def event(kind: str, seq: int, severity: str = "critical", **extra: Any) -> TicketEvent:
    body = generic_body(INCIDENT, seq, kind, severity=severity, **extra)
    return TicketEvent("freshdesk", INCIDENT, seq, kind, f"{DEDUP}:{seq}", body)


def test_open_creates_one_ticket_with_priority_tags_and_reference(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY, custom_fields=("cf_ccwatch_reference",)) as fake:
            adapter = adapter_for(
                fake, store, group_id=42, ticket_type="Incident",
                reference_field="cf_ccwatch_reference",
            )  # fmt: skip
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("open", 1))
            [ticket] = fake.tickets.values()
            f = ticket.fields
            assert (f["priority"], f["status"], f["source"], f["group_id"], f["type"]) == (
                4, 2, 2, 42, "Incident",
            )  # fmt: skip
            assert f["tags"] == ["ccwatch", dedup_tag(DEDUP)] and len(dedup_tag(DEDUP)) <= 32
            assert f["requester_id"] == fake.contacts[REQUESTER]
            assert f["custom_fields"] == {"cf_ccwatch_reference": DEDUP}
            assert f["subject"].startswith("[ccwatch P1 CRITICAL] blr1/acd")
            assert f"Reference: {DEDUP}<br>" in f["description"] and f["description"].startswith(
                "<div>"
            )
            link = await adapter.links.get("freshdesk", INCIDENT)
            assert link is not None and link.url == f"{fake.url}/a/tickets/{ticket.id}"
            assert adapter.ticket_body(event("open", 1, "major"))["priority"] == 3
            assert adapter.ticket_body(event("open", 1, "minor"))["priority"] == 2
            await adapter.aclose()

    asyncio.run(scenario())


def test_a_crash_after_create_is_found_by_list_before_search_indexes_it(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            first = await adapter.create(event("open", 1))  # the link never saved
            assert not fake.indexed  # the search index has not seen it yet
            await adapter.deliver(event("open", 1))
            assert len(fake.tickets) == 1 and fake.count("POST", "/api/v2/tickets") == 1
            link = await adapter.links.get("freshdesk", INCIDENT)
            assert link is not None and link.ticket_id == first.id
            await adapter.aclose()

    asyncio.run(scenario())


def test_a_ticket_outside_the_list_is_found_by_search_once_indexed(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            ref = await adapter.create(event("open", 1))
            # An agent moved it to another requester: the list no longer shows it.
            fake.tickets[int(ref.id)].fields["requester_id"] = 1
            assert await adapter.find(event("open", 1)) is None  # not indexed yet
            fake.clock = lambda: time.time() + 600  # minutes later the index has it
            assert await adapter.find(event("open", 1)) == ref
            await adapter.aclose()

    asyncio.run(scenario())


def test_later_events_add_private_notes_and_resolve_sets_resolved(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("escalate", 2))
            await adapter.deliver(event("resolve", 3, resolution={"duration_seconds": 600}))
            [ticket] = fake.tickets.values()
            notes = ticket.conversations
            assert [n.private for n in notes] == [True, True]
            assert "ccwatch: escalate (event #2)" in notes[0].body
            assert ticket.fields["status"] == 4
            assert "ccwatch: resolved" in notes[1].body and "duration seconds: 600" in notes[1].body
            await adapter.aclose()

    asyncio.run(scenario())


def test_expire_closes_when_configured_and_public_notes(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store, resolve_status=5, public_notes=True)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("expire", 2))
            [ticket] = fake.tickets.values()
            assert ticket.fields["status"] == 5
            assert [n.private for n in ticket.conversations] == [False]
            assert "ccwatch: expire" in ticket.conversations[0].body
            await adapter.aclose()

    asyncio.run(scenario())


def test_429_pauses_the_desk_and_401_never_shows_the_key(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            fake.throttle(1, retry_after=45)
            with pytest.raises(TemporaryUpstreamError) as caught:
                await adapter.deliver(event("open", 1))
            assert caught.value.retry_after == 45 and adapter.limiter.wait_needed() > 40
            await adapter.aclose()
        async with FakeFreshdesk("some-other-key") as fake:
            adapter = adapter_for(fake, store)
            with pytest.raises(PermanentUpstreamError) as refused:
                await adapter.deliver(event("open", 1))
            message = str(refused.value)
            assert "HTTP 401" in message and "invalid_credentials" in message and KEY not in message
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_fake_refuses_what_freshdesk_refuses(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            bad = {**adapter.ticket_body(event("open", 1)), "severity": "P1"}
            with pytest.raises(PermanentUpstreamError, match="invalid_field"):
                await adapter.http.request("POST", f"{fake.url}/api/v2/tickets", json_body=bad)
            no_requester = {
                k: v for k, v in adapter.ticket_body(event("open", 1)).items() if k != "email"
            }
            with pytest.raises(
                PermanentUpstreamError, match="Please fill at least 1 of requester_id"
            ):
                await adapter.http.request(
                    "POST", f"{fake.url}/api/v2/tickets", json_body=no_requester
                )
            long_tag = {**adapter.ticket_body(event("open", 1)), "tags": ["ccwatch:" + DEDUP]}
            with pytest.raises(PermanentUpstreamError, match="invalid_size"):
                await adapter.http.request("POST", f"{fake.url}/api/v2/tickets", json_body=long_tag)
            assert not fake.tickets
            await adapter.aclose()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="requester"):
        FreshdeskUpstream.model_validate(
            {
                "type": "freshdesk",
                "url": "https://v.freshdesk.com",
                "api_key_env": "CCWATCH_TEST_FRESHDESK_KEY",
            }
        )


def test_poll_maps_status_and_the_first_real_agent_reply(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            ref = await adapter.create(event("open", 1))
            ticket_id = int(ref.id)
            view = await adapter.poll(ref)
            assert (view.status, view.phase, view.first_response_at) == ("open", Phase.NEW, None)
            agent = fake.add_agent("Ravi Kumar")
            fake.reply(ticket_id, agent, "Out of office until Monday")  # an auto-reply
            fake.reply(ticket_id, agent, "checking the dialer", private=True, note=True)
            fake.reply(ticket_id, fake.me, "ccwatch's own public note", note=True)
            fake.reply(ticket_id, 7, "customer wrote back", incoming=True)
            view = await adapter.poll(ref)
            assert (view.phase, view.first_response_at) == (Phase.NEW, None)
            fake.reply(ticket_id, agent, "We are restarting the dialer now")
            fake.assign(ticket_id, agent)
            view = await adapter.poll(ref)
            assert (view.phase, view.responder, view.assignee) == (
                Phase.IN_PROGRESS, "Ravi Kumar", "Ravi Kumar",
            )  # fmt: skip
            assert view.first_response_at == pytest.approx(
                fake.tickets[ticket_id].conversations[-1].created_at, abs=1
            )
            fake.set_status(ticket_id, 3)
            assert (await adapter.poll(ref)).phase is Phase.WAITING
            fake.set_status(ticket_id, 5)
            view = await adapter.poll(ref)
            assert (view.status, view.phase) == ("closed", Phase.SOLVED)
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_vendors_reply_acknowledges_the_incident_through_the_service(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path, tickets=[]), clock)

    async def scenario() -> None:
        incident, open_event = await open_critical(service, clock.now, "freshdesk")
        async with FakeFreshdesk(KEY) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(open_event)
            [ticket] = fake.tickets.values()
            reconciler = Reconciler(
                {"freshdesk": adapter}, adapter.links, service, CollectorRegistry()
            )
            assert await reconciler.poll_due("freshdesk") == 1
            untouched = await service.get(incident.id)
            assert untouched is not None and untouched.acknowledged_at is None
            agent = fake.add_agent("Ravi Kumar")
            fake.reply(ticket.id, agent, "Ravi here, on it")
            link = await adapter.links.get("freshdesk", incident.id)
            assert link is not None
            await reconciler.reconcile(adapter, link)
            acked = await service.get(incident.id)
            assert acked is not None and acked.acknowledged_by == "freshdesk:Ravi Kumar"
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_FRESHDESK_KEY", "secret-for-the-example")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "freshdesk"]
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README freshdesk example")
    assert config.tickets[0].requester_email == "ccwatch@site.example.com"
