"""The jira desk against a local Jira Cloud built from Atlassian's REST API v3 reference
(tests/fakedesks/jira.py), with real incidents, a real state store and the reconciler."""

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
from ccwatch.tickets.adapters.jira import JiraUpstream, adf, adf_text, dedup_label
from ccwatch.tickets.desk import DeskAdapter, Phase, TicketRef
from ccwatch.tickets.reconciler import Reconciler
from tests.fakedesks.harness import CLEAN, CRITICAL, MAJOR, MINOR, T0, Harness, variant
from tests.fakedesks.jira import FakeJira, User, adf_plain
from tests.test_readme_examples import yaml_blocks

TOKEN_ENV = "CCWATCH_TEST_JIRA_TOKEN"
AGENT = User("712020:agent-priya", "Priya (Vendor L1)")
AUTOMATION = User("557058:automation", "Automation for Jira", account_type="app")


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, FakeJira().token)


def upstream(jira: FakeJira, **extra: Any) -> dict[str, Any]:
    return {
        "type": "jira",
        "url": jira.url,
        "project": "CC",
        "issue_type": "Incident",
        "email": jira.email,
        "api_token_env": TOKEN_ENV,
        **extra,
    }


Scenario = Callable[[FakeJira, Harness, DeskAdapter], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, **extra: Any) -> None:
    async def main() -> None:
        async with FakeJira() as jira:
            harness = Harness(tmp_path, upstream(jira, **extra))
            jira.clock = harness.clock
            adapter = harness.adapter()
            try:
                await scenario(jira, harness, adapter)
            finally:
                await adapter.aclose()
                harness.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("reading", "priority", "tag"),
    [
        (CRITICAL, "Highest", "P1 CRITICAL"),
        (MAJOR, "High", "P2 MAJOR"),
        (MINOR, "Medium", "P3 MINOR"),
    ],
)
def test_open_creates_one_issue_with_summary_priority_adf_description_and_dedup_label(
    tmp_path: Path, reading: Any, priority: str, tag: str
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(reading, T0)
        [opened] = await harness.drain(adapter)
        assert opened.event == "open"
        [issue] = jira.issues.values()
        fields = issue.fields
        assert fields["project"] == {"key": "CC"} and fields["issuetype"] == {"name": "Incident"}
        assert fields["summary"].startswith(f"[ccwatch {tag}] blr1/acd: ")
        assert reading.impact in fields["summary"]
        assert fields["priority"] == {"name": priority}
        dedup = harness.incident().dedup_key
        assert set(fields["labels"]) == {"ccwatch", dedup_label(dedup)}
        text = adf_plain(fields["description"])
        assert f"Reference: {dedup}" in text and "Severity:" in text
        link = await harness.links.get("jira", harness.incident().id)
        assert link is not None and link.ticket_id == issue.key
        assert link.url == f"{jira.url}/browse/{issue.key}"
        # Jira has no idempotent create: the adapter searched (the enhanced search) first.
        assert ("POST", "/rest/api/3/search/jql") in jira.requests
        assert ("POST", "/rest/api/3/search") not in jira.requests

    run(tmp_path, scenario)


def test_crash_between_create_and_link_finds_the_issue_instead_of_a_second(
    tmp_path: Path,
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = harness.pending()
        ref = await adapter.create(opened)  # created at the desk, then ccwatch died
        assert await harness.links.get("jira", opened.incident_id) is None
        restarted = harness.adapter()
        try:
            await harness.drain(restarted)
        finally:
            await restarted.aclose()
        assert list(jira.issues) == [ref.id]
        link = await harness.links.get("jira", opened.incident_id)
        assert link is not None and link.ticket_id == ref.id

    run(tmp_path, scenario)


def test_later_events_comment_and_resolve_transitions_with_resolution_and_summary(
    tmp_path: Path,
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(MAJOR, T0)
        await harness.observe(CRITICAL, T0 + 5)
        await harness.drain(adapter)
        [issue] = jira.issues.values()
        # The open created the issue; the escalation (delivered after) is a comment.
        [escalated] = [adf_plain(c["body"]) for c in issue.comments]
        assert escalated.startswith("ccwatch: escalate (event #2)")
        assert "Severity: critical (P1)" in escalated
        await harness.observe(CLEAN, T0 + 10)
        await harness.observe(CLEAN, T0 + 80)
        events = await harness.drain(adapter)
        assert [e.event for e in events] == ["resolve"]
        assert issue.status == "Resolved" and issue.resolution == "Done"
        assert issue.transitions == ["Resolve this issue"]
        summary = adf_plain(issue.comments[-1]["body"])
        assert summary.startswith("ccwatch: resolved") and harness.incident().summary in summary
        link = await harness.links.get("jira", harness.incident().id)
        assert link is not None and link.closed
        # A second resolve (a retry after a lost answer) finds the issue done: comment only.
        await adapter.resolve(TicketRef(issue.key), events[0])
        assert issue.transitions == ["Resolve this issue"] and len(issue.comments) == 3

    run(tmp_path, scenario)


def test_expire_resolves_and_reopen_transitions_back(tmp_path: Path) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = await harness.drain(adapter)
        [issue] = jira.issues.values()
        expired = variant(opened, "expire", state="expired")
        await adapter.deliver(expired)
        assert issue.status == "Resolved" and issue.transitions == ["Resolve this issue"]
        assert adf_plain(issue.comments[-1]["body"]).startswith("ccwatch: expire")
        reopened = variant(expired, "reopen", state="open")
        await adapter.deliver(reopened)
        assert issue.status == "Open" and issue.transitions[-1] == "Reopen"
        assert adf_plain(issue.comments[-1]["body"]).startswith("ccwatch: reopen")
        link = await harness.links.get("jira", opened.incident_id)
        assert link is not None and not link.closed

    run(tmp_path, scenario, resolution="Done")


def test_internal_comments_are_service_management_internal_notes(tmp_path: Path) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(MAJOR, T0)
        await harness.observe(CRITICAL, T0 + 5)
        await harness.drain(adapter)
        [issue] = jira.issues.values()
        [note] = issue.comments
        assert note["jsdPublic"] is False

    run(tmp_path, scenario, comment_visibility="internal")


def test_resolve_without_a_matching_transition_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = await harness.drain(adapter)
        with pytest.raises(PermanentUpstreamError, match="none of the resolve transitions"):
            await adapter.resolve(TicketRef(next(iter(jira.issues))), variant(opened, "resolve"))

    run(tmp_path, scenario, resolve_transitions=["Close it"])


def test_429_pauses_the_desk_with_retry_after_and_401_keeps_the_token_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        [opened] = harness.pending()
        jira.throttle(1, retry_after=7)
        with pytest.raises(TemporaryUpstreamError) as caught:
            await adapter.deliver(opened)
        assert caught.value.retry_after == 7.0
        assert adapter.limiter.wait_needed() > 6.0  # the desk is paused, polling included
        assert jira.issues == {}

        wrong = "ATATT3xFfGF0-wrong-token-9876543210abcdef"
        monkeypatch.setenv(TOKEN_ENV, wrong)
        refused = harness.adapter()
        try:
            with pytest.raises(PermanentUpstreamError) as denied:
                await refused.deliver(opened)
        finally:
            await refused.aclose()
        message = str(denied.value)
        assert "HTTP 401" in message
        basic = base64.b64encode(f"{jira.email}:{wrong}".encode()).decode()
        assert wrong not in message and basic not in message and wrong[4:-4] not in message

    run(tmp_path, scenario)


def test_poll_maps_status_categories_waiting_and_the_first_real_public_reply(
    tmp_path: Path,
) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        await harness.drain(adapter)
        key = next(iter(jira.issues))
        ref = TicketRef(key)
        view = await adapter.poll(ref)
        assert (view.status, view.phase, view.first_response_at) == ("Open", Phase.NEW, None)

        jira.vendor_comment(key, "Automatic reply: we have received your request.", AGENT, T0 + 30)
        jira.vendor_comment(key, "Ticket triaged by rule P1-route", AUTOMATION, T0 + 40)
        jira.vendor_comment(key, "internal: looks like the ACD again", AGENT, T0 + 50, public=False)
        view = await adapter.poll(ref)
        assert view.first_response_at is None  # auto-reply, app, internal note: none counts

        jira.set_status(key, "Waiting for customer")
        jira.assign(key, AGENT)
        jira.vendor_comment(key, "Can you send the ACD log of 10:00?", AGENT, T0 + 120)
        view = await adapter.poll(ref)
        assert (view.status, view.phase) == ("Waiting for customer", Phase.WAITING)
        assert view.first_response_at == T0 + 120 and view.responder == "Priya (Vendor L1)"
        assert view.assignee == "Priya (Vendor L1)"

        jira.set_status(key, "In Progress")
        assert (await adapter.poll(ref)).phase is Phase.IN_PROGRESS
        jira.set_status(key, "Resolved")
        view = await adapter.poll(ref)
        assert (view.phase, view.first_response_at) == (Phase.SOLVED, T0 + 120)

    run(tmp_path, scenario)


def test_first_reply_beyond_the_embedded_comments_is_found_by_paging(tmp_path: Path) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(MAJOR, T0)
        await harness.observe(CRITICAL, T0 + 5)
        await harness.observe(MAJOR, T0 + 80)
        await harness.drain(adapter)  # open + two comments by ccwatch
        key = next(iter(jira.issues))
        jira.vendor_comment(key, "Out of office until Monday", AGENT, T0 + 100)
        jira.vendor_comment(key, "We are on it.", AGENT, T0 + 200)
        jira.embedded_comments = 2
        view = await adapter.poll(TicketRef(key))
        assert (view.first_response_at, view.responder) == (T0 + 200, "Priya (Vendor L1)")
        assert ("GET", f"/rest/api/3/issue/{key}/comment") in jira.requests

    run(tmp_path, scenario)


def test_reconciler_acknowledges_the_incident_on_the_vendor_reply(tmp_path: Path) -> None:
    async def scenario(jira: FakeJira, harness: Harness, adapter: DeskAdapter) -> None:
        await harness.observe(CRITICAL, T0)
        await harness.drain(adapter)
        key = next(iter(jira.issues))
        reconciler = Reconciler(
            {"jira": adapter},
            harness.links,
            harness.service,
            CollectorRegistry(),
            clock=harness.clock,
        )
        jira.vendor_comment(key, "This is an automated message: ticket received", AGENT, T0 + 5)
        harness.clock.now = T0 + 10
        assert await reconciler.poll_due("jira") == 1
        assert harness.incident().acknowledged_at is None

        jira.vendor_comment(key, "Looking at the ACD now.", AGENT, T0 + 65)
        harness.clock.now = T0 + 75  # the next poll is due a poll_interval (1m) later
        assert await reconciler.poll_due("jira") == 1
        incident = harness.incident()
        assert incident.acknowledged_by == "jira:Priya (Vendor L1)"
        link = await harness.links.get("jira", incident.id)
        assert link is not None and link.first_response_at == T0 + 65
        assert (link.status, link.phase, link.responder) == ("Open", "new", "Priya (Vendor L1)")
        # The acknowledgement came from this desk: it is not echoed back as a comment.
        before = len(jira.issues[key].comments)
        delivered = await harness.drain(adapter)
        assert [e.event for e in delivered] == ["acknowledge"]
        assert len(jira.issues[key].comments) == before

    run(tmp_path, scenario)


def test_adf_round_trip_and_config_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = adf("line one\nline two\n\n  indented log line\n")
    assert doc["content"][0]["content"][1] == {"type": "hardBreak"}
    assert adf_text(doc) == "line one\nline two\n  indented log line"
    assert dedup_label("ccwatch:blr1:acd:01J") == dedup_label("ccwatch:blr1:acd:01J")
    assert " " not in dedup_label("a b:c") and ":" not in dedup_label("a b:c")
    base = {"type": "jira", "url": "https://x.atlassian.net", "email": "a@b.c"}
    with pytest.raises(ValueError, match="api_token_env or api_token_file"):
        JiraUpstream.model_validate({**base, "project": "CC"})
    with pytest.raises(ValueError, match="not a Jira project key"):
        JiraUpstream.model_validate({**base, "project": "cc 1", "api_token_env": TOKEN_ENV})
    with pytest.raises(ValueError, match="no spaces"):
        JiraUpstream.model_validate(
            {**base, "project": "CC", "api_token_env": TOKEN_ENV, "labels": ["two words"]}
        )


def test_the_fake_refuses_what_jira_refuses(tmp_path: Path) -> None:
    """The fake is only worth its passes if it fails what Jira fails."""

    async def main() -> None:
        async with FakeJira() as jira, aiohttp.ClientSession() as session:
            auth = {
                "Authorization": "Basic "
                + base64.b64encode(f"{jira.email}:{jira.token}".encode()).decode()
            }
            api = f"{jira.url}/rest/api/3"
            fields = {
                "project": {"key": "CC"},
                "issuetype": {"name": "Task"},
                "summary": "two\nlines",
                "description": "plain text is v2, not v3",
                "priority": {"name": "P1"},
                "labels": ["has space"],
                "customfield_1": "x",
            }
            async with session.post(f"{api}/issue", json={"fields": fields}, headers=auth) as r:
                assert r.status == 400
                errors = (await r.json())["errors"]
            assert set(errors) == {"summary", "description", "priority", "labels", "customfield_1"}
            async with session.post(f"{api}/search", json={"jql": "x"}, headers=auth) as r:
                assert r.status == 410
            body = {"jql": 'project = "CC" AND labels = "x"', "startAt": 0}
            async with session.post(f"{api}/search/jql", json=body, headers=auth) as r:
                assert r.status == 400
            async with session.get(f"{api}/myself") as r:
                assert r.status == 401

    asyncio.run(main())


def test_the_readme_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_JIRA_API_TOKEN", "ATATT3xFfGF0-readme-example-token")
    [example] = [b for b in yaml_blocks("tickets") if b["tickets"][0]["type"] == "jira"]
    config = Config.model_validate({"site": "blr1", **example})
    [jira] = config.tickets
    assert isinstance(jira, JiraUpstream) and jira.resolution == "Done"
