"""PagerDuty, Alertmanager and e-mail adapters against real peers.

- PagerDuty: a local receiver that validates requests as the Events API v2 documents
  them (required fields, enums, length limits) and answers as it does (202 / 400).
- Alertmanager: the real ``prometheus-alertmanager`` on a free port.
- E-mail: an aiosmtpd SMTP server; the received message is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry

from ccwatch.compose import open_state
from ccwatch.config import EmailConfig, validate_data
from ccwatch.errors import PermanentUpstreamError
from ccwatch.tickets.adapters import ADAPTERS, TicketEvent, build_adapters
from ccwatch.tickets.adapters.alertmanager import AlertmanagerAdapter, AlertmanagerUpstream
from ccwatch.tickets.adapters.base import AdapterContext
from ccwatch.tickets.adapters.email import EmailAdapter, EmailUpstream, message_id
from ccwatch.tickets.adapters.pagerduty import PagerDutyAdapter, PagerDutyUpstream
from ccwatch.tickets.config import TicketUpstream
from ccwatch.tickets.outbox import OutboxDispatcher
from tests.conftest import free_port, wait_for_port, wait_until
from tests.test_tickets_support import FakeClock, Received, Receiver, Reply, enqueue, generic_body

ROUTING_KEY = "e93b2a7c4d5f6a8b9c0d1e2f3a4b5c6d"  # 32 characters, as PagerDuty issues them
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def event(incident: str, seq: int, kind: str, **extra: Any) -> TicketEvent:
    body = generic_body(incident, seq, kind, **extra)
    return TicketEvent(
        upstream="x",
        incident_id=incident,
        seq=seq,
        event=kind,
        idempotency_key=f"{body['dedup_key']}:{seq}",
        body=body,
    )


# --- PagerDuty ---------------------------------------------------------------------


def pagerduty_validator(request: Received) -> Reply:
    """Events API v2 request rules (developer.pagerduty.com, "Send an Alert Event")."""
    errors: list[str] = []
    if request.method != "POST" or request.path != "/v2/enqueue":
        return Reply(404, '{"status":"not found"}')
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        errors.append("Content-Type must be application/json")
    try:
        data = request.json
    except ValueError:
        return Reply(400, '{"status":"invalid event","message":"Event object is invalid"}')
    if not isinstance(data.get("routing_key"), str) or len(data["routing_key"]) != 32:
        errors.append("'routing_key' must be the 32 character integration key")
    action = data.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    dedup = data.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = data.get("payload") or {}
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("'payload.summary' is required, at most 1024 characters")
        if not payload.get("source"):
            errors.append("'payload.source' is required")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("'payload.severity' must be critical, error, warning or info")
        details = payload.get("custom_details")
        if details is not None and not isinstance(details, dict):
            errors.append("'payload.custom_details' must be an object")
    if errors:
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        return Reply(400, json.dumps(body))
    return Reply(202, f'{{"status":"success","message":"Event processed","dedup_key":"{dedup}"}}')


@pytest.fixture
def pagerduty() -> Iterator[Receiver]:
    peer = Receiver(validator=pagerduty_validator).start()
    yield peer
    peer.close()


def pd_adapter(url: str, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> PagerDutyAdapter:
    monkeypatch.setenv("CCWATCH_TEST_PD_KEY", ROUTING_KEY)
    config = validate_data(
        PagerDutyUpstream,
        {"type": "pagerduty", "url": url, "routing_key_env": "CCWATCH_TEST_PD_KEY", **extra},
        "pagerduty",
    )
    return PagerDutyAdapter(config, AdapterContext("blr1"))


def test_pagerduty_trigger_acknowledge_resolve_share_one_dedup_key(
    pagerduty: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = pd_adapter(pagerduty.url + "/v2/enqueue", monkeypatch)
    long_summary = "x" * 3000

    async def scenario() -> None:
        await adapter.deliver(event("inc-1", 1, "open"))
        await adapter.deliver(event("inc-1", 2, "escalate", severity="major", summary=long_summary))
        acked = "2026-11-23T10:20:00Z"  # the incident service's ack: an update at the ack time
        await adapter.deliver(
            event(
                "inc-1", 3, "acknowledge", state="acknowledged", acknowledged_at=acked, updated_at=acked
            )
        )
        await adapter.deliver(event("inc-1", 4, "resolve"))
        await adapter.deliver(event("inc-1", 5, "rca_warning", state="resolved"))  # not sent
        await adapter.aclose()

    asyncio.run(scenario())
    sent = [r.json for r in pagerduty.accepted]
    assert [s["event_action"] for s in sent] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert {s["dedup_key"] for s in sent} == {"ccwatch:blr1:acd:inc-1"}
    assert sent[0]["payload"]["severity"] == "critical"
    assert sent[0]["payload"]["source"] == "blr1"
    assert sent[0]["payload"]["component"] == "acd"
    assert sent[0]["payload"]["summary"].startswith("[P1] critical production loss on acd")
    assert sent[0]["payload"]["custom_details"]["impact"].startswith("23 of 100 agents")
    assert sent[1]["payload"]["severity"] == "error"  # major
    assert len(sent[1]["payload"]["summary"]) == 1024
    assert len(pagerduty.requests) == 4


def test_pagerduty_severity_mapping_minor_is_warning(
    pagerduty: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = pd_adapter(pagerduty.url + "/v2/enqueue", monkeypatch)

    async def scenario() -> None:
        await adapter.deliver(event("inc-2", 1, "open", severity="minor"))
        await adapter.aclose()

    asyncio.run(scenario())
    assert pagerduty.accepted[0].json["payload"]["severity"] == "warning"


def test_pagerduty_400_dead_letters_and_429_retries_through_the_outbox(
    pagerduty: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    adapter = pd_adapter(pagerduty.url + "/v2/wrong-path-is-404", monkeypatch)
    store = open_state(tmp_path / "state.db")
    clock = FakeClock()
    dispatcher = OutboxDispatcher(
        store, {"pagerduty": adapter}, registry=CollectorRegistry(), clock=clock
    )
    enqueue(store, "pagerduty", "inc-1", 1, "open", now=clock.now)
    pagerduty.script = [Reply(429, '{"status":"throttled"}', {"Retry-After": "30"})]

    async def scenario() -> None:
        await dispatcher.drain_once("pagerduty")
        clock.advance(31)
        await dispatcher.drain_once("pagerduty")
        await adapter.aclose()

    try:
        asyncio.run(scenario())
        rows = store.run_sync(
            lambda c: c.execute("SELECT status, last_error FROM outbox").fetchall()
        )
    finally:
        store.close()
    ((status, error),) = rows
    assert status == "dead"
    assert "HTTP 404" in error


def test_pagerduty_invalid_event_is_permanent(
    pagerduty: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCWATCH_TEST_PD_KEY", "too-short")
    config = validate_data(
        PagerDutyUpstream,
        {
            "type": "pagerduty",
            "url": pagerduty.url + "/v2/enqueue",
            "routing_key_env": "CCWATCH_TEST_PD_KEY",
        },
        "pagerduty",
    )
    adapter = PagerDutyAdapter(config, AdapterContext("blr1"))

    async def scenario() -> None:
        try:
            with pytest.raises(PermanentUpstreamError, match=r"HTTP 400.*routing_key"):
                await adapter.deliver(event("inc-3", 1, "open"))
        finally:
            await adapter.aclose()

    asyncio.run(scenario())


# --- Alertmanager ------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if not Path(ALERTMANAGER).exists():
        pytest.skip(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
    (tmp_path / "am-data").mkdir()
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=20)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(base), timeout=20)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready(base: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(base + "/-/ready", timeout=1).status_code == 200
    return False


def _alerts(base: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(base + "/api/v2/alerts", timeout=5).json()
    return alerts


def test_alertmanager_lists_the_alert_then_resolves_it(alertmanager: str) -> None:
    config = validate_data(
        AlertmanagerUpstream,
        {
            "type": "alertmanager",
            "url": alertmanager,
            "resend_interval": "1s",
            "labels": {"team": "cc"},
        },
        "alertmanager",
    )
    adapter = AlertmanagerAdapter(config, AdapterContext("blr1"))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(adapter.deliver(event("inc-am", 1, "open", severity="major")))
        (alert,) = wait_until(lambda: _alerts(alertmanager))
        assert alert["labels"] == {
            "alertname": "CcwatchIncident",
            "site": "blr1",
            "component": "acd",
            "severity": "major",
            "team": "cc",
        }
        assert alert["annotations"]["dedup_key"] == "ccwatch:blr1:acd:inc-am"
        assert alert["annotations"]["priority"] == "P2"
        assert alert["status"]["state"] == "active"
        # Escalation to critical: one active alert, with the new severity.
        loop.run_until_complete(
            adapter.deliver(event("inc-am", 2, "escalate", severity="critical"))
        )
        wait_until(lambda: [a["labels"]["severity"] for a in _alerts(alertmanager)] == ["critical"])
        # Re-sending keeps it firing with a later endsAt.
        first_ends = _alerts(alertmanager)[0]["endsAt"]
        time.sleep(1.1)
        loop.run_until_complete(adapter.periodic())
        wait_until(lambda: _alerts(alertmanager)[0]["endsAt"] != first_ends)
        loop.run_until_complete(adapter.deliver(event("inc-am", 3, "resolve", severity="critical")))
        wait_until(lambda: _alerts(alertmanager) == [])
        assert adapter.firing == {}
    finally:
        loop.run_until_complete(adapter.aclose())
        loop.close()


def test_alertmanager_resends_after_a_restart_from_the_outbox(alertmanager: str) -> None:
    config = validate_data(
        AlertmanagerUpstream,
        {"type": "alertmanager", "url": alertmanager, "resend_interval": "1s"},
        "alertmanager",
    )
    fresh = AlertmanagerAdapter(config, AdapterContext("blr1"))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(
            fresh.restore([event("inc-r", 2, "update"), event("inc-gone", 3, "resolve")])
        )
        loop.run_until_complete(fresh.periodic())
        (alert,) = wait_until(lambda: _alerts(alertmanager))
        assert alert["annotations"]["incident_id"] == "inc-r"
    finally:
        loop.run_until_complete(fresh.aclose())
        loop.close()


# --- e-mail --------------------------------------------------------------------------


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[_Mailbox, int]]:
    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


def email_relay(port: int) -> EmailConfig:
    relay: EmailConfig = validate_data(
        EmailConfig,
        {"host": "127.0.0.1", "port": port, "from": "ccwatch@blr1.example", "starttls": False},
        "email",
    )
    return relay


def test_email_ticket_threads_by_subject_and_message_id(smtp: tuple[_Mailbox, int]) -> None:
    mailbox, port = smtp
    config = validate_data(
        EmailUpstream,
        {"type": "email", "to": ["p1@support.example"], "cc": ["it@cc.example"]},
        "email",
    )
    adapter = EmailAdapter(config, AdapterContext("blr1", email=email_relay(port)))
    diagnostics = {"host": {"load1": 0.5}, "log_excerpt": ["acd: <trunk 3> down & out"]}

    async def scenario() -> None:
        await adapter.deliver(event("inc-9", 1, "open", diagnostics=diagnostics))
        await adapter.deliver(event("inc-9", 2, "resolve"))

    asyncio.run(scenario())
    (first_to, first), (_, second) = mailbox.messages
    assert set(first_to) == {"p1@support.example", "it@cc.example"}
    assert first["Subject"].startswith("[ccwatch P1 CRITICAL] blr1/acd opened: 23 of 100 agents")
    assert first["Subject"].endswith("[ccwatch:blr1:acd:inc-9]")
    assert first["Message-ID"] == message_id("ccwatch:blr1:acd:inc-9")
    assert second["In-Reply-To"] == first["Message-ID"] == second["References"]
    assert "resolved" in second["Subject"]
    plain = first.get_body(("plain",))
    rich = first.get_body(("html",))
    assert plain is not None and rich is not None
    assert "Impact: 23 of 100 agents cannot take calls" in plain.get_content()
    assert "acd: <trunk 3> down & out" in plain.get_content()
    assert "acd: &lt;trunk 3&gt; down &amp; out" in rich.get_content()
    assert "<table" in rich.get_content()


def test_registry_covers_every_ticket_type() -> None:
    union = get_args(get_args(TicketUpstream)[0])
    types = {get_args(model.model_fields["type"].annotation)[0] for model in union}
    assert types == set(ADAPTERS)


def test_build_adapters_skips_disabled_and_adds_escalation_mail(smtp: tuple[_Mailbox, int]) -> None:
    _, port = smtp
    upstreams = [
        validate_data(EmailUpstream, {"type": "email", "to": ["a@b.example"]}, "e"),
        validate_data(
            AlertmanagerUpstream,
            {"type": "alertmanager", "url": "http://127.0.0.1:1", "enabled": False},
            "a",
        ),
    ]
    adapters = build_adapters(
        upstreams, AdapterContext("blr1", email=email_relay(port)), escalation_email=True
    )
    assert sorted(adapters) == ["email", "escalation-email"]


def test_escalation_mail_goes_to_the_level_addresses(smtp: tuple[_Mailbox, int]) -> None:
    mailbox, port = smtp
    config = EmailUpstream(type="email", name="escalation-email", to=["unused@example.com"])
    adapter = EmailAdapter(
        config, AdapterContext("blr1", email=email_relay(port)), escalation_targets=True
    )
    step = {
        "name": "L2 support",
        "trigger": "first_response_breach",
        "email": ["l2@vendor.example"],
    }
    asyncio.run(adapter.deliver(event("inc-7", 4, "escalate", escalation=step)))
    ((to, message),) = mailbox.messages
    assert to == ["l2@vendor.example"]
    assert "escalated to L2 support" in message["Subject"]
    assert message["In-Reply-To"] == message_id("ccwatch:blr1:acd:inc-7")
