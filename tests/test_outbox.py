"""The outbox dispatcher against a real HTTP receiver: order, retries, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from ccwatch.cli import cli
from ccwatch.compose import build_incident_service, open_state
from ccwatch.config import load_config, validate_data
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.incidents.repository import outbox_rows
from ccwatch.readiness import Readiness
from ccwatch.redact import Redactor
from ccwatch.severity import Severity
from ccwatch.state import StateStore
from ccwatch.tickets.adapters.base import AdapterContext, RecordingAdapter
from ccwatch.tickets.adapters.webhook import WebhookAdapter, WebhookUpstream
from ccwatch.tickets.outbox import OutboxDispatcher, RetryPolicy
from tests.conftest import wait_until
from tests.test_tickets_support import (
    FakeClock,
    Receiver,
    Reply,
    enqueue,
    outbox_statuses,
    self_signed_tls,
)

SECRET = "whsec_Q2N3YXRjaC10ZXN0LXNlY3JldC0yMDI2"


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    """The test's state database, on each backend (conftest ``open_store``)."""
    return open_store()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver().start()
    yield peer
    peer.close()


def webhook(url: str, **extra: Any) -> WebhookUpstream:
    config: WebhookUpstream = validate_data(
        WebhookUpstream, {"type": "webhook", "url": url, **extra}, "webhook"
    )
    return config


def make_dispatcher(
    store: StateStore,
    adapter: Any,
    clock: FakeClock,
    registry: CollectorRegistry | None = None,
    readiness: Readiness | None = None,
    on_dead: Any = None,
) -> OutboxDispatcher:
    return OutboxDispatcher(
        store,
        {adapter.name: adapter},
        registry=registry or CollectorRegistry(),
        retry={adapter.name: RetryPolicy(base=1.0, cap=8.0)},
        readiness=readiness,
        on_dead=on_dead,
        clock=clock,
        rand=lambda: 1.0,
    )


async def drain_until_idle(dispatcher: OutboxDispatcher, name: str, clock: FakeClock) -> None:
    """Drive the dispatcher on the fake clock until nothing is pending."""
    for _ in range(200):
        finished, next_due = await dispatcher.drain_once(name)
        if finished:
            continue
        if next_due is None:
            return
        clock.now = max(clock.now, next_due)
    raise AssertionError("outbox did not drain")


def test_receiver_down_then_back_gets_every_event_once_in_order(
    store: StateStore, receiver: Receiver
) -> None:
    clock = FakeClock()
    adapter = WebhookAdapter(
        webhook(receiver.url + "/hook", secret_env=None), AdapterContext("blr1", clock=clock)
    )
    dispatcher = make_dispatcher(store, adapter, clock)
    events = ["open", "update", "escalate", "resolve"]
    for incident in ("inc-a", "inc-b", "inc-c"):
        for seq, event in enumerate(events, start=1):
            enqueue(store, "webhook", incident, seq, event, now=clock.now)

    async def scenario() -> None:
        receiver.stop()
        for _ in range(3):  # three failed rounds while the receiver is down
            await dispatcher.drain_once("webhook")
            clock.advance(10)
        assert receiver.requests == []
        receiver.start()
        await drain_until_idle(dispatcher, "webhook", clock)
        # A restart of the dispatcher finds nothing left to send.
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    asyncio.run(scenario())
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == 12
    for incident in ("inc-a", "inc-b", "inc-c"):
        mine = [k for k in keys if f":{incident}:" in k]
        assert mine == [f"ccwatch:blr1:acd:{incident}:{seq}" for seq in (1, 2, 3, 4)]
    assert {status for _, _, status, _, _ in outbox_statuses(store)} == {"delivered"}
    first_open = outbox_statuses(store)[0]
    assert first_open[3] == 4  # three refused connections, then accepted


def test_a_failing_event_holds_back_its_incident_only(
    store: StateStore, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.validator = lambda r: Reply(503) if "inc-stuck" in r.body.decode() else None
    adapter = WebhookAdapter(webhook(receiver.url), AdapterContext("blr1", clock=clock))
    dispatcher = make_dispatcher(store, adapter, clock)
    enqueue(store, "webhook", "inc-stuck", 1, "open", now=clock.now)
    enqueue(store, "webhook", "inc-stuck", 2, "resolve", now=clock.now)
    enqueue(store, "webhook", "inc-fine", 1, "open", now=clock.now)
    enqueue(store, "webhook", "inc-fine", 2, "resolve", now=clock.now)

    async def scenario() -> None:
        for _ in range(4):
            await dispatcher.drain_once("webhook")
            clock.advance(60)
        await adapter.aclose()

    asyncio.run(scenario())
    assert receiver.keys() == ["ccwatch:blr1:acd:inc-fine:1", "ccwatch:blr1:acd:inc-fine:2"]
    stuck = [r for r in receiver.requests if b"inc-stuck" in r.body]
    assert {r.json["seq"] for r in stuck} == {1}  # the resolve never overtook the open
    statuses = {key: (status, error) for _, key, status, _, error in outbox_statuses(store)}
    assert statuses["ccwatch:blr1:acd:inc-stuck:1"][0] == "pending"
    assert "HTTP 503" in (statuses["ccwatch:blr1:acd:inc-stuck:1"][1] or "")


@pytest.mark.parametrize("retry_after", ["7", "date"])
def test_429_retry_after_is_honoured(
    store: StateStore, receiver: Receiver, retry_after: str
) -> None:
    clock = FakeClock()
    header = (
        format_datetime(datetime.fromtimestamp(clock.now + 7, UTC), usegmt=True)
        if retry_after == "date"
        else retry_after
    )
    receiver.script = [Reply(429, '{"status":"throttled"}', {"Retry-After": header})]
    adapter = WebhookAdapter(webhook(receiver.url), AdapterContext("blr1", clock=clock))
    dispatcher = make_dispatcher(store, adapter, clock)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)

    async def scenario() -> None:
        _, next_due = await dispatcher.drain_once("webhook")
        assert next_due == pytest.approx(clock.now + 7, abs=1)
        clock.advance(3)
        await dispatcher.drain_once("webhook")  # not due yet: no request
        assert len(receiver.requests) == 1
        clock.advance(5)
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    asyncio.run(scenario())
    assert len(receiver.requests) == 2
    assert receiver.keys() == ["ccwatch:blr1:acd:inc-1:1"]


def test_500_is_retried_with_growing_backoff(store: StateStore, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [Reply(500, "boom"), Reply(502, "bad gateway"), Reply(500, "boom")]
    adapter = WebhookAdapter(webhook(receiver.url), AdapterContext("blr1", clock=clock))
    registry = CollectorRegistry()
    dispatcher = make_dispatcher(store, adapter, clock, registry)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)
    delays: list[float] = []

    async def scenario() -> None:
        for _ in range(4):
            before = clock.now
            _, next_due = await dispatcher.drain_once("webhook")
            if next_due is not None:
                delays.append(next_due - before)
                clock.now = next_due
        await adapter.aclose()

    asyncio.run(scenario())
    assert delays == [1.0, 2.0, 4.0]  # rand() pinned to 1.0: no jitter
    assert receiver.keys() == ["ccwatch:blr1:acd:inc-1:1"]
    sample = registry.get_sample_value
    labels = {"upstream": "webhook", "event": "open"}
    assert sample("ccwatch_tickets_sent_total", {**labels, "outcome": "retry"}) == 3
    assert sample("ccwatch_tickets_sent_total", {**labels, "outcome": "delivered"}) == 1
    assert sample("ccwatch_outbox_depth", {"upstream": "webhook"}) == 0


def test_400_is_dead_lettered_with_the_reason_and_the_incident_moves_on(
    store: StateStore, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.script = [Reply(400, '{"status":"invalid event","errors":["summary missing"]}')]
    adapter = WebhookAdapter(webhook(receiver.url), AdapterContext("blr1", clock=clock))
    registry = CollectorRegistry()
    dispatcher = make_dispatcher(store, adapter, clock, registry)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)
    enqueue(store, "webhook", "inc-1", 2, "resolve", now=clock.now)

    async def scenario() -> None:
        await drain_until_idle(dispatcher, "webhook", clock)
        await adapter.aclose()

    asyncio.run(scenario())
    rows = outbox_statuses(store)
    assert rows[0][2:4] == ("dead", 1)
    assert "HTTP 400" in (rows[0][4] or "") and "summary missing" in (rows[0][4] or "")
    assert rows[1][2] == "delivered"
    dead = store.run_sync(lambda c: outbox_rows(c, status="dead"))
    assert [row["idempotency_key"] for row in dead] == ["ccwatch:blr1:acd:inc-1:1"]
    labels = {"upstream": "webhook", "event": "open", "outcome": "dead"}
    assert registry.get_sample_value("ccwatch_tickets_sent_total", labels) == 1


def test_timeout_is_temporary(store: StateStore, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [Reply(200, delay=2.0)]
    adapter = WebhookAdapter(
        webhook(receiver.url, timeout="200ms"), AdapterContext("blr1", clock=clock)
    )
    dispatcher = make_dispatcher(store, adapter, clock)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)

    async def scenario() -> None:
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    asyncio.run(scenario())
    (row,) = outbox_statuses(store)
    assert row[2] == "pending" and "timed out" in (row[4] or "")


def test_tls_verification_failure_is_temporary_and_readiness_shows_it(
    store: StateStore, tmp_path: Path
) -> None:
    peer = Receiver(tls=self_signed_tls(tmp_path)).start()
    clock = FakeClock()
    readiness = Readiness(CollectorRegistry())
    adapter = WebhookAdapter(webhook(peer.url), AdapterContext("blr1", clock=clock))
    dispatcher = make_dispatcher(store, adapter, clock, readiness=readiness)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)

    async def scenario() -> None:
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        peer.close()
    (row,) = outbox_statuses(store)
    assert row[2] == "pending"
    assert "CERTIFICATE_VERIFY_FAILED" in (row[4] or "")
    assert "upstream:webhook" in readiness.not_ready()
    assert peer.requests == []  # nothing was sent over an unverified connection


def test_webhook_signature_and_headers(store: StateStore, receiver: Receiver) -> None:
    clock = FakeClock()
    env = {"CCWATCH_TEST_WEBHOOK_SECRET": SECRET}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        config = webhook(
            receiver.url + "/tickets",
            secret_env="CCWATCH_TEST_WEBHOOK_SECRET",
            headers={"X-Tenant": "blr1"},
        )
        adapter = WebhookAdapter(config, AdapterContext("blr1", clock=clock))
    dispatcher = make_dispatcher(store, adapter, clock)
    enqueue(store, "webhook", "inc-1", 1, "open", now=clock.now)

    async def scenario() -> None:
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    asyncio.run(scenario())
    (request,) = receiver.accepted
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Ccwatch-Signature"] == f"sha256={expected}"
    assert request.headers["Idempotency-Key"] == "ccwatch:blr1:acd:inc-1:1"
    assert request.headers["X-Tenant"] == "blr1"
    assert request.path == "/tickets"
    body = request.json
    assert body["event"] == "open" and body["priority"] == "P1" and body["seq"] == 1
    assert SECRET not in request.body.decode()


def test_secrets_in_diagnostics_are_cut_before_they_leave(
    store: StateStore, receiver: Receiver
) -> None:
    clock = FakeClock()
    leaked = "pgpass-Zr7xK29mQw81"
    adapter = WebhookAdapter(webhook(receiver.url), AdapterContext("blr1", clock=clock))
    dispatcher = OutboxDispatcher(
        store,
        {"webhook": adapter},
        registry=CollectorRegistry(),
        redactor=Redactor([leaked]),
        clock=clock,
    )
    log_lines = [
        f"2026-11-23 10:00:01 ERROR db connect failed dsn=postgresql://ameyo:{leaked}@db/ameyodb",
        "2026-11-23 10:00:02 WARN sip auth Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2ln",
        "2026-11-23 10:00:03 INFO crm call api_key=sk_live_51HxYzAbCdEfGhIjKlMnOp",
    ]
    enqueue(
        store,
        "webhook",
        "inc-1",
        1,
        "open",
        now=clock.now,
        diagnostics={"log_excerpt": log_lines, "host": {"env": {"DB_PASSWORD": "hunter2hunter2"}}},
    )

    async def scenario() -> None:
        await dispatcher.drain_once("webhook")
        await adapter.aclose()

    asyncio.run(scenario())
    (request,) = receiver.accepted
    text = request.body.decode()
    for secret in (
        leaked,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2ln",
        "sk_live_51HxYzAbCdEfGhIjKlMnOp",
        "hunter2hunter2",
    ):
        assert secret not in text
    excerpt = json.loads(text)["diagnostics"]["log_excerpt"]
    assert "postgresql://ameyo:****@db/ameyodb" in excerpt[0]  # a password: never shown
    assert "sk_l...MnOp" in excerpt[2]
    assert json.loads(text)["dedup_key"] == "ccwatch:blr1:acd:inc-1"


def test_run_wakes_promptly_when_told_and_stops_cleanly(store: StateStore) -> None:
    recording = RecordingAdapter(name="rec")
    recording.fail_with = [
        TemporaryUpstreamError("flaky", retry_after=0),
        PermanentUpstreamError("no"),
    ]
    dispatcher = OutboxDispatcher(
        store, {"rec": recording}, registry=CollectorRegistry(), poll_interval=3600
    )

    async def scenario() -> None:
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0.05)
        enqueue(store, "rec", "inc-1", 1, "open")
        enqueue(store, "rec", "inc-2", 1, "open")
        dispatcher.wake()
        for _ in range(500):
            if len(recording.delivered) == 1 and recording.attempts == 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    statuses = sorted(status for _, _, status, _, _ in outbox_statuses(store))
    assert statuses == ["dead", "delivered"]


def test_a_dead_letter_shows_in_incidents_show(
    tmp_path: Path, receiver: Receiver, state_section: dict[str, Any]
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "site: blr1\n"
        f"state: {json.dumps(state_section)}\n"
        f"tickets: [{{type: webhook, url: '{receiver.url}/hook'}}]\n"
    )
    config = load_config(config_path)
    store = open_state(config.state)
    clock = FakeClock()
    receiver.default = Reply(422, '{"error": "unknown component acd"}')
    service = build_incident_service(config, store, CollectorRegistry(), clock=clock)
    service.diagnostics = None  # this test is about the dead letter, not the open's extras
    adapter = WebhookAdapter(config.tickets[0], AdapterContext("blr1", clock=clock))  # type: ignore[arg-type]
    dispatcher = make_dispatcher(store, adapter, clock, on_dead=service.note_dead_letter)

    async def scenario() -> str:
        await service.report(
            component="acd", kind="checklist", severity=Severity.CRITICAL, impact="down"
        )
        await dispatcher.drain_once("webhook")
        await adapter.aclose()
        (incident,) = await service.list_incidents()
        return incident.id

    try:
        incident_id = asyncio.run(scenario())
    finally:
        store.close()
    shown = CliRunner().invoke(cli, ["-c", str(config_path), "incidents", "show", incident_id])
    assert shown.exit_code == 0, shown.output
    assert "ticket_dead" in shown.output
    assert "webhook refused open #1 for good" in shown.output
    assert "HTTP 422" in shown.output and "unknown component acd" in shown.output
    listed = CliRunner().invoke(cli, ["-c", str(config_path), "tickets", "list", "--dead"])
    assert "last error: webhook: HTTP 422" in listed.output


# --- several dispatchers on one PostgreSQL outbox ------------------------------------------


def _pending(store: StateStore) -> int:
    count: int = store.run_sync(
        lambda c: c.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
    )
    return count


def test_claims_keep_two_dispatchers_apart_and_a_lost_claim_records_nothing(
    pg_schema_dsn: str,
) -> None:
    """PostgreSQL: the due head rows a dispatcher takes are its own until its lease runs
    out; another then takes them, and the first one's late outcome changes nothing."""
    from ccwatch.compose import MIGRATIONS
    from ccwatch.incidents.repository import Claim, Outcome, record_outcomes, take_ready
    from ccwatch.state.postgres import PostgresStore

    first = PostgresStore.open(pg_schema_dsn, MIGRATIONS)
    second = PostgresStore.open(pg_schema_dsn, MIGRATIONS)
    now = 1_795_000_000.0
    try:
        for n in range(6):
            enqueue(first, "webhook", f"inc-{n}", 1, "open", now=now)
            enqueue(first, "webhook", f"inc-{n}", 2, "resolve", now=now)
        a, b = Claim("dispatcher-a", 60.0), Claim("dispatcher-b", 60.0)
        taken_a, _ = first.run_sync(lambda c: take_ready(c, "webhook", now, 4, a))
        taken_b, _ = second.run_sync(lambda c: take_ready(c, "webhook", now, 10, b))
        assert [(r.incident_id, r.seq) for r in taken_a] == [(f"inc-{n}", 1) for n in range(4)]
        # b gets the other incidents' heads, never the next event of an incident a holds.
        assert [(r.incident_id, r.seq) for r in taken_b] == [("inc-4", 1), ("inc-5", 1)]
        delivered = [Outcome(r.id, "delivered", None, now) for r in taken_b]
        second.run_sync(lambda c: record_outcomes(c, delivered, now, b))
        # a stalls past its lease: b takes a's rows (and its own incidents' next events).
        later = now + 61
        retaken, _ = second.run_sync(lambda c: take_ready(c, "webhook", later, 10, b))
        assert sorted((r.incident_id, r.seq) for r in retaken) == [
            *((f"inc-{n}", 1) for n in range(4)),
            ("inc-4", 2),
            ("inc-5", 2),
        ]
        late = [Outcome(r.id, "dead", "too late", later) for r in taken_a]
        assert first.run_sync(lambda c: record_outcomes(c, late, later, a)) == []
        assert not [s for s in outbox_statuses(first) if s[2] == "dead"]
    finally:
        first.close()
        second.close()


def test_a_row_locked_by_another_dispatcher_is_skipped_not_waited_for(
    pg_schema_dsn: str,
) -> None:
    """``FOR UPDATE SKIP LOCKED``: while another dispatcher's claim transaction holds an
    incident's head row, the claim of this one passes it by at once."""
    import psycopg

    from ccwatch.compose import MIGRATIONS
    from ccwatch.incidents.repository import Claim, take_ready
    from ccwatch.state.postgres import PostgresStore

    store = PostgresStore.open(pg_schema_dsn, MIGRATIONS)
    now = 1_795_000_000.0
    try:
        for n in range(3):
            enqueue(store, "webhook", f"inc-{n}", 1, "open", now=now)
        with psycopg.connect(pg_schema_dsn) as other:  # a transaction left open
            other.execute("SELECT id FROM outbox WHERE incident_id = 'inc-1' FOR UPDATE")
            with ThreadPoolExecutor(1) as caller:
                claim = Claim("me", 60.0)
                taken, _ = caller.submit(
                    store.run_sync, lambda c: take_ready(c, "webhook", now, 10, claim)
                ).result(timeout=10)
            other.rollback()
        assert [r.incident_id for r in taken] == ["inc-0", "inc-2"]
    finally:
        store.close()


class _Worker:
    """A dispatcher on its own thread and event loop, with its own store (pool): what a
    second ccwatch worker on the same database is."""

    def __init__(self, name: str, store: StateStore, url: str) -> None:
        self.name = name
        self.store = store
        self.url = url
        self.registry = CollectorRegistry()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        adapter = WebhookAdapter(
            webhook(self.url, headers={"X-Worker": self.name}), AdapterContext("blr1")
        )
        dispatcher = OutboxDispatcher(
            self.store,
            {"webhook": adapter},
            registry=self.registry,
            poll_interval=0.05,
            batch_size=8,
            concurrency=4,
        )
        task = asyncio.create_task(dispatcher.run())
        self._started.set()
        await self._stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(timeout=10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def delivered(self) -> float:
        samples = [
            s.value
            for metric in self.registry.collect()
            if metric.name == "ccwatch_tickets_sent"
            for s in metric.samples
            if s.name.endswith("_total") and s.labels.get("outcome") == "delivered"
        ]
        return sum(samples)


def test_two_dispatchers_on_one_database_deliver_each_event_exactly_once(
    pg_schema_dsn: str, receiver: Receiver
) -> None:
    """Two workers (own threads, loops and pools) drain one PostgreSQL outbox into one
    HTTP receiver: every idempotency key arrives once, each incident's events in order."""
    from ccwatch.compose import MIGRATIONS
    from ccwatch.state.postgres import PostgresStore

    receiver.default = Reply(delay=0.01)  # an upstream that takes a moment per request
    stores = [PostgresStore.open(pg_schema_dsn, MIGRATIONS) for _ in range(2)]
    workers = [_Worker(name, store, receiver.url + "/hook") for name, store in zip("ab", stores, strict=True)]
    events = ["open", "update", "escalate", "resolve"]
    incidents = [f"inc-{n:02d}" for n in range(60)]
    try:
        for worker in workers:
            worker.start()
        for seq, event in enumerate(events, start=1):
            for incident in incidents:
                enqueue(stores[0], "webhook", incident, seq, event)
        wait_until(
            lambda: len(receiver.accepted) >= 240 and _pending(stores[0]) == 0, timeout=90
        )
    finally:
        for worker in workers:
            worker.stop()
        for store in stores:
            store.close()
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == 240
    for incident in incidents:
        mine = [k for k in keys if f":{incident}:" in k]
        assert mine == [f"ccwatch:blr1:acd:{incident}:{seq}" for seq in (1, 2, 3, 4)]
    by_worker = {w.name: w.delivered() for w in workers}
    assert sum(by_worker.values()) == 240
    senders = {r.headers.get("X-Worker") for r in receiver.accepted}
    assert senders == {"a", "b"}, by_worker  # both took part: the race was real
