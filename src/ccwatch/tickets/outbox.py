"""The outbox dispatcher: delivers the durable ``outbox`` rows to their upstreams.

Rows are written by the incident service in the same SQLite transaction as the incident
change (one row per routed upstream, ``idempotency_key = <dedup_key>:<seq>``). Here,
per upstream:

- rows go out **in order per incident**: only the oldest pending row of an incident is
  eligible, so a failing ``open`` holds back that incident's ``resolve`` on that
  upstream, and nothing of other incidents or other upstreams;
- a row is marked ``delivered`` only after the upstream accepted it. A crash between the
  two re-sends it with the same idempotency key, which the upstream uses to ignore the
  repeat (webhook ``Idempotency-Key``, PagerDuty ``dedup_key``, Alertmanager labels,
  e-mail ``Message-ID``);
- ``TemporaryUpstreamError`` → retry with exponential backoff and full jitter, capped by
  the upstream's ``retry_max``, or after the upstream's ``Retry-After`` when it sent one;
- ``PermanentUpstreamError`` → the row goes ``dead`` with the reason in ``last_error``
  (shown by ``ccwatch incidents show`` and ``ccwatch tickets list``, counted);
- the loop wakes as soon as a writer calls ``notify_new_events()`` (or ``wake()``), and
  polls every ``poll_interval`` as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError, UpstreamError
from ccwatch.incidents import repository
from ccwatch.incidents.store import StateStore, transaction
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness
from ccwatch.redact import Redactor, process_redactor
from ccwatch.tickets.adapters.base import Adapter, TicketEvent

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond an hour is a misconfigured upstream


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "ccwatch_outbox_depth",
            "Events waiting in the outbox to be delivered, by upstream",
            ["upstream"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "ccwatch_outbox_oldest_age_seconds",
            "Age of the oldest undelivered outbox event, by upstream (0 when empty)",
            ["upstream"],
            registry=registry,
        )
        self.sent = Counter(
            "ccwatch_tickets_sent",
            "Delivery attempts by upstream, event and outcome (delivered, retry, dead)",
            ["upstream", "event", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "ccwatch_ticket_delivery_seconds",
            "Duration of one delivery attempt to an upstream (the adapter call)",
            ["upstream"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 1.0  # seconds before the first retry (before jitter)
    cap: float = 300.0

    def delay(self, attempts: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        ceiling: float = min(self.cap, self.base * 2.0 ** max(attempts - 1, 0))
        # "Equal jitter": at least half the backoff, so retries never bunch up at zero.
        return ceiling / 2 + rand() * ceiling / 2


# The head (oldest pending row) of each incident on one upstream. One pass over the
# upstream's pending rows (index outbox_pending), so a 10,000-row backlog stays cheap.
_SELECT_READY = """
SELECT o.id, o.upstream, o.incident_id, o.seq, o.event, o.idempotency_key, o.body,
       o.created_at, o.attempts, o.next_attempt_at
FROM outbox AS o
JOIN (SELECT MIN(id) AS id FROM outbox
      WHERE upstream = :upstream AND status = 'pending'
      GROUP BY incident_id) AS head ON head.id = o.id
ORDER BY o.id
LIMIT :limit
"""


@dataclass(frozen=True)
class _Outcome:
    row_id: int
    status: str  # delivered | pending | dead
    error: str | None
    next_attempt_at: float


_dispatchers: weakref.WeakSet[OutboxDispatcher] = weakref.WeakSet()


def notify_new_events() -> None:
    """Wake every running dispatcher of this process: call after committing outbox rows.

    Safe from any thread.
    """
    for dispatcher in list(_dispatchers):
        dispatcher.wake()


class OutboxDispatcher:
    """Delivers the outbox of each configured upstream through its adapter."""

    def __init__(
        self,
        store: StateStore,
        adapters: Mapping[str, Adapter],
        *,
        registry: CollectorRegistry,
        retry: Mapping[str, RetryPolicy] | None = None,
        readiness: Readiness | None = None,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        poll_interval: float = 1.0,
        periodic_interval: float = 5.0,
        batch_size: int = 256,
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.adapters = dict(adapters)
        self.metrics = shared_metrics(OutboxMetrics, registry)
        self.retry = dict(retry or {})
        self.readiness = readiness
        self.redactor = redactor or process_redactor()
        self.clock = clock
        self.rand = rand
        self.poll_interval = poll_interval
        self.periodic_interval = periodic_interval
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._wakeups: dict[str, asyncio.Event] = {name: asyncio.Event() for name in adapters}
        self._loop: asyncio.AbstractEventLoop | None = None
        _dispatchers.add(self)

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in self._wakeups.values():
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Run every upstream's loop until cancelled, then close the adapters."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._restore_adapters()
            async with asyncio.TaskGroup() as group:
                for name in self.adapters:
                    group.create_task(self._upstream_loop(name), name=f"outbox:{name}")
        finally:
            for adapter in self.adapters.values():
                with contextlib.suppress(Exception):
                    await adapter.aclose()

    async def _restore_adapters(self) -> None:
        for name, adapter in self.adapters.items():
            events = await self.store.run(lambda c, n=name: _last_delivered(c, n))  # type: ignore[misc]
            await adapter.restore(events)

    async def _upstream_loop(self, name: str) -> None:
        adapter = self.adapters[name]
        wakeup = self._wakeups[name]
        if self.readiness is not None:
            self.readiness.set(f"upstream:{name}", True, "no delivery attempted yet")
        next_periodic = 0.0
        while True:
            wakeup.clear()
            try:
                delivered_any, next_due = await self.drain_once(name)
                if self.clock() >= next_periodic:
                    next_periodic = self.clock() + self.periodic_interval
                    await self._periodic(adapter)
            except (sqlite3.Error, OSError) as exc:
                logger.error("outbox %s: cannot read the state database: %s; retrying", name, exc)
                delivered_any, next_due = False, None
            if delivered_any:
                continue  # more may be ready right away
            timeout = self.poll_interval
            if next_due is not None:
                timeout = min(timeout, max(0.0, next_due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=timeout)

    async def _periodic(self, adapter: Adapter) -> None:
        try:
            await adapter.periodic()
        except UpstreamError as exc:
            logger.warning("upstream %s: periodic re-send failed: %s", adapter.name, exc)

    async def drain_once(self, name: str) -> tuple[bool, float | None]:
        """Deliver the ready head rows of ``name`` once.

        Returns whether any row left the pending state and when the earliest waiting
        head row becomes due (None when nothing waits).
        """
        now = self.clock()
        rows = await self.store.run(lambda c: _select_ready(c, name, self.batch_size * 4))
        ready = [row for row in rows if row.next_attempt_at <= now][: self.batch_size]
        waiting = [row.next_attempt_at for row in rows if row.next_attempt_at > now]
        outcomes: list[_Outcome] = []
        if ready:
            semaphore = asyncio.Semaphore(self.concurrency)

            async def attempt(row: _Row) -> _Outcome:
                async with semaphore:
                    return await self._attempt(name, row)

            outcomes = list(await asyncio.gather(*(attempt(row) for row in ready)))
            await self.store.run(lambda c: _record(c, outcomes, self.clock()))
        await self._update_depth(name)
        finished = any(outcome.status != "pending" for outcome in outcomes)
        retries = [o.next_attempt_at for o in outcomes if o.status == "pending"]
        next_due = min(waiting + retries, default=None)
        return finished, next_due

    async def _attempt(self, name: str, row: _Row) -> _Outcome:
        adapter = self.adapters[name]
        event = row.event(self.redactor)
        started = time.perf_counter()
        try:
            await adapter.deliver(event)
        except TemporaryUpstreamError as exc:
            policy = self.retry.get(name, RetryPolicy())
            delay = policy.delay(row.attempts + 1, exc.retry_after, self.rand)
            reason = self.redactor.text(str(exc))
            self._count(name, row.event_name, "retry", started)
            self._set_ready(name, False, reason)
            logger.warning(
                "upstream %s: %s %s not delivered (attempt %d), retrying in %.1fs: %s",
                name,
                row.event_name,
                row.idempotency_key,
                row.attempts + 1,
                delay,
                reason,
            )
            return _Outcome(row.id, "pending", reason, self.clock() + delay)
        except PermanentUpstreamError as exc:
            reason = self.redactor.text(str(exc))
            self._count(name, row.event_name, "dead", started)
            self._set_ready(name, True, f"last event refused: {reason}")
            logger.error(
                "upstream %s refused %s %s for good (dead-lettered; see `ccwatch tickets "
                "list --dead`): %s",
                name,
                row.event_name,
                row.idempotency_key,
                reason,
            )
            return _Outcome(row.id, "dead", reason, row.next_attempt_at)
        except Exception as exc:  # an adapter bug must not stop the other upstreams
            reason = self.redactor.text(f"{type(exc).__name__}: {exc}")
            self._count(name, row.event_name, "retry", started)
            logger.exception("upstream %s: adapter failed unexpectedly (a ccwatch bug)", name)
            delay = self.retry.get(name, RetryPolicy()).delay(row.attempts + 1, None, self.rand)
            return _Outcome(row.id, "pending", reason, self.clock() + delay)
        self._count(name, row.event_name, "delivered", started)
        self._set_ready(name, True, "last delivery succeeded")
        return _Outcome(row.id, "delivered", None, row.next_attempt_at)

    def _count(self, name: str, event: str, outcome: str, started: float) -> None:
        self.metrics.sent.labels(upstream=name, event=event, outcome=outcome).inc()
        self.metrics.delivery_seconds.labels(upstream=name).observe(time.perf_counter() - started)

    def _set_ready(self, name: str, ok: bool, detail: str) -> None:
        if self.readiness is not None:
            self.readiness.set(f"upstream:{name}", ok, detail)

    async def _update_depth(self, name: str) -> None:
        count, oldest = await self.store.run(lambda c: _depth(c, name))
        self.metrics.depth.labels(upstream=name).set(count)
        age = max(0.0, self.clock() - oldest) if oldest is not None else 0.0
        self.metrics.oldest_age.labels(upstream=name).set(age)


@dataclass(frozen=True)
class _Row:
    id: int
    upstream: str
    incident_id: str
    seq: int
    event_name: str
    idempotency_key: str
    body: str
    created_at: float
    attempts: int
    next_attempt_at: float

    def event(self, redactor: Redactor) -> TicketEvent:
        try:
            body = json.loads(self.body)
        except json.JSONDecodeError:
            body = {"raw": self.body}
        return TicketEvent(
            upstream=self.upstream,
            incident_id=self.incident_id,
            seq=self.seq,
            event=self.event_name,
            idempotency_key=self.idempotency_key,
            # The one redaction step for what leaves the host: secrets in log excerpts,
            # diagnostics or impact text are cut here, whatever wrote the row.
            body=redactor.value(body),
            created_at=self.created_at,
            attempts=self.attempts,
            id=self.id,
        )


def _select_ready(connection: sqlite3.Connection, upstream: str, limit: int) -> list[_Row]:
    cursor = connection.execute(_SELECT_READY, {"upstream": upstream, "limit": limit})
    return [_Row(*row) for row in cursor.fetchall()]


def _record(connection: sqlite3.Connection, outcomes: Iterable[_Outcome], now: float) -> None:
    with transaction(connection):
        for outcome in outcomes:
            if outcome.status == "delivered":
                connection.execute(
                    "UPDATE outbox SET status = 'delivered', delivered_at = ?, "
                    "attempts = attempts + 1, last_error = NULL WHERE id = ?",
                    (now, outcome.row_id),
                )
            else:
                connection.execute(
                    "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, "
                    "next_attempt_at = ? WHERE id = ?",
                    (outcome.status, outcome.error, outcome.next_attempt_at, outcome.row_id),
                )
            if outcome.status == "dead":
                _note_dead_letter(connection, outcome, now)


def _note_dead_letter(connection: sqlite3.Connection, outcome: _Outcome, now: float) -> None:
    """A ``ticket_dead`` timeline entry, so ``ccwatch incidents show`` tells the operator."""
    row = connection.execute(
        "SELECT incident_id, upstream, event, seq FROM outbox WHERE id = ?", (outcome.row_id,)
    ).fetchone()
    incident = repository.load_incident(connection, row[0]) if row else None
    if incident is None:
        return
    detail = (
        f"{row[1]} refused {row[2]} #{row[3]} for good (outbox id {outcome.row_id}; "
        f"`ccwatch tickets retry {outcome.row_id}` after fixing): {outcome.error}"
    )
    repository.append_timeline(connection, incident, "ticket_dead", now, detail)


def _depth(connection: sqlite3.Connection, upstream: str) -> tuple[int, float | None]:
    count, oldest = connection.execute(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE upstream = ? AND status = 'pending'",
        (upstream,),
    ).fetchone()
    return int(count), oldest


def _last_delivered(connection: sqlite3.Connection, upstream: str) -> list[TicketEvent]:
    """The newest delivered event of each incident on ``upstream`` (for adapters that keep
    state upstream, such as Alertmanager's firing alerts, to pick up after a restart)."""
    rows = connection.execute(
        """
        SELECT o.id, o.upstream, o.incident_id, o.seq, o.event, o.idempotency_key, o.body,
               o.created_at, o.attempts, o.next_attempt_at
        FROM outbox AS o
        JOIN (SELECT MAX(id) AS id FROM outbox
              WHERE upstream = ? AND status = 'delivered'
              GROUP BY incident_id) AS newest ON newest.id = o.id
        ORDER BY o.id
        """,
        (upstream,),
    ).fetchall()
    return [_Row(*row).event(Redactor()) for row in rows]


# --- queries for the operator surface ---------------------------------------------


def outbox_rows(
    connection: sqlite3.Connection,
    *,
    incident_id: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Outbox rows (newest first) for ``ccwatch incidents show`` / ``ccwatch tickets list``."""
    clauses, params = [], []
    if incident_id is not None:
        clauses.append("incident_id = ?")
        params.append(incident_id)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = connection.execute(
        "SELECT id, upstream, incident_id, seq, event, idempotency_key, status, attempts, "
        f"created_at, next_attempt_at, delivered_at, last_error FROM outbox {where} "
        "ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def retry_dead(connection: sqlite3.Connection, row_ids: Iterable[int], now: float) -> int:
    """Put dead-lettered rows back to pending (after the operator fixed the cause)."""
    changed = 0
    with transaction(connection):
        for row_id in row_ids:
            changed += connection.execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at = ?, attempts = 0 "
                "WHERE id = ? AND status = 'dead'",
                (now, row_id),
            ).rowcount
    return changed
