"""The servicenow desk against a local ServiceNow Table API built from ServiceNow's
reference (tests/fakedesks/servicenow.py), with real incidents, a real state store and
the reconciler."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ccwatch.config import Config
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.tickets.adapters.servicenow import ServiceNowUpstream, servicenow_time
from ccwatch.tickets.desk import DeskAdapter, Phase, TicketRef
from ccwatch.tickets.reconciler import Reconciler
from tests.fakedesks.harness import CLEAN, CRITICAL, MAJOR, MINOR, T0, Harness, variant
from tests.fakedesks.servicenow import GROUPS, USERS, FakeServiceNow
from tests.test_readme_examples import yaml_blocks

PASSWORD_ENV = "CCWATCH_TEST_SNOW_PASSWORD"
TOKEN_ENV = "CCWATCH_TEST_SNOW_TOKEN"
FRED = next(iter(USERS))
NETWORK = next(iter(GROUPS))


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServiceNow()
    monkeypatch.setenv(PASSWORD_ENV, fake.password)
    monkeypatch.setenv(TOKEN_ENV, fake.token)


def upstream(snow: FakeServiceNow, **extra: Any) -> dict[str, Any]:
    config = {
        "type": "servicenow",
        "url": snow.url,
        "username": snow.user,
        "password_env": PASSWORD_ENV,
        **extra,
    }
    if "token_env" in extra:
        del config["password_env"]
    return config


Scenario = Callable[[FakeServiceNow, Harness, DeskAdapter], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, **extra: Any) -> None:
    async def main() -> None:
        async with FakeServiceNow() as snow:
            harness = Harness(tmp_path, upstream(snow, **extra))
            snow.clock = harness.clock
            adapter = harness.adapter()
            try:
                await scenario(snow, harness, adapter)
                assert snow.ignored == []  # the Table API drops unknown fields silently
            finally:
                await adapter.aclose()
                harness.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("reading", "impact_urgency", "priority", "tag"),
    [
        (CRITICAL, ("1", "1"), "1", "P1 CRITICAL"),
        (MAJOR, ("1", "2"), "2", "P2 MAJOR"),
        (MINOR, ("2", "2"), "3", "P3 MINOR"),
    ],
)
def test_open_creates_one_incident_with_impact_urgency_and_correlation_id(
    tmp_path: Path, reading: Any, impact_urgency: tuple[str, str], priority: str, tag: str
) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(reading, T0)
        [opened] = await harness.drain(adapter)
        assert opened.event == "open"
        [record] = snow.incidents
        assert record["short_description"].startswith(f"[ccwatch {tag}] blr1/acd: ")
        assert len(record["short_description"]) <= 160
        assert (record["impact"], record["urgency"], record["priority"]) == (
            *impact_urgency,
            priority,
        )
        dedup = harness.incident().dedup_key
        assert (record["correlation_id"], record["correlation_display"]) == (dedup, "ccwatch")
        assert f"Reference: {dedup}" in record["description"]
        assert (record["caller_id"], record["assignment_group"]) == (FRED, NETWORK)
        link = await harness.links.get("servicenow", harness.incident().id)
        assert link is not None and link.ticket_id == record["sys_id"]
        assert link.url == f"{snow.url}/incident.do?sys_id={record['sys_id']}"

    run(tmp_path, scenario, caller_id=FRED, assignment_group=NETWORK)


def test_crash_between_create_and_link_finds_the_incident_by_correlation_id(
    tmp_path: Path,
) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = harness.pending()
        ref = await adapter.create(opened)  # created at the desk, then ccwatch died
        restarted = harness.adapter()
        try:
            await harness.drain(restarted)
        finally:
            await restarted.aclose()
        assert [r["sys_id"] for r in snow.incidents] == [ref.id]
        link = await harness.links.get("servicenow", opened.incident_id)
        assert link is not None and link.ticket_id == ref.id
        assert any("correlation_id%3Dccwatch" in path for _, path in snow.requests)

    run(tmp_path, scenario)


def test_later_events_are_work_notes_and_resolve_sets_state_close_code_and_notes(
    tmp_path: Path,
) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(MAJOR, T0)
        await harness.observe(CRITICAL, T0 + 5)
        await harness.drain(adapter)
        [record] = snow.incidents
        [note] = snow.journal(record["sys_id"])
        assert note["element"] == "work_notes" and note["sys_created_by"] == snow.user
        assert note["value"].startswith("ccwatch: escalate (event #2)")
        await harness.observe(CLEAN, T0 + 10)
        await harness.observe(CLEAN, T0 + 80)
        [resolved] = await harness.drain(adapter)
        assert resolved.event == "resolve"
        assert (record["state"], record["close_code"]) == ("6", "Solution provided")
        assert record["close_notes"].startswith("ccwatch: resolved")
        assert harness.incident().summary in record["close_notes"]
        link = await harness.links.get("servicenow", harness.incident().id)
        assert link is not None and link.closed
        # Resolving again (a retry after a lost answer) adds the summary as a note only.
        await adapter.resolve(TicketRef(record["sys_id"]), resolved)
        assert record["state"] == "6" and len(snow.journal(record["sys_id"])) == 2

    run(tmp_path, scenario)


def test_customer_visible_comments_expire_and_reopen(tmp_path: Path) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = await harness.drain(adapter)
        [record] = snow.incidents
        sys_id = record["sys_id"]
        expired = variant(opened, "expire", state="expired")
        await adapter.deliver(expired)
        assert (record["state"], record["close_code"]) == ("6", "Resolved by caller")
        assert record["close_notes"].startswith("ccwatch: expire")
        reopened = variant(expired, "reopen", state="open")
        await adapter.deliver(reopened)
        assert record["state"] == "2"
        [note] = snow.journal(sys_id)
        assert note["element"] == "comments" and note["value"].startswith("ccwatch: reopen")
        snow.set_state(sys_id, "7")
        with pytest.raises(PermanentUpstreamError, match="closed"):
            await adapter.reopen(TicketRef(sys_id), variant(reopened, "reopen"))
        before = len(snow.requests)
        await adapter.resolve(TicketRef(sys_id), variant(reopened, "resolve"))
        assert [m for m, _ in snow.requests[before:]] == ["GET"]  # closed: left alone

    run(tmp_path, scenario, comment_field="comments", close_code="Resolved by caller")


def test_429_pauses_the_desk_and_401_keeps_the_password_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = harness.pending()
        snow.throttle(1, retry_after=9)
        with pytest.raises(TemporaryUpstreamError) as caught:
            await adapter.deliver(opened)
        assert caught.value.retry_after == 9.0
        assert adapter.limiter.wait_needed() > 8.0
        assert snow.incidents == []

        wrong = "Wr0ng-Pa55word-for-ServiceNow"
        monkeypatch.setenv(PASSWORD_ENV, wrong)
        refused = harness.adapter()
        try:
            with pytest.raises(PermanentUpstreamError) as denied:
                await refused.deliver(opened)
        finally:
            await refused.aclose()
        message = str(denied.value)
        assert "HTTP 401" in message and "User Not Authenticated" in message
        basic = base64.b64encode(f"{snow.user}:{wrong}".encode()).decode()
        assert wrong not in message and basic not in message

    run(tmp_path, scenario)


def test_bearer_token_is_read_again_for_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "snow.token"
    token_file.write_text(FakeServiceNow().token + "\n")

    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        await harness.drain(adapter)
        assert len(snow.incidents) == 1
        token_file.write_text("an-expired-token-0000000000000000\n")  # the refresher's turn
        with pytest.raises(PermanentUpstreamError, match="HTTP 401") as denied:
            await adapter.poll(TicketRef(snow.incidents[0]["sys_id"]))
        assert "an-expired-token" not in str(denied.value)

    monkeypatch.delenv(TOKEN_ENV)
    run(tmp_path, scenario, token_env=None, token_file=str(token_file))


def test_poll_maps_states_hold_reasons_and_the_first_real_customer_visible_reply(
    tmp_path: Path,
) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(MAJOR, T0)
        await harness.observe(CRITICAL, T0 + 5)
        await harness.drain(adapter)  # the escalation is ccwatch's own customer-visible comment
        sys_id = snow.incidents[0]["sys_id"]
        ref = TicketRef(sys_id)
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.first_response_at) == ("New", Phase.NEW, None)

        snow.vendor_comment(
            sys_id, "Auto-reply: we have received your ticket", "fred.luddy", T0 + 30
        )
        snow.vendor_comment(
            sys_id, "checking with the ACD team", "fred.luddy", T0 + 40, "work_notes"
        )
        view = await adapter.poll(ref)
        assert view.first_response_at is None  # auto-reply, internal work note: none counts

        snow.set_state(sys_id, "3", hold_reason="1")
        snow.assign(sys_id, FRED)
        snow.vendor_comment(sys_id, "Please send the ACD log of 10:00.", "fred.luddy", T0 + 120)
        view = await adapter.poll(ref)
        assert (view.status, view.phase) == ("On Hold (Awaiting Caller)", Phase.WAITING)
        assert (view.first_response_at, view.responder) == (T0 + 120, "fred.luddy")
        assert view.assignee == "Fred Luddy"

        snow.set_state(sys_id, "3", hold_reason="4")  # awaiting their vendor: not on us
        assert (await adapter.poll(ref)).phase is Phase.IN_PROGRESS
        snow.set_state(sys_id, "2")
        assert (await adapter.poll(ref)).phase is Phase.IN_PROGRESS
        snow.set_state(sys_id, "6")
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.first_response_at) == (
            "Resolved",
            Phase.SOLVED,
            T0 + 120,
        )

    run(tmp_path, scenario, comment_field="comments")


def test_reconciler_acknowledges_the_incident_on_the_vendor_reply(tmp_path: Path) -> None:
    async def scenario(snow: FakeServiceNow, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        await harness.drain(adapter)
        sys_id = snow.incidents[0]["sys_id"]
        reconciler = Reconciler(
            {"servicenow": adapter},
            harness.links,
            harness.service,
            CollectorRegistry(),
            clock=harness.clock,
        )
        snow.vendor_comment(sys_id, "Out of office until Monday", "fred.luddy", T0 + 5)
        harness.clock.now = T0 + 10
        assert await reconciler.poll_due("servicenow") == 1
        assert harness.incident().acknowledged_at is None

        snow.vendor_comment(sys_id, "We are on it.", "fred.luddy", T0 + 65)
        harness.clock.now = T0 + 75
        assert await reconciler.poll_due("servicenow") == 1
        incident = harness.incident()
        assert incident.acknowledged_by == "servicenow:fred.luddy"
        link = await harness.links.get("servicenow", incident.id)
        assert link is not None and (link.first_response_at, link.status) == (T0 + 65, "New")
        before = len(snow.journal(sys_id, "work_notes"))
        delivered = await harness.drain(adapter)  # the desk's own ack is not echoed back
        assert [e.event for e in delivered] == ["acknowledge"]
        assert len(snow.journal(sys_id, "work_notes")) == before

    run(tmp_path, scenario)


def test_config_refusals_and_time_format() -> None:
    base = {"type": "servicenow", "url": "https://x.service-now.com", "username": "svc"}
    with pytest.raises(ValueError, match="either password_env"):
        ServiceNowUpstream.model_validate(base)
    with pytest.raises(ValueError, match="not both"):
        ServiceNowUpstream.model_validate(
            {**base, "password_env": PASSWORD_ENV, "token_env": TOKEN_ENV}
        )
    with pytest.raises(ValueError, match="not one of 1, 2, 3, 4, 5"):
        ServiceNowUpstream.model_validate(
            {**base, "password_env": PASSWORD_ENV, "priorities": {"critical": "P1"}}
        )
    assert servicenow_time("2026-11-18 11:06:40") == 1_795_000_000.0


def test_the_fake_refuses_what_servicenow_refuses() -> None:
    """The fake is only worth its passes if it fails what the platform fails."""

    async def main() -> None:
        async with FakeServiceNow() as snow, aiohttp.ClientSession() as session:
            table = f"{snow.url}/api/now/table/incident"
            headers = {"Accept": "application/json", "Authorization": f"Bearer {snow.token}"}
            async with session.post(table, json={"short_description": "x"}, headers=headers) as r:
                assert r.status == 201
                sys_id = (await r.json())["result"]["sys_id"]
            async with session.patch(
                f"{table}/{sys_id}", json={"state": "6"}, headers=headers
            ) as r:
                assert r.status == 403
                assert "Data Policy Exception" in (await r.json())["error"]["detail"]
            async with session.get(f"{table}/0123", headers=headers) as r:
                assert r.status == 404 and (await r.json())["status"] == "failure"
            async with session.get(table, headers={"Accept": "application/json"}) as r:
                assert r.status == 401
                assert (await r.json())["error"]["message"] == "User Not Authenticated"

    asyncio.run(main())


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_SERVICENOW_PASSWORD", "readme-example-password")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "servicenow"]
    config = Config.model_validate({"site": "blr1", **example})
    [snow] = config.tickets
    assert isinstance(snow, ServiceNowUpstream) and snow.waiting_hold_reasons == ["1"]
