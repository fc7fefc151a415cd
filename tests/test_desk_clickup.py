"""ClickUp desk adapter against a fake ClickUp built from its API reference
(tests/fakedesks/clickup.py): one task per incident found again by its reference field
or tag, comments, resolve, the per-token rate limit, polling and the reconciler with a
real incident service."""

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
from ccwatch.tickets.adapters.clickup import ClickUpAdapter, ClickUpUpstream, dedup_tag
from ccwatch.tickets.desk import Phase
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.reconciler import Reconciler
from tests.fakedesks.clickup import FakeClickUp
from tests.fakedesks.saas import open_critical
from tests.test_incidents_service import Clock, make_config, service_for
from tests.test_readme_examples import yaml_blocks
from tests.test_tickets_support import generic_body

TOKEN = "pk_4242_SECRETSECRETSECRET0123456789"
INCIDENT = "00112233445566778899aabbccddeeff"
DEDUP = f"ccwatch:blr1:acd:{INCIDENT}"
FIELD = "c0ffee00-1111-2222-3333-444455556666"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_TEST_CLICKUP_TOKEN", TOKEN)


def adapter_for(fake: FakeClickUp, store: StateStore, **extra: Any) -> ClickUpAdapter:
    config = ClickUpUpstream.model_validate(
        {
            "type": "clickup",
            "url": fake.url,
            "list_id": fake.list_id,
            "token_env": "CCWATCH_TEST_CLICKUP_TOKEN",
            **extra,
        }
    )
    return ClickUpAdapter(config, AdapterContext("blr1", links=TicketLinks(store)))


def event(kind: str, seq: int, severity: str = "critical", **extra: Any) -> TicketEvent:
    body = generic_body(INCIDENT, seq, kind, severity=severity, **extra)
    return TicketEvent("clickup", INCIDENT, seq, kind, f"{DEDUP}:{seq}", body)


def test_open_creates_one_task_with_priority_tags_and_reference(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN, text_fields=(FIELD,)) as fake:
            adapter = adapter_for(fake, store, reference_field_id=FIELD)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("open", 1))
            [task] = fake.tasks.values()
            f = task.fields
            assert (f["priority"], f["status"]) == (1, "to do")
            assert f["tags"] == ["ccwatch", dedup_tag(DEDUP)] and f["custom"] == {FIELD: DEDUP}
            assert f["name"].startswith("[ccwatch P1 CRITICAL] blr1/acd")
            assert f"Reference: {DEDUP}" in f["markdown_description"]
            link = await adapter.links.get("clickup", INCIDENT)
            assert link is not None and link.url == f"https://app.clickup.com/t/{task.id}"
            assert adapter.task_body(event("open", 1, "major"))["priority"] == 2
            assert adapter.task_body(event("open", 1, "minor"))["priority"] == 3
            await adapter.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("by_field", [True, False], ids=["custom-field", "tag"])
def test_a_crash_between_create_and_link_still_leaves_one_task(
    store: StateStore, by_field: bool
) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN, text_fields=(FIELD,)) as fake:
            extra = {"reference_field_id": FIELD} if by_field else {}
            adapter = adapter_for(fake, store, **extra)
            # Another incident whose reference contains this one's must not be taken.
            other = TicketEvent("clickup", "x", 1, "open", f"{DEDUP}0:1",
                                generic_body(INCIDENT + "0", 1, "open"))  # fmt: skip
            await adapter.create(other)
            first = await adapter.create(event("open", 1))  # created; the link never saved
            # Closed tasks are searched too: the vendor may have closed it already.
            fake.set_status(first.id, "complete")
            await adapter.deliver(event("open", 1))
            assert len(fake.tasks) == 2 and fake.count("POST", "/api/v2/list") == 2
            link = await adapter.links.get("clickup", INCIDENT)
            assert link is not None and link.ticket_id == first.id
            await adapter.aclose()

    asyncio.run(scenario())


def test_later_events_comment_and_resolve_completes_with_the_summary(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(event("open", 1))
            await adapter.deliver(event("deescalate", 2, severity="major"))
            await adapter.deliver(event("resolve", 3, resolution={"peak_severity": "critical"}))
            [task] = fake.tasks.values()
            texts = [c.text for c in task.comments]
            assert "ccwatch: deescalate (event #2)" in texts[0]
            assert "ccwatch: resolved" in texts[1] and "peak severity: critical" in texts[1]
            assert task.fields["status"] == "complete"
            await adapter.deliver(event("reopen", 4))
            assert (
                task.fields["status"] == "to do" and "reopen (event #4)" in task.comments[-1].text
            )
            await adapter.deliver(event("expire", 5))
            assert (
                task.fields["status"] == "complete" and "ccwatch: expire" in task.comments[-1].text
            )
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_per_token_rate_limit_pauses_the_desk_and_401_hides_the_token(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN, rate_limit=2) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(event("open", 1))  # find + create: the minute's 2 requests
            with pytest.raises(TemporaryUpstreamError) as caught:
                await adapter.deliver(event("escalate", 2))
            assert caught.value.retry_after is not None and 50 <= caught.value.retry_after <= 61
            assert adapter.limiter.wait_needed() > 50
            await adapter.aclose()
        monkeypatch.setenv("CCWATCH_TEST_CLICKUP_TOKEN", "pk_9_WRONGWRONGWRONG")
        async with FakeClickUp(TOKEN) as fake:
            adapter = adapter_for(fake, store)
            with pytest.raises(PermanentUpstreamError) as refused:
                await adapter.create(event("open", 1))
            assert "HTTP 401" in str(refused.value) and "OAUTH_025" in str(refused.value)
            assert "WRONGWRONG" not in str(refused.value) and TOKEN not in str(refused.value)
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_token_is_sent_without_bearer_and_bad_fields_are_refused(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN) as fake:
            adapter = adapter_for(fake, store, create_status="triage")
            with pytest.raises(PermanentUpstreamError, match="Status does not exist"):
                await adapter.create(event("open", 1))
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            with pytest.raises(PermanentUpstreamError, match="OAUTH_025"):
                await adapter.http.request("GET", f"{fake.url}/api/v2/user", headers=bearer)
            with pytest.raises(PermanentUpstreamError, match="Priority invalid"):
                await adapter.request("POST", f"/list/{fake.list_id}/task",
                                      json_body={"name": "x", "priority": 9})  # fmt: skip
            assert not fake.tasks
            await adapter.aclose()

    asyncio.run(scenario())


def test_poll_maps_status_types_and_the_oldest_reply_of_another_user(store: StateStore) -> None:
    async def scenario() -> None:
        async with FakeClickUp(TOKEN) as fake:
            adapter = adapter_for(fake, store, waiting_statuses=["Waiting on customer"])
            ref = await adapter.create(event("open", 1))
            view = await adapter.poll(ref)
            assert (view.status, view.phase, view.first_response_at) == ("to do", Phase.NEW, None)
            vendor = fake.add_user("Meera Iyer")
            base = 1_795_000_000_000
            fake.comment_as(
                ref.id, vendor, "Automated response: we have received your request", base
            )
            # More than one page of comments, newest first: the oldest real reply counts.
            fake.comment_as(ref.id, vendor, "Meera: on it, checking the trunk", base + 1000)
            for n in range(30):
                fake.comment_as(ref.id, fake.me, f"ccwatch update {n}", base + 2000 + n)
            fake.comment_as(ref.id, vendor, "found it", base + 5000)
            fake.set_status(ref.id, "in progress")
            fake.assign(ref.id, vendor)
            view = await adapter.poll(ref)
            assert (view.phase, view.responder, view.assignee) == (
                Phase.IN_PROGRESS, "Meera Iyer", "Meera Iyer",
            )  # fmt: skip
            assert view.first_response_at == pytest.approx((base + 1000) / 1000)
            # Once seen, the first response is not fetched again: one request a poll.
            before = len(fake.requests)
            fake.set_status(ref.id, "waiting on customer")
            assert (await adapter.poll(ref)).phase is Phase.WAITING
            assert len(fake.requests) == before + 1
            fake.set_status(ref.id, "complete")
            assert (await adapter.poll(ref)).phase is Phase.SOLVED
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_vendors_reply_acknowledges_the_incident_through_the_service(
    tmp_path: Path, store: StateStore
) -> None:
    clock = Clock()
    service = service_for(store, make_config(tmp_path, tickets=[]), clock)

    async def scenario() -> None:
        incident, open_event = await open_critical(service, clock.now, "clickup")
        async with FakeClickUp(TOKEN) as fake:
            adapter = adapter_for(fake, store)
            await adapter.deliver(open_event)
            [task] = fake.tasks.values()
            reconciler = Reconciler(
                {"clickup": adapter}, adapter.links, service, CollectorRegistry()
            )
            assert await reconciler.poll_due("clickup") == 1
            untouched = await service.get(incident.id)
            assert untouched is not None and untouched.acknowledged_at is None
            fake.comment_as(task.id, fake.add_user("Meera Iyer"), "Meera: looking now")
            link = await adapter.links.get("clickup", incident.id)
            assert link is not None
            await reconciler.reconcile(adapter, link)
            acked = await service.get(incident.id)
            assert acked is not None and acked.acknowledged_by == "clickup:Meera Iyer"
            await adapter.aclose()

    asyncio.run(scenario())


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_CLICKUP_TOKEN", "secret-for-the-example")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "clickup"]
    config: Config = validate_data(Config, {"site": "blr1", **example}, "README clickup example")
    assert config.tickets[0].requests_per_minute == 100
