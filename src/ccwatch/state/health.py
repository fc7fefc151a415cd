"""Watching the state database: is it still there and does it take writes?

``StateHealth.run`` probes the store every ``interval`` seconds and at once when woken
(the incident service wakes it on a failed write). The outcome goes to ``/readyz``
(dependency ``state_store``, 503 with the reason), the gauge ``ccwatch_state_store_ok``
and, on each change, one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from ccwatch.errors import StateStoreError
from ccwatch.metrics import shared_metrics
from ccwatch.readiness import Readiness
from ccwatch.state.store import StateStore

logger = logging.getLogger(__name__)

PROBE_INTERVAL = 10.0
READINESS_NAME = "state_store"


class StateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ok = Gauge(
            "ccwatch_state_store_ok",
            "1 while the state database takes writes (and, SQLite, is the file at state.path), "
            "else 0",
            registry=registry,
        )


class StateHealth:
    def __init__(
        self,
        store: StateStore,
        readiness: Readiness,
        registry: CollectorRegistry,
        interval: float = PROBE_INTERVAL,
    ) -> None:
        self.store = store
        self.readiness = readiness
        self.interval = interval
        self.metrics = shared_metrics(StateMetrics, registry)
        self._wakeup = asyncio.Event()
        self._last: str | None = None  # the last problem reported (None: healthy)

    def wake(self) -> None:
        """Probe now (a write just failed)."""
        self._wakeup.set()

    async def check(self) -> str | None:
        """Probe once and report; returns the problem or None."""
        try:
            problem = await self.store.run(self.store.check)
        except StateStoreError as exc:
            problem = str(exc)
        ok = problem is None
        self.metrics.ok.set(int(ok))
        self.readiness.set(READINESS_NAME, ok, problem or self.store.location)
        if problem != self._last:
            if ok:
                logger.info("state database %s takes writes again", self.store.location)
            else:
                logger.error("state database %s: %s", self.store.location, problem)
        self._last = problem
        return problem

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.interval)
