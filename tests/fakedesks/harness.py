"""A real incident service and state store for the desk contract tests.

Events come from real incidents (``IncidentService`` → outbox rows → ``ticket_event``),
and ``drain`` delivers them to an adapter the way the dispatcher does: each incident's
pending head in order, marked delivered once the adapter returned.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ccwatch.compose import incident_settings, open_state
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import Reading
from ccwatch.incidents.model import Incident
from ccwatch.incidents.service import IncidentService
from ccwatch.redact import Redactor
from ccwatch.severity import Severity
from ccwatch.tickets.adapters import UPSTREAMS
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent
from ccwatch.tickets.desk import DeskAdapter
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.outbox import ticket_event

CRITICAL = Reading(Severity.CRITICAL, 0.23, "23 of 100 agents cannot take calls (23.0%)")
MAJOR = Reading(Severity.MAJOR, 0.05, "5 of 100 agents cannot take calls (5.0%)")
MINOR = Reading(Severity.MINOR, 0.01, "1 of 100 agents cannot take calls (1.0%)")
CLEAN = Reading(Severity.NONE, 0.0, "no production loss")
T0 = 1_795_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """One site (blr1) with one desk upstream, a real store and incident service."""

    def __init__(self, tmp_path: Path, upstream: dict[str, Any]) -> None:
        self.clock = Clock()
        self.config = Config.model_validate(
            {
                "site": "blr1",
                "state": {"path": str(tmp_path / "state.db")},
                "classification": {"open_after": "0s", "resolve_after": "60s"},
                "tickets": [upstream],
            }
        )
        self.upstream = self.config.tickets[0]
        self.name = self.upstream.upstream_name
        self.store = open_state(tmp_path / "state.db")
        self.links = TicketLinks(self.store)
        self.service = IncidentService(
            self.store,
            incident_settings(self.config),
            CollectorRegistry(),
            clock=self.clock,
            monotonic=self.clock,
        )
        self.service.load_sync()

    def adapter(self) -> DeskAdapter:
        context = AdapterContext(site="blr1", clock=self.clock, links=self.links)
        adapter = UPSTREAMS[self.upstream.type].adapter(self.upstream, context)
        assert isinstance(adapter, DeskAdapter)
        return adapter

    async def observe(self, reading: Reading, at: float, component: str = "acd") -> None:
        self.clock.now = at
        await self.service.apply(self.service.observe(component, reading, at))

    def pending(self) -> list[TicketEvent]:
        rows = self.store.run_sync(lambda c: repository.select_ready(c, self.name, 100))
        return [ticket_event(row, Redactor()) for row in rows]

    async def drain(self, adapter: DeskAdapter) -> list[TicketEvent]:
        """Deliver every pending event (per incident, in order) like the dispatcher."""
        delivered: list[TicketEvent] = []
        while events := self.pending():
            for event in events:
                await adapter.deliver(event)
                outcome = repository.Outcome(event.id, "delivered", None, self.clock.now)
                self.store.run_sync(
                    lambda c, o=outcome: repository.record_outcomes(c, [o], self.clock.now)
                )
                delivered.append(event)
        return delivered

    def incident(self) -> Incident:
        [incident] = self.store.run_sync(lambda c: repository.list_incidents(c))
        return incident

    def close(self) -> None:
        self.store.close()


def variant(event: TicketEvent, name: str, **body: Any) -> TicketEvent:
    """The same incident's event under another name (e.g. ``expire``) at the next seq."""
    seq = event.seq + 1
    return dataclasses.replace(
        event,
        event=name,
        seq=seq,
        idempotency_key=f"{event.dedup_key}:{seq}",
        body={**event.body, "event": name, "seq": seq, **body},
    )
