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
- the loop wakes as soon as the composition root's change fan-out calls ``wake()``
  after a committed incident change, and polls every ``poll_interval`` as a fallback.

The dispatcher reads and updates the outbox through ``incidents.repository`` (which owns
the table); a dead-lettered row is reported to ``on_dead`` (the incident service's
``note``, wired by ``app.py``), so the incident's timeline says so.

On PostgreSQL several dispatchers (workers) may share one outbox: each has its own
``Claim`` token, ``repository.take_ready`` claims the rows it returns (``FOR UPDATE SKIP
LOCKED``) for ``claim_lease`` seconds, and ``record_outcomes`` records an outcome only
while the claim holds, so each event goes out once per idempotency key across workers.
On SQLite (one process) nothing is claimed.

Several sites per worker (``sites:``): each site held here has a dispatcher of its own
(``site``), which takes only that site's rows, checks the site's lease (``fence``) in the
transactions that claim rows and record outcomes, and asks ``guard`` (the lease's local
deadline) right before each delivery: a worker that cannot renew a lease stops sending
before the lease can run out and another worker take the site.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ccwatch.errors import (
    LeaseLostError,
    PermanentUpstreamError,
    TemporaryUpstreamError,
    UpstreamError,
)
from ccwatch.incidents import repository
from ccwatch.incidents.repository import Claim, Fence, OutboxRow, Outcome
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness
from ccwatch.redact import Redactor, process_redactor
from ccwatch.state import STORE_ERRORS, StateStore
from ccwatch.tickets.adapters.base import Adapter, TicketEvent
from ccwatch.tickets.links import TicketLinks

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond an hour is a misconfigured upstream
MIN_CLAIM_LEASE = 300.0


def claim_lease(timeouts: Iterable[float], batch_size: int, concurrency: int) -> float:
    """Seconds a claimed batch stays with its dispatcher: the slowest batch (every
    attempt timing out) twice over, at least ``MIN_CLAIM_LEASE``."""
    rounds = math.ceil(batch_size / max(concurrency, 1))
    return max(MIN_CLAIM_LEASE, 2 * rounds * max(timeouts, default=0.0))


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


OnDead = Callable[[OutboxRow, str], Awaitable[None]]
"""Told about each dead-lettered row with the redacted reason."""


class OutboxDispatcher:
    """Delivers the outbox of each configured upstream through its adapter."""

    BATCH_SIZE = 256  # rows taken (on PostgreSQL: claimed) per round
    CONCURRENCY = 16  # deliveries in flight per upstream

    def __init__(
        self,
        store: StateStore,
        adapters: Mapping[str, Adapter],
        *,
        registry: CollectorRegistry,
        retry: Mapping[str, RetryPolicy] | None = None,
        readiness: Readiness | None = None,
        redactor: Redactor | None = None,
        on_dead: OnDead | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        poll_interval: float = 1.0,
        periodic_interval: float = 5.0,
        batch_size: int = BATCH_SIZE,
        concurrency: int = CONCURRENCY,
        lease: float = MIN_CLAIM_LEASE,
        links: TicketLinks | None = None,
        site: str | None = None,
        fence: Fence | None = None,
        guard: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        # Several workers: this dispatcher's site, its lease check in SQL, and the local
        # check before each send (raises LeaseLostError); see the module docstring.
        self.site = site
        self.fence = fence
        self.guard = guard
        self.adapters = dict(adapters)
        self.metrics = shared_metrics(OutboxMetrics, registry)
        self.retry = dict(retry or {})
        self.readiness = readiness
        self.redactor = redactor or process_redactor()
        self.on_dead = on_dead
        self.clock = clock
        self.rand = rand
        self.poll_interval = poll_interval
        self.periodic_interval = periodic_interval
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.claim = Claim(uuid.uuid4().hex, lease)
        self.links = links
        self._wakeups: dict[str, asyncio.Event] = {name: asyncio.Event() for name in adapters}
        self._loop: asyncio.AbstractEventLoop | None = None

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
            rows = await self.store.run(
                lambda c, n=name: repository.last_delivered(c, n, self.site)  # type: ignore[misc]
            )
            await adapter.restore([ticket_event(row, Redactor()) for row in rows])

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
            except STORE_ERRORS as exc:
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
        site, fence, guard = self.site, self.fence, self.guard
        if guard is not None:
            guard()
        ready, waiting = await self.store.run(
            lambda c: repository.take_ready(
                c, name, now, self.batch_size, self.claim, site=site, fence=fence
            )
        )
        outcomes: list[Outcome] = []
        if ready:
            semaphore = asyncio.Semaphore(self.concurrency)
            refused: list[LeaseLostError] = []

            async def attempt(row: OutboxRow) -> Outcome | None:
                async with semaphore:
                    if guard is not None:
                        try:
                            guard()  # the lease's local deadline, right before sending
                        except LeaseLostError as exc:
                            refused.append(exc)
                            return None
                    return await self._attempt(name, row)

            attempted = await asyncio.gather(*(attempt(row) for row in ready))
            outcomes = [outcome for outcome in attempted if outcome is not None]
            now = self.clock()
            dead = await self.store.run(
                lambda c: repository.record_outcomes(c, outcomes, now, self.claim, fence)
            )
            await self._report_dead(dead, outcomes)
            if refused:
                raise refused[0]
        await self._update_depth(name)
        finished = any(outcome.status != "pending" for outcome in outcomes)
        retries = [o.next_attempt_at for o in outcomes if o.status == "pending"]
        next_due = min([*retries, *([] if waiting is None else [waiting])], default=None)
        return finished, next_due

    async def _report_dead(self, dead: list[OutboxRow], outcomes: list[Outcome]) -> None:
        if not dead or self.on_dead is None:
            return
        errors = {outcome.row_id: outcome.error or "" for outcome in outcomes}
        for row in dead:
            try:
                await self.on_dead(row, errors.get(row.id, ""))
            except Exception as exc:  # the row is dead-lettered either way
                logger.error("could not note dead letter %d on its incident: %s", row.id, exc)

    async def _attempt(self, name: str, row: OutboxRow) -> Outcome:
        adapter = self.adapters[name]
        event = ticket_event(row, self.redactor)
        if self.links is not None and getattr(adapter, "role", "notify") != "ticket":
            event = await self._with_tickets(event)
        event_name = row.event
        started = time.perf_counter()
        try:
            await adapter.deliver(event)
        except TemporaryUpstreamError as exc:
            policy = self.retry.get(name, RetryPolicy())
            delay = policy.delay(row.attempts + 1, exc.retry_after, self.rand)
            reason = self.redactor.text(str(exc))
            self._count(name, event_name, "retry", started)
            self._set_ready(name, False, reason)
            logger.warning(
                "upstream %s: %s %s not delivered (attempt %d), retrying in %.1fs: %s",
                name,
                event_name,
                row.idempotency_key,
                row.attempts + 1,
                delay,
                reason,
            )
            return Outcome(row.id, "pending", reason, self.clock() + delay)
        except PermanentUpstreamError as exc:
            reason = self.redactor.text(str(exc))
            self._count(name, event_name, "dead", started)
            self._set_ready(name, True, f"last event refused: {reason}")
            logger.error(
                "upstream %s refused %s %s for good (dead-lettered; see `ccwatch tickets "
                "list --dead`): %s",
                name,
                event_name,
                row.idempotency_key,
                reason,
            )
            return Outcome(row.id, "dead", reason, row.next_attempt_at)
        except Exception as exc:  # an adapter bug must not stop the other upstreams
            reason = self.redactor.text(f"{type(exc).__name__}: {exc}")
            self._count(name, event_name, "retry", started)
            self._set_ready(name, False, f"adapter failed unexpectedly: {reason}")
            logger.exception("upstream %s: adapter failed unexpectedly (a ccwatch bug)", name)
            delay = self.retry.get(name, RetryPolicy()).delay(row.attempts + 1, None, self.rand)
            return Outcome(row.id, "pending", reason, self.clock() + delay)
        self._count(name, event_name, "delivered", started)
        self._set_ready(name, True, "last delivery succeeded")
        return Outcome(row.id, "delivered", None, row.next_attempt_at)

    async def _with_tickets(self, event: TicketEvent) -> TicketEvent:
        """A notification names the incident's service-desk tickets known by now (a page
        sent while the desk is still creating the ticket goes without; later ones have it)."""
        assert self.links is not None
        known = await self.links.for_incident(event.incident_id)
        if not known:
            return event
        tickets = [{"upstream": t.upstream, "id": t.ticket_id, "url": t.url} for t in known]
        return replace(event, body={**event.body, "tickets": tickets})

    def _count(self, name: str, event: str, outcome: str, started: float) -> None:
        self.metrics.sent.labels(upstream=name, event=event, outcome=outcome).inc()
        self.metrics.delivery_seconds.labels(upstream=name).observe(time.perf_counter() - started)

    def _set_ready(self, name: str, ok: bool, detail: str) -> None:
        if self.readiness is not None:
            self.readiness.set(f"upstream:{name}", ok, detail)

    async def _update_depth(self, name: str) -> None:
        count, oldest = await self.store.run(lambda c: repository.outbox_depth(c, name, self.site))
        self.metrics.depth.labels(upstream=name).set(count)
        age = max(0.0, self.clock() - oldest) if oldest is not None else 0.0
        self.metrics.oldest_age.labels(upstream=name).set(age)


def ticket_event(row: OutboxRow, redactor: Redactor) -> TicketEvent:
    """An outbox row as adapters see it."""
    try:
        body = json.loads(row.body)
    except json.JSONDecodeError:
        body = {"raw": row.body}
    return TicketEvent(
        upstream=row.upstream,
        incident_id=row.incident_id,
        seq=row.seq,
        event=row.event,
        idempotency_key=row.idempotency_key,
        # The one redaction step for what leaves the host: secrets in log excerpts,
        # diagnostics or impact text are cut here, whatever wrote the row.
        body=redactor.value(body),
        created_at=row.created_at,
        attempts=row.attempts,
        id=row.id,
    )
