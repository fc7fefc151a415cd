"""Several sites per process and several workers (``sites:``): the fleet part of the
composition root. ``app.py`` imports it only when ``sites:`` is configured.

A worker runs a ``LeaseManager`` (``fleet/manager.py``); for each site whose lease it
takes, ``FleetWorker.run_site(lease)`` builds and runs that site's services, as the
single-site daemon builds its own (``app.build_services``), from ``config.for_site``:

- an ``IncidentService`` of the site (its incidents loaded from the database, so the
  incidents continue under the same ids on another worker), with the lease's fence;
- its ``Pipeline`` (windows of its own) and an ``MqttSource`` on a persistent session
  of its own, ``<fleet.client_id_prefix>-<site>``: while no worker holds the site, the
  broker keeps the site's QoS 1 messages in that session and hands them to the next
  holder, which connects with the same id (a holder that froze is disconnected by the
  broker when the new one connects: MQTT allows one connection per client id);
- its ``OutboxDispatcher`` (adapters of its own, the site's rows only, fenced) and its
  ``SlaWatcher``, and the incident ticker.

A message is acknowledged to the broker only while the lease is valid: once the local
deadline passed or a write was fenced, the site's source waits (unacknowledged) until
the site is stopped, so the broker hands the message to the next holder.

Per-site metrics live in a registry per site; ``SiteMetrics`` exposes them through the
daemon's registry with a ``site`` label. ``FleetIncidents`` is ``runtime.incidents`` for
the HTTP API and the CLI: it passes each change to the service of the incident's site
when this worker holds it, and refuses it (naming the worker that holds it) otherwise.

Per site also the service desks' reconciler (the site's tickets only) and the loss
recorder (``history.LossRecorder``, the site's rows of ``loss_history``; it does not
prune). Per worker the dead-man's switch (``heartbeat:``): healthy while the state store
takes writes and every held site's MQTT session is up and messages arrive
(``heartbeat.health.fleet_health``; a worker holding no site is a healthy standby).

Scheduled jobs run under *job leases* (``fleet.leases.JOBS``), each held by one worker
of the fleet at a time, like a site but outside the balancing (``run_job(lease)``):

- ``fleet``: the fleet's own jobs — retention (``retention:``, the contact-center
  databases are the fleet's, so one run per occurrence for the whole fleet) and the
  hourly pruning of ``loss_history`` — and the incidents they raise, of the site
  ``config.site`` (the fleet's name);
- ``host:<host>`` (with a scheduled checklist): the checklists, which check the host
  they run on, so each host of the fleet runs them for itself, once (two workers on one
  host: one of them). Their runs are named ``<checklist>@<host>`` (history, metrics,
  report) and their incidents are of the site ``host:<host>``.

The holder of a job lease runs, for its incidents' site, what a site runs but MQTT: an
incident service fenced by the job lease, its dispatcher, SLA watcher, reconciler and
ticker, and one scheduler (``ccwatch.scheduler``) whose runs check the lease before they
start and are recorded under its fence in the shared ``scheduler_runs``. One writer per
incidents' site, as for a site: that is why a lease covers an incidents' site and all
its jobs rather than one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import aiomqtt
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ccwatch import history
from ccwatch.compose import (
    build_pipeline,
    build_ticket_services,
    configure_incident_service,
    heartbeat_with,
)
from ccwatch.compose import incident_settings as site_incident_settings
from ccwatch.config import Config
from ccwatch.errors import LeaseLostError, StateStoreError
from ccwatch.fleet import leases
from ccwatch.fleet.leases import FLEET_JOB, HOST_JOB_PREFIX, Lease
from ccwatch.fleet.manager import LeaseManager, Timings
from ccwatch.heartbeat.health import HealthInputs, fleet_health
from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident
from ccwatch.incidents.service import IncidentService
from ccwatch.ingest.mqtt import MqttSource
from ccwatch.ingest.pipeline import Pipeline
from ccwatch.mqtt import new_client, subscriptions
from ccwatch.runtime import Runtime
from ccwatch.state import StateStore
from ccwatch.state.health import READINESS_NAME as STATE_READINESS
from ccwatch.state.health import StateHealth

logger = logging.getLogger(__name__)

Service = Coroutine[Any, Any, None]
Extras = Callable[
    [Config, IncidentService, Lease, CollectorRegistry, asyncio.Event],
    Awaitable[dict[str, Service]],
]
TICK_SECONDS = 1.0
OUTBOX_POLL_SECONDS = 10.0
DISCOVERY_LISTEN = 2.0  # seconds the topics are listened to per discovery pass
# Changes that do not move an SLA clock (as in app.py).


class SiteMetrics(Collector):
    """The per-site registries, exposed with a ``site`` label (see the module docstring)."""

    def __init__(self) -> None:
        self.registries: dict[str, CollectorRegistry] = {}

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for site, registry in list(self.registries.items()):
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    labels = sample.labels
                    if "site" not in labels:
                        labels = {"site": site, **labels}
                    merged.samples.append(
                        Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                    )
        return list(families.values())

    def describe(self) -> Iterable[Metric]:
        return []


class IncidentElsewhereError(ValueError):
    """The incident's site is not held by this worker (the API answers 409 with this)."""


class FleetIncidents(IncidentService):
    """``runtime.incidents`` of a worker: incident changes of the API and the CLI go to
    the service of the incident's site when this worker holds it (see the module
    docstring). Reads are the base class's (the database holds every site)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owners: dict[str, IncidentService] = {}
        self.holder_of: Callable[[str], str] = lambda site: "another worker"

    async def _owner(self, incident_id: str) -> IncidentService:
        stored = await self.get(incident_id)
        if stored is None:
            raise repository.UnknownIncidentError(incident_id)
        service = self.owners.get(stored.site)
        if service is None or service.fenced is not None:
            raise IncidentElsewhereError(
                f"incident {incident_id} belongs to site {stored.site}, which "
                f"{self.holder_of(stored.site)} processes; send the change there"
            )
        return service

    async def _call(
        self, incident_id: str, change: Callable[[IncidentService], Awaitable[Incident]]
    ) -> Incident:
        service = await self._owner(incident_id)
        try:
            return await change(service)
        except LeaseLostError as exc:
            raise IncidentElsewhereError(
                f"incident {incident_id}: site {exc.site} moved to another worker; try again there"
            ) from exc

    async def acknowledge(self, incident_id: str, by: str, now: float | None = None) -> Incident:
        return await self._call(incident_id, lambda s: s.acknowledge(incident_id, by, now))

    async def note(self, incident_id: str, change: str, **kwargs: Any) -> Incident:
        return await self._call(incident_id, lambda s: s.note(incident_id, change, **kwargs))

    async def rca_delivered(
        self, incident_id: str, delivered: str, by: str, now: float | None = None
    ) -> Incident:
        return await self._call(
            incident_id, lambda s: s.rca_delivered(incident_id, delivered, by, now)
        )

    async def rca_deferred(
        self, incident_id: str, reason: str, until: float, by: str, now: float | None = None
    ) -> Incident:
        return await self._call(
            incident_id, lambda s: s.rca_deferred(incident_id, reason, until, by, now)
        )

    async def exempt_sla(
        self, incident_id: str, reason: str, by: str, now: float | None = None
    ) -> Incident:
        return await self._call(incident_id, lambda s: s.exempt_sla(incident_id, reason, by, now))

    async def lift_sla_exemption(
        self, incident_id: str, by: str, reason: str = "", now: float | None = None
    ) -> Incident:
        return await self._call(
            incident_id, lambda s: s.lift_sla_exemption(incident_id, by, reason, now)
        )

    async def waiting_on_customer(
        self, incident_id: str, waiting: bool, source: str, now: float | None = None
    ) -> Incident:
        return await self._call(
            incident_id, lambda s: s.waiting_on_customer(incident_id, waiting, source, now)
        )


def fleet_incidents(config: Config, store: StateStore) -> FleetIncidents:
    """The worker's ``runtime.incidents`` (its own registry: the sites' services report
    the incident metrics, each with its ``site``)."""
    return FleetIncidents(store, site_incident_settings(config), CollectorRegistry())


def _nothing() -> None:
    return None


def _never() -> Awaitable[None]:
    """An awaitable that ends only when cancelled (a message left unacknowledged)."""
    return asyncio.get_running_loop().create_future()


class FleetWorker:
    """What a worker keeps across config generations: the per-site metrics and the
    façade of the API. ``services(runtime)`` builds one generation's tasks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.metrics = SiteMetrics()
        runtime.registry.register(self.metrics)
        config = runtime.config
        self.worker = config.fleet_settings().worker()
        self.host = config.fleet_settings().host_name()
        self.manager: LeaseManager | None = None
        self.health: StateHealth | None = None
        # The sites running here now: their MQTT source and pipeline (for the heartbeat).
        self.held: dict[str, tuple[MqttSource, Pipeline]] = {}

    @property
    def incidents(self) -> FleetIncidents:
        incidents = self.runtime.incidents
        assert isinstance(incidents, FleetIncidents)
        return incidents

    def services(self) -> dict[str, Service]:
        runtime = self.runtime
        config = runtime.config
        assert config.sites is not None
        fleet = config.fleet_settings()
        runtime.maintenance.refresh_sync(runtime.store, runtime.clock())
        from ccwatch.maintenance.config import schedules

        runtime.maintenance.scheduled = schedules(config.maintenance)
        url = fleet.advertise_url or f"http://{config.http.listen}"
        timings = Timings(
            ttl=fleet.ttl(),
            renew_every=fleet.renew_interval(),
            margin=fleet.margin(),
            rebalance_every=fleet.rebalance_every.total_seconds(),
        )
        manager = LeaseManager(
            runtime.store,
            self.worker,
            url,
            timings,
            config.sites.configured(),
            self.run_site,
            runtime.registry,
            discover=config.sites.discover,
            readiness=runtime.readiness,
            jobs=self.job_leases(config),
            start_job=self.run_job,
        )
        self.manager = manager
        runtime.fleet = manager
        self.incidents.holder_of = self._holder_of
        health = StateHealth(runtime.store, runtime.readiness, runtime.registry)
        self.health = health
        services: dict[str, Service] = {"fleet": manager.run(), "state_health": health.run()}
        if config.sites.discover:
            services["site_discovery"] = self.discover()
        heartbeat = heartbeat_with(config, self.health_inputs, runtime.registry, runtime.clock)
        if heartbeat is not None:
            services["heartbeat"] = heartbeat.run()
        return services

    def job_leases(self, config: Config) -> list[str]:
        """The job leases this worker takes when free (see the module docstring)."""
        wanted = [FLEET_JOB]
        if any(c.schedule is not None for c in config.checklists.definitions):
            wanted.append(HOST_JOB_PREFIX + self.host)
        return wanted

    def job_site(self, name: str) -> str:
        """The site of the incidents a job lease's jobs raise."""
        return self.runtime.config.site if name == FLEET_JOB else name

    def job_config(self, name: str) -> Config:
        """The config as a job lease's jobs see it: its incidents' site and, for a host,
        its checklists named ``<checklist>@<host>``."""
        config = self.runtime.config
        if name == FLEET_JOB:
            return config
        host = name.removeprefix(HOST_JOB_PREFIX)
        checklists = config.checklists.model_copy(
            update={
                "definitions": [
                    c.model_copy(update={"name": f"{c.name}@{host}"})
                    for c in config.checklists.definitions
                ]
            }
        )
        return config.model_copy(update={"site": name, "checklists": checklists})

    def health_inputs(self) -> HealthInputs:
        """The dead-man's switch of a fleet worker: the state store, and every held site's
        MQTT session and last message (see ``fleet_health``)."""
        state_ok, state_detail = self.runtime.readiness.status(STATE_READINESS)
        sites = [
            (site, source.subscribed, source.problem, pipeline.last_message_at)
            for site, (source, pipeline) in sorted(self.held.items())
        ]
        return fleet_health(sites, None if state_ok else state_detail, self.runtime.clock())

    def _holder_of(self, site: str) -> str:
        snapshot = self.manager.snapshot if self.manager is not None else None
        if snapshot is not None:
            rows, name = snapshot.leases, site
            if site == self.runtime.config.site or site.startswith(HOST_JOB_PREFIX):
                rows = snapshot.jobs
                name = FLEET_JOB if site == self.runtime.config.site else site
            for row in rows:
                if row.site == name and row.held_at(snapshot.now):
                    urls = {w.worker: w.url for w in snapshot.workers}
                    return f"worker {row.holder} ({urls.get(row.holder or '', '?')})"
        return "no worker right now (it is moving)"

    # --- one site -------------------------------------------------------------------

    async def run_site(self, lease: Lease) -> None:
        """The site's services until cancelled or the lease is lost (raises it)."""
        await self._run_lease(lease, self.runtime.config.for_site(lease.site), self._site_extras)

    async def run_job(self, lease: Lease) -> None:
        """A job lease's jobs and its incidents' services, until cancelled or the lease
        is lost (raises it); see the module docstring."""
        await self._run_lease(lease, self.job_config(lease.site), self._job_extras)

    async def _run_lease(self, lease: Lease, config: Config, extras: Extras) -> None:
        """What a lease covers: an incident service of ``config.site`` fenced by the
        lease, its dispatcher, SLA watcher, reconciler and ticker, and ``extras`` (a
        site's MQTT session and pipeline, a job lease's scheduler)."""
        site = config.site
        what = "site" if lease.table is leases.SITES else f"job lease {lease.site}: site"
        runtime = self.runtime
        registry = CollectorRegistry()
        stopping = asyncio.Event()
        service = IncidentService(
            runtime.store,
            site_incident_settings(config),
            registry,
            clock=runtime.clock,
            fence=lease.fence,
            on_fenced=lambda exc: stopping.set(),
        )
        try:
            self.metrics.registries[site] = registry
            services = self._site_services(config, service, lease, registry)
            services.update(await extras(config, service, lease, registry, stopping))
            await service.load()
            freed = await runtime.store.run(
                lambda c: repository.release_site_claims(c, site, lease.fence)
            )
            if freed:
                logger.info(
                    "%s %s: %d outbox row(s) of the previous holder freed", what, site, freed
                )
            self.incidents.owners[site] = service
            logger.info("%s %s: processing here (lease epoch %d)", what, site, lease.epoch)
            async with asyncio.TaskGroup() as group:
                for name, coroutine in services.items():
                    group.create_task(coroutine, name=f"{site}:{name}")
                await stopping.wait()
                raise lease.lost or service.fenced or LeaseLostError(site, lease.epoch, "stopped")
        finally:
            if self.incidents.owners.get(site) is service:
                del self.incidents.owners[site]
            if self.metrics.registries.get(site) is registry:
                del self.metrics.registries[site]
            self.held.pop(site, None)
            runtime.site_recorders.pop(site, None)
            await service.aclose()

    def _site_services(
        self,
        config: Config,
        service: IncidentService,
        lease: Lease,
        registry: CollectorRegistry,
    ) -> dict[str, Service]:
        """The services of an incidents' site (a site, or a job lease's): dispatcher, SLA
        watcher, reconciler, ticker, and the incident service's hooks."""
        runtime = self.runtime
        site = config.site
        tickets = build_ticket_services(
            config,
            service,
            runtime.store,
            registry,
            runtime.clock,
            site=site,
            dispatcher_options={
                "site": site,
                "fence": lease.fence,
                "guard": lease.guard,
                # Woken by every committed change of the site (only this worker writes
                # them) and at each retry's due time: the poll is only a fallback, and
                # polling each site's outbox every second was most of a worker's CPU
                # (bench/fleet.py).
                "poll_interval": OUTBOX_POLL_SECONDS,
            },
        )
        services: dict[str, Service] = dict(tickets.services)
        configure_incident_service(
            service,
            config,
            tickets.on_change,
            on_write_failure=self.health.wake if self.health is not None else _nothing,
            calendar=runtime.maintenance,
        )
        services["incident_ticker"] = service.run_ticker(TICK_SECONDS)
        return services

    async def _site_extras(
        self,
        config: Config,
        service: IncidentService,
        lease: Lease,
        registry: CollectorRegistry,
        stopping: asyncio.Event,
    ) -> dict[str, Service]:
        """A site's MQTT session, pipeline and loss recorder."""
        runtime = self.runtime
        site = config.site
        pipeline = build_pipeline(config, service, registry, runtime.clock)

        def handle(topic: str, payload: bytes, received_at: float) -> Awaitable[None] | None:
            # Acknowledged (by returning) only while the lease holds: see the module
            # docstring. Otherwise the message waits, unacknowledged, for the next holder.
            if lease.lost is not None or lease.remaining() <= 0:
                stopping.set()
                return _never()
            pending = pipeline.handle_message(topic, payload, received_at)
            if pending is None:
                return None
            return _after_write(pending)

        async def _after_write(pending: Awaitable[None]) -> None:
            await pending
            if service.fenced is not None or lease.lost is not None:
                stopping.set()
                await _never()

        source = MqttSource(
            config.mqtt,
            site,
            handle,
            registry,
            None,
            runtime.clock,
            client_id=config.mqtt_client_id,
        )
        # The site's per-minute loss history (the pages' charts); the fleet prunes it once,
        # under the `fleet` job lease.
        recorder = history.LossRecorder(
            runtime.store, pipeline.readings, clock=runtime.clock, site=site, prune=False
        )
        self.held[site] = (source, pipeline)
        runtime.site_recorders[site] = recorder
        return {"mqtt": source.run(), "loss_history": recorder.run()}

    async def _job_extras(
        self,
        config: Config,
        service: IncidentService,
        lease: Lease,
        registry: CollectorRegistry,
        stopping: asyncio.Event,
    ) -> dict[str, Service]:
        """A job lease's scheduler (and, for ``fleet``, the loss history's pruning)."""
        runtime = self.runtime
        from ccwatch.scheduler import ScheduledJob, run_scheduler

        services: dict[str, Service] = {}
        jobs: list[ScheduledJob] = []
        if lease.site == FLEET_JOB:
            from ccwatch.retention.job import retention_scheduled_jobs

            jobs += retention_scheduled_jobs(config.retention, registry=registry, incidents=service)
            services["loss_history_prune"] = history.prune_every(runtime.store, clock=runtime.clock)
        else:
            from ccwatch.checklists.service import checklist_scheduled_jobs

            # The checks read the fleet's settings (the root config); the history and
            # the metrics they restore from it are the host's (``<checklist>@<host>``).
            settings = runtime.config.check_settings()
            jobs += await asyncio.to_thread(
                lambda: checklist_scheduled_jobs(
                    config.checklists,
                    settings,
                    config.email,
                    store=runtime.store,
                    registry=registry,
                    incidents=service,
                )
            )
        if jobs:
            services["scheduler"] = run_scheduler(
                jobs, runtime.store, clock=runtime.clock, guard=lease.guard, fence=lease.fence
            )
        return services

    # --- discovery ------------------------------------------------------------------

    async def discover(self) -> None:
        """Every ``sites.discover_every``: listen to every site's topics for a moment and
        give each site not in the lease table a row (then the fleet balances it)."""
        config = self.runtime.config
        assert config.sites is not None
        every = config.sites.discover_every.total_seconds()
        while True:
            try:
                seen = await discover_sites(config, f"{self.worker}-discovery")
                # `site` names the fleet (its own incidents' site), never one of its sites.
                found = sorted(seen - {config.site})
                if found:
                    await self.runtime.store.run(
                        lambda c, names=found: leases.ensure_sites(c, names)  # type: ignore[misc]
                    )
            except (aiomqtt.MqttError, OSError, StateStoreError) as exc:
                logger.warning("sites: discovery pass failed: %s; trying again later", exc)
            await asyncio.sleep(every)


async def discover_sites(
    config: Config, client_id: str, listen: float = DISCOVERY_LISTEN
) -> set[str]:
    """The sites publishing under ``mqtt.topic_prefix`` within ``listen`` seconds (a
    clean session at QoS 0: nothing is queued for it)."""
    mqtt = config.mqtt.model_copy(update={"client_id": None})
    prefix = mqtt.topic_prefix.rstrip("/") + "/"
    found: set[str] = set()
    client = new_client(mqtt, client_id, clean_session=True, timeout=10)
    async with client:
        await client.subscribe([(topic, 0) for topic in subscriptions(mqtt, "+")])
        deadline = time.monotonic() + listen
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(listen):
                async for message in client.messages:
                    topic = message.topic.value
                    if topic.startswith(prefix):
                        site = topic[len(prefix) :].split("/", 1)[0]
                        if site and site.replace("-", "").replace("_", "").isalnum():
                            found.add(site)
                    if time.monotonic() >= deadline:
                        break
    return found
