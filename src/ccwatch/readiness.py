"""Which configured sources and sinks are connected, for ``/readyz`` and a gauge."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from ccwatch.metrics import DaemonMetrics, shared_metrics


@dataclass
class Readiness:
    """Each dependency reports itself; the daemon is ready when all of them are."""

    registry: CollectorRegistry
    _states: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def expect(self, name: str, detail: str = "not connected yet") -> None:
        """Declare a dependency that must report ready before /readyz says 200."""
        self.set(name, False, detail)

    def set(self, name: str, ready: bool, detail: str = "") -> None:
        self._states[name] = (ready, detail)
        shared_metrics(DaemonMetrics, self.registry).ready.labels(dependency=name).set(int(ready))

    def forget(self, name: str) -> None:
        self._states.pop(name, None)
        metrics = shared_metrics(DaemonMetrics, self.registry)
        with contextlib.suppress(KeyError):
            metrics.ready.remove(name)

    def clear(self) -> None:
        for name in list(self._states):
            self.forget(name)

    def status(self, name: str) -> tuple[bool, str]:
        """Whether ``name`` is ready and its detail; one that has not reported is not."""
        return self._states.get(name, (False, "not reported yet"))

    def not_ready(self) -> dict[str, str]:
        return {name: detail for name, (ready, detail) in self._states.items() if not ready}

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: {"ready": ok, "detail": why} for name, (ok, why) in self._states.items()}
