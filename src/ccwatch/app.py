"""The composition root: builds every service from the validated config and runs them.

The services of one config "generation" run as asyncio tasks; one that fails ends the
generation with its error, and on stop each gets ``SHUTDOWN_GRACE_SECONDS``. SIGTERM or
SIGINT ends the generation and the process; SIGHUP ends it, validates the config file
again and, if the new one is valid, starts the next generation with it. An invalid new
config is refused: the errors are logged, counted, and the old generation is restarted
unchanged. The HTTP server, the metrics registry and the state store outlive
generations, so ``/healthz`` keeps answering through a reload, and so does the incident
service (its open incidents and holds carry over a SIGHUP).

``build_services`` is where the features meet: it builds the outbox dispatcher, the SLA
watcher, the MQTT pipeline, the heartbeat and the scheduled jobs of one generation, hands
each its collaborators, and gives the incident service the one ``on_change`` fan-out that wakes
the dispatcher and the watcher. See docs/architecture.md, "Wiring".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccwatch.compose import (
    build_heartbeat,
    build_incident_service,
    build_mqtt_source,
    build_pipeline,
    build_ticket_services,
    configure_incident_service,
    open_state,
)
from ccwatch.config import Config, load_config
from ccwatch.errors import ConfigError
from ccwatch.history import LossRecorder
from ccwatch.http import HttpServer
from ccwatch.incidents.service import IncidentService
from ccwatch.logs import setup_logging
from ccwatch.metrics import DaemonMetrics, build_registry, shared_metrics
from ccwatch.readiness import Readiness
from ccwatch.runtime import Runtime
from ccwatch.state.health import StateHealth
from ccwatch.systemd import SystemdNotifier

if TYPE_CHECKING:
    from ccwatch.sites import FleetWorker

logger = logging.getLogger(__name__)

Service = Coroutine[Any, Any, None]


def config_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TICK_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 3.0


def build_services(runtime: Runtime) -> dict[str, Service]:
    """The long-running tasks of one config generation, by name, wired together.

    A service runs until cancelled and declares what /readyz must wait for through
    ``runtime.readiness``.
    """
    config = runtime.config
    incidents = runtime.incidents
    services: dict[str, Service] = {}

    # Tickets: the outbox dispatcher, the desks' reconciler and the SLA watcher.
    tickets = build_ticket_services(
        config,
        incidents,
        runtime.store,
        runtime.registry,
        runtime.clock,
        dispatcher_options={"readiness": runtime.readiness},
    )
    services.update(tickets.services)

    health = StateHealth(runtime.store, runtime.readiness, runtime.registry)
    services["state_health"] = health.run()
    runtime.maintenance.refresh_sync(runtime.store, runtime.clock())
    configure_incident_service(
        incidents,
        config,
        tickets.on_change,
        on_write_failure=health.wake,
        calendar=runtime.maintenance,
    )

    # The core loop: MQTT -> pipeline -> incident service, and the ticker.
    pipeline = build_pipeline(config, incidents, runtime.registry, runtime.clock)
    source = build_mqtt_source(config, pipeline, runtime.registry, runtime.readiness, runtime.clock)
    services["mqtt"] = source.run()
    # The per-minute loss history (the pages' charts): reads the pipeline once a second.
    recorder = LossRecorder(runtime.store, pipeline.readings, clock=runtime.clock)
    runtime.recorder = recorder
    services["loss_history"] = recorder.run()
    services["incident_ticker"] = incidents.run_ticker(TICK_SECONDS)
    # The dead-man's switch: pings while MQTT, the state store and ingest are healthy.
    heartbeat = build_heartbeat(
        config, pipeline, runtime.registry, runtime.readiness, runtime.clock
    )
    if heartbeat is not None:
        services["heartbeat"] = heartbeat.run()

    # Scheduled jobs: one scheduler for every cron job.
    from ccwatch.checklists.service import checklist_scheduled_jobs
    from ccwatch.scheduler import run_scheduler

    jobs = checklist_scheduled_jobs(
        config.checklists,
        config.check_settings(),
        config.email,
        store=runtime.store,
        registry=runtime.registry,
        incidents=incidents,
    )
    if config.retention.enabled_databases:  # the retention job is loaded when it has work
        from ccwatch.retention.job import retention_scheduled_jobs

        jobs += retention_scheduled_jobs(
            config.retention, registry=runtime.registry, incidents=incidents
        )
    if jobs:
        services["scheduler"] = run_scheduler(jobs, runtime.store)
    return services


class Daemon:
    def __init__(self, config: Config, config_path: Path) -> None:
        registry = build_registry()
        self.metrics = shared_metrics(DaemonMetrics, registry)
        store = open_state(config.state)
        self.worker: FleetWorker | None = None
        if config.sites is None:
            incidents: IncidentService = build_incident_service(config, store, registry)
        else:
            # Several sites: imported only here, the single-site path never loads it.
            from ccwatch.sites import fleet_incidents

            incidents = fleet_incidents(config, store)
        self.runtime = Runtime(
            config=config,
            config_path=config_path,
            registry=registry,
            store=store,
            readiness=Readiness(registry),
            incidents=incidents,
        )
        if config.sites is not None:
            from ccwatch.sites import FleetWorker

            self.worker = FleetWorker(self.runtime)
        self.notifier = SystemdNotifier()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.metrics.set_config(config.site, config_digest(config_path))
        self.metrics.config_last_reload_success.set(time.time())

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        http = HttpServer(self.runtime)
        config = self.runtime.config
        await http.start(config.http.host, config.http.port)
        watchdog = asyncio.create_task(self.notifier.watchdog_loop(), name="watchdog")
        try:
            first = True
            while not self._stop.is_set():
                await self._run_generation(announce_ready=first)
                first = False
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._apply_reload(http)
        finally:
            self.notifier.stopping()
            logger.info("stopping")
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await http.stop()
            await self.runtime.incidents.aclose()
            self.runtime.store.close()
            self.notifier.close()
        return 0

    async def _run_generation(self, announce_ready: bool) -> None:
        """Run one generation's services until stop or reload; a service that fails ends
        the generation with its error (the process exits, systemd restarts it)."""
        config = self.runtime.config
        services = build_services(self.runtime) if self.worker is None else self.worker.services()
        tasks = {asyncio.create_task(service, name=name) for name, service in services.items()}
        summary = f"watching site {config.site}: {len(config.components)} components"
        if self.worker is not None:
            summary = f"fleet worker {self.worker.worker} of {config.site}"
        if announce_ready:
            logger.info("ccwatch ready, %s", summary)
        self.notifier.ready(summary)
        stop_wait = asyncio.create_task(self._stop.wait())
        reload_wait = asyncio.create_task(self._reload.wait())
        failed: BaseException | None = None
        try:
            running = set(tasks)
            while running:
                done, _ = await asyncio.wait(
                    {stop_wait, reload_wait, *running}, return_when=asyncio.FIRST_COMPLETED
                )
                if stop_wait in done or reload_wait in done:
                    break
                for task in done & running:
                    running.discard(task)
                    if not task.cancelled() and task.exception() is not None:
                        failed = task.exception()
                if failed is not None:
                    break
        finally:
            stop_wait.cancel()
            reload_wait.cancel()
            await self._cancel_services(tasks)
        if failed is not None:
            raise failed

    async def _cancel_services(self, tasks: set[asyncio.Task[None]]) -> None:
        """Cancel the generation's services and wait for them, for a bounded time: one
        that does not stop is named in the log with where it is stuck."""
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
        for task in stuck:
            frames = task.get_stack()
            where = (
                "".join(traceback.format_list(traceback.extract_stack(frames[-1])))
                if frames
                else "(no frame)"
            )
            logger.error(
                "service %s did not stop within %.0f s of being cancelled (a ccwatch bug); "
                "stuck at:\n%s",
                task.get_name(),
                SHUTDOWN_GRACE_SECONDS,
                where,
            )

    async def _apply_reload(self, http: HttpServer) -> None:
        self.notifier.reloading()
        path = self.runtime.config_path
        try:
            # Parsed on a thread: a large or slow config file must not stall /healthz and
            # the watchdog while it is read.
            new_config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self.metrics.config_reload_failures.inc()
            self.metrics.config_last_reload_successful.set(0)
            logger.error(
                "config reload refused, keeping the running config; fix %s and send SIGHUP "
                "again: %s",
                path,
                "; ".join(exc.problems),
            )
            return
        old_config = self.runtime.config
        if new_config.state != old_config.state:
            logger.warning(
                "state changed to %s; a running daemon keeps %s until restarted",
                new_config.state.describe(),
                old_config.state.describe(),
            )
            new_config = new_config.model_copy(update={"state": old_config.state})
        if new_config.http.listen != old_config.http.listen:
            try:
                await http.start(new_config.http.host, new_config.http.port)
            except OSError as exc:
                self.metrics.config_reload_failures.inc()
                self.metrics.config_last_reload_successful.set(0)
                logger.error(
                    "config reload refused: cannot listen on %s (%s); keeping the running config",
                    new_config.http.listen,
                    exc.strerror,
                )
                return
        self.runtime.config = new_config
        self.runtime.readiness.clear()
        setup_logging(new_config.logging.level, new_config.logging.format)
        self.metrics.set_config(new_config.site, config_digest(path))
        self.metrics.config_last_reload_successful.set(1)
        self.metrics.config_last_reload_success.set(time.time())
        logger.info("config reloaded from %s: %s", path, new_config.summary())


def run_daemon(config: Config, config_path: Path) -> int:
    setup_logging(config.logging.level, config.logging.format)
    daemon = Daemon(config, config_path)
    return asyncio.run(daemon.run())
