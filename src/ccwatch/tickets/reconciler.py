"""What comes back from the service desks: poll every open ticket, map it onto its incident.

For each desk upstream (``DeskAdapter``), one loop polls the tickets whose next poll is
due (``desk_tickets.next_poll_at``), the most overdue first, within the desk's rate limit
(``requests_per_minute``, shared with delivery; a 429's ``Retry-After`` pauses the desk).
What a poll sees (``DeskView``) changes the incident only through the incident service,
so it is in the timeline and goes to the other upstreams like any other change:

- the vendor's first real reply (auto-replies ignored), an assignee, or the ticket being
  worked on (as ``acknowledge_on`` says) → **acknowledge**, by ``<upstream>:<who>``;
- the ticket waiting on the customer (RT ``stalled``, Zendesk/Freshdesk ``pending``, …)
  → the incident **waiting on customer** (its resolution clock pauses), and back when it
  no longer is;
- solved upstream while ccwatch still sees the fault → one timeline note and one comment
  back ("still failing: …"), on the change only: never a reopen loop. Solved upstream
  after ccwatch resolved → nothing to do.

A ticket whose incident is over stops being polled. Poll failures back off (doubling up
to 10 times the interval) and are kept on the link (``ccwatch tickets list`` shows them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from ccwatch.errors import TemporaryUpstreamError, UpstreamError
from ccwatch.incidents.lifecycle import CLOSED_STATES
from ccwatch.incidents.model import Incident
from ccwatch.metrics import shared_metrics
from ccwatch.tickets.desk import DeskAdapter, DeskView, Phase, TicketRef
from ccwatch.tickets.links import Seen, TicketLink, TicketLinks

logger = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 10.0


class IncidentDoor(Protocol):
    """What the reconciler needs of the incident service."""

    async def get(self, incident_id: str) -> Incident | None: ...

    async def acknowledge(
        self, incident_id: str, by: str, now: float | None = None
    ) -> Incident: ...

    async def waiting_on_customer(
        self, incident_id: str, waiting: bool, source: str, now: float | None = None
    ) -> Incident: ...

    async def note(self, incident_id: str, change: str, *, detail: str = "") -> Incident: ...


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "ccwatch_desk_polls",
            "Polls of service-desk tickets by upstream and outcome (ok, retry, failed)",
            ["upstream", "outcome"],
            registry=registry,
        )
        self.changes = Counter(
            "ccwatch_desk_changes",
            "Incident changes made from what a service desk said, by upstream and change",
            ["upstream", "change"],
            registry=registry,
        )


def acknowledges(view: DeskView, acknowledge_on: list[str]) -> str | None:
    """Who acknowledged, if what the desk shows counts as an acknowledgement."""
    if "reply" in acknowledge_on and view.first_response_at is not None:
        return view.responder or "reply"
    if "assign" in acknowledge_on and view.assignee:
        return view.assignee
    if "in_progress" in acknowledge_on and view.phase in (Phase.IN_PROGRESS, Phase.WAITING):
        return view.assignee or view.responder or view.status
    return None


def still_failing(incident: Incident) -> str:
    return (
        f"ccwatch still sees this fault: {incident.summary}. The ticket was solved upstream; "
        "ccwatch keeps the incident open until the telemetry recovers."
    )


class Reconciler:
    """Polls the open tickets of every desk adapter and maps them onto incidents."""

    def __init__(
        self,
        desks: Mapping[str, DeskAdapter],
        links: TicketLinks,
        incidents: IncidentDoor,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 50,
        site: str | None = None,
    ) -> None:
        self.desks = dict(desks)
        self.links = links
        self.incidents = incidents
        self.metrics = shared_metrics(ReconcilerMetrics, registry)
        self.clock = clock
        self.batch = batch
        self.site = site  # a fleet worker's reconciler polls its site's tickets only
        self._failures: dict[tuple[str, str], int] = {}

    async def poll_due(self, upstream: str) -> int:
        """Poll every due ticket of ``upstream`` once; returns how many were polled."""
        desk = self.desks[upstream]
        polled = 0
        while True:
            due = await self.links.due(upstream, self.clock(), self.batch, self.site)
            if not due:
                return polled
            for link in due:
                await self.reconcile(desk, link)
                polled += 1

    async def reconcile(self, desk: DeskAdapter, link: TicketLink) -> None:
        interval = desk.config.poll_interval.total_seconds()
        key = (link.upstream, link.incident_id)
        incident = await self.incidents.get(link.incident_id)
        if incident is None or incident.state in CLOSED_STATES:
            await self.links.close(link.upstream, link.incident_id)
            return
        try:
            view = await desk.poll(TicketRef(link.ticket_id, link.url))
        except UpstreamError as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(interval * 2.0 ** (failures - 1), interval * MAX_BACKOFF_FACTOR)
            if isinstance(exc, TemporaryUpstreamError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            outcome = "retry" if isinstance(exc, TemporaryUpstreamError) else "failed"
            self.metrics.polls.labels(upstream=link.upstream, outcome=outcome).inc()
            now = self.clock()
            await self.links.observed(link, Seen(now, now + delay, error=str(exc)))
            if failures == 1:
                logger.warning(
                    "polling %s ticket %s failed: %s", link.upstream, link.ticket_id, exc
                )
            return
        self._failures.pop(key, None)
        self.metrics.polls.labels(upstream=link.upstream, outcome="ok").inc()
        await self.apply(desk, link, incident, view)
        now = self.clock()
        seen = Seen(
            now,
            now + interval,
            view.status,
            view.phase.value,
            view.first_response_at,
            view.responder,
        )
        await self.links.observed(link, seen)

    async def apply(
        self, desk: DeskAdapter, link: TicketLink, incident: Incident, view: DeskView
    ) -> None:
        """The incident changes ``view`` calls for (each one through the incident service)."""
        source = f"{link.upstream}:ticket {link.ticket_id}"
        changed = 0
        if incident.acknowledged_at is None:
            who = acknowledges(view, list(desk.config.acknowledge_on))
            if who is not None:
                await self.incidents.acknowledge(incident.id, by=f"{link.upstream}:{who}")
                self._changed(link, "acknowledge")
                changed += 1
        was_waiting = link.phase == Phase.WAITING.value
        if view.phase is Phase.WAITING and not was_waiting:
            await self.incidents.waiting_on_customer(incident.id, True, source)
            self._changed(link, "waiting_on_customer")
        elif was_waiting and view.phase is not Phase.WAITING:
            await self.incidents.waiting_on_customer(incident.id, False, source)
            self._changed(link, "customer_replied")
        if view.phase is Phase.SOLVED and link.phase != Phase.SOLVED.value:
            await self.incidents.note(
                incident.id,
                "upstream_solved",
                detail=f"{source} was set to {view.status!r} while the fault persists",
            )
            await desk.comment(TicketRef(link.ticket_id, link.url), still_failing(incident), None)
            self._changed(link, "upstream_solved")

    def _changed(self, link: TicketLink, change: str) -> None:
        self.metrics.changes.labels(upstream=link.upstream, change=change).inc()

    async def run_desk(self, upstream: str, tick: float = 1.0) -> None:
        """Poll ``upstream``'s due tickets for ever (a generation's service task)."""
        while True:
            try:
                await self.poll_due(upstream)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the %s reconciler failed; retrying", upstream)
            await asyncio.sleep(tick)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for upstream in self.desks:
                group.create_task(self.run_desk(upstream), name=f"reconcile:{upstream}")
