"""The heartbeat loop: one of a generation's service tasks (``app.build_services``).

Every ``interval`` it asks the daemon for its health inputs (``probe``), decides with the
pure ``assess`` and, while healthy, pings every target. While unhealthy it pings
nothing; with ``signal_failure`` a target that has a failure signal (the ping URL's
``/fail``) is sent the reason once the problem was seen on two beats in a row, so a
broker blip shorter than one interval costs one ping, not a page. The first beat is one
interval after the start, so a (re)start is not reported as the broker connection still
being made.

It never raises: a send that fails is counted, and the log gets one line per change of
health and per change of a target's state, not one per beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from ccwatch.durations import format_duration
from ccwatch.errors import UpstreamError
from ccwatch.heartbeat.config import HeartbeatConfig
from ccwatch.heartbeat.health import Health, HealthInputs, assess
from ccwatch.heartbeat.targets import Target
from ccwatch.metrics import shared_metrics

logger = logging.getLogger(__name__)

OUTCOMES = ("ok", "fail", "error")
"""``ok``: a healthy ping accepted; ``fail``: a failure signal accepted; ``error``: a send
the target did not accept (timeout, refused, an HTTP error)."""


class HeartbeatMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "ccwatch_heartbeat_last_success_timestamp_seconds",
            "Unix time a target last accepted a heartbeat of a healthy ccwatch",
            ["target"],
            registry=registry,
        )
        self.sends = Counter(
            "ccwatch_heartbeat_sends_total",
            "Heartbeat sends by target and outcome (ok: a healthy ping accepted, fail: a "
            "failure signal accepted, error: not accepted)",
            ["target", "outcome"],
            registry=registry,
        )


class Heartbeat:
    """See the module docstring. ``run()`` runs until cancelled."""

    def __init__(
        self,
        config: HeartbeatConfig,
        targets: Sequence[Target],
        probe: Callable[[], HealthInputs],
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = config.interval.total_seconds()
        self._every = format_duration(config.interval)
        self.max_stall = config.max_stall.total_seconds() if config.max_stall else None
        self.signal_failure = config.signal_failure
        self.targets = tuple(targets)
        self.probe = probe
        self.clock = clock
        self.metrics = shared_metrics(HeartbeatMetrics, registry)
        for target in self.targets:
            for outcome in OUTCOMES:
                self.metrics.sends.labels(target=target.kind, outcome=outcome)
        self.watching_since = clock()
        self.health: Health | None = None  # the last decision
        self._unhealthy_beats = 0
        self._target_problem: dict[str, str | None] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.watching_since = self.clock()
        logger.info(
            "heartbeat: every %s to %s while healthy",
            self._every,
            ", ".join(target.shown for target in self.targets),
        )
        next_beat = loop.time() + self.interval
        try:
            while True:
                await asyncio.sleep(max(0.0, next_beat - loop.time()))
                next_beat = max(next_beat + self.interval, loop.time())
                try:
                    await self.beat()
                except Exception:
                    logger.exception("heartbeat: a beat failed (a ccwatch bug); trying again")
        finally:
            for target in self.targets:
                with contextlib.suppress(Exception):
                    await target.aclose()

    async def beat(self) -> Health:
        """One beat: decide, log a change, send."""
        now = self.clock()
        health = assess(self.probe(), self.watching_since, now, self.max_stall)
        self._log_change(health)
        self.health = health
        if health.healthy:
            self._unhealthy_beats = 0
            await self._send_all(now, None)
        else:
            self._unhealthy_beats += 1
            if self.signal_failure and self._unhealthy_beats >= 2:
                await self._send_all(now, health.reason)
        return health

    def _log_change(self, health: Health) -> None:
        before = self.health
        if before is not None and before.healthy == health.healthy:
            return
        if not health.healthy:
            logger.warning(
                "heartbeat: ccwatch is unhealthy, not pinging%s: %s",
                " (signalling the failure)" if self.signal_failure else "",
                health.reason,
            )
        elif before is not None:
            logger.info("heartbeat: ccwatch is healthy again, pinging")

    async def _send_all(self, now: float, reason: str | None) -> None:
        await asyncio.gather(*(self._send(target, now, reason) for target in self.targets))

    async def _send(self, target: Target, now: float, reason: str | None) -> None:
        problem: str | None = None
        bug: Exception | None = None
        try:
            if reason is None:
                await target.alive(now)
                outcome = "ok"
            elif await target.failing(reason, now):
                outcome = "fail"
            else:
                return  # no failure signal: the silence says it
        except UpstreamError as exc:
            outcome, problem = "error", str(exc)
        except Exception as exc:
            outcome, problem, bug = "error", f"{type(exc).__name__} (a ccwatch bug)", exc
        self.metrics.sends.labels(target=target.kind, outcome=outcome).inc()
        if outcome == "ok":
            self.metrics.last_success.labels(target=target.kind).set(now)
        self._log_target(target, problem, bug)

    def _log_target(self, target: Target, problem: str | None, bug: Exception | None) -> None:
        before = self._target_problem.get(target.kind)
        self._target_problem[target.kind] = problem
        if (before is None) == (problem is None):
            return
        if problem is not None:
            logger.warning(
                "heartbeat: sending to %s failed, retrying every beat: %s",
                target.kind,
                problem,
                exc_info=bug,
            )
        else:
            logger.info("heartbeat: %s takes the heartbeat again", target.shown)
