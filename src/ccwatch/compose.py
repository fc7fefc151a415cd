"""How the parts are put together: shared by the daemon (``app.py``) and the CLI verbs.

Nothing here runs anything; these functions turn the validated ``Config`` into the
objects the features take (their own settings, their collaborators), so that no feature
reads the root config. See docs/architecture.md, "Wiring".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ccwatch.checklists.history import MIGRATIONS as CHECKLIST_MIGRATIONS
from ccwatch.config import Config
from ccwatch.errors import StateStoreError
from ccwatch.heartbeat.health import HealthInputs
from ccwatch.history import MIGRATIONS as HISTORY_MIGRATIONS
from ccwatch.incidents.lifecycle import LifecycleSettings
from ccwatch.incidents.model import Incident
from ccwatch.incidents.repository import MIGRATIONS as INCIDENT_MIGRATIONS
from ccwatch.incidents.service import IncidentService, IncidentSettings, OnChange
from ccwatch.ingest.mqtt import READINESS_NAME as MQTT_READINESS
from ccwatch.ingest.mqtt import MqttSource
from ccwatch.ingest.pipeline import Pipeline
from ccwatch.maintenance.config import schedules
from ccwatch.maintenance.store import MIGRATIONS as MAINTENANCE_MIGRATIONS
from ccwatch.maintenance.store import MaintenanceCalendar
from ccwatch.readiness import Readiness
from ccwatch.redact import configure as configure_redaction
from ccwatch.redact import secrets_from_config
from ccwatch.scheduler import MIGRATIONS as SCHEDULER_MIGRATIONS
from ccwatch.settings import StateConfig, StatePool
from ccwatch.state import Migrations, SqliteStore, StateStore
from ccwatch.state.health import READINESS_NAME as STATE_READINESS
from ccwatch.tickets.adapters import AdapterContext, build_adapters
from ccwatch.tickets.links import MIGRATIONS as DESK_TICKET_MIGRATIONS
from ccwatch.tickets.links import TicketLinks
from ccwatch.tickets.service import DiagnosticsGatherer, SlaBody, SlaWatcher

if TYPE_CHECKING:
    from ccwatch.heartbeat.service import Heartbeat
    from ccwatch.tickets.outbox import OutboxDispatcher

# Every feature's tables, in the order their migrations run. The loss history's step 2
# renames a table, for which SQLite re-parses every table's schema: on a new database it
# runs first, while the schema is small (SQLite peaks 0.2 MB lower at the first start).
MIGRATIONS: tuple[Migrations, ...] = (
    HISTORY_MIGRATIONS,
    INCIDENT_MIGRATIONS,
    SCHEDULER_MIGRATIONS,
    CHECKLIST_MIGRATIONS,
    MAINTENANCE_MIGRATIONS,
    DESK_TICKET_MIGRATIONS,
)


def build_pipeline(
    config: Config,
    incidents: IncidentService,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.time,
) -> Pipeline:
    """The MQTT pipeline of ``config``'s site, feeding ``incidents``."""
    return Pipeline(
        config.site,
        config.mqtt,
        config.components,
        config.classification,
        incidents,
        registry,
        clock,
        site_timezone=config.site_timezone,
    )


def build_mqtt_source(
    config: Config,
    pipeline: Pipeline,
    registry: CollectorRegistry,
    readiness: Readiness | None = None,
    clock: Callable[[], float] = time.time,
) -> MqttSource:
    return MqttSource(
        config.mqtt,
        config.site,
        pipeline.handle_message,
        registry,
        readiness,
        clock,
        client_id=config.mqtt_client_id,
    )


# Changes that do not move an SLA clock (the watcher need not look again).
NOT_FOR_SLA = frozenset({"loss", "diagnostics", "sla_due", "sla_breach", "sla_escalation"})


@dataclass
class TicketServices:
    """One site's ticket side: its service tasks (``outbox``, ``reconciler``, ``sla``)
    and the fan-out of its committed incident changes (``on_change``)."""

    services: dict[str, Coroutine[Any, Any, None]] = field(default_factory=dict)
    dispatcher: OutboxDispatcher | None = None
    watcher: SlaWatcher | None = None

    def on_change(self, incident: Incident, change: str) -> None:
        """Wake the dispatcher, and the SLA watcher for a change that moves a clock."""
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if self.watcher is not None and change not in NOT_FOR_SLA:
            self.watcher.wake(incident.id)


def build_ticket_services(
    config: Config,
    incidents: IncidentService,
    store: StateStore,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.time,
    *,
    site: str | None = None,
    dispatcher_options: Mapping[str, Any] | None = None,
) -> TicketServices:
    """The adapters of ``config.tickets``, the outbox dispatcher that delivers to them,
    the service desks' reconciler and the SLA watcher, for the single-site daemon
    (``app``) and for each site a fleet worker holds (``sites``, which passes its
    ``site`` and the dispatcher's fence options)."""
    links = TicketLinks(store)
    context = AdapterContext(site=config.site, clock=clock, email=config.email, links=links)
    wants_mail = config.escalation.enabled and any(lvl.email for lvl in config.escalation.levels)
    adapters = build_adapters(config.tickets, context, escalation_email=wants_mail)
    built = TicketServices()
    desks: dict[str, Any] = {}
    if adapters:
        # Imported here: a daemon without upstreams loads neither the outbox nor the desks.
        from ccwatch.tickets.desk import DeskAdapter
        from ccwatch.tickets.outbox import OutboxDispatcher, RetryPolicy, claim_lease

        desks = {name: a for name, a in adapters.items() if isinstance(a, DeskAdapter)}
        enabled = [u for u in config.tickets if u.enabled]
        built.dispatcher = OutboxDispatcher(
            store,
            adapters,
            registry=registry,
            retry={u.upstream_name: RetryPolicy(cap=u.retry_max.total_seconds()) for u in enabled},
            on_dead=incidents.note_dead_letter,
            clock=clock,
            lease=claim_lease(
                [u.timeout.total_seconds() for u in enabled],
                OutboxDispatcher.BATCH_SIZE,
                OutboxDispatcher.CONCURRENCY,
            ),
            links=links if desks else None,
            **(dispatcher_options or {}),
        )
        built.services["outbox"] = built.dispatcher.run()
    if desks:
        # What comes back from the service desks (tickets/reconciler.py).
        from ccwatch.tickets.reconciler import Reconciler

        reconciler = Reconciler(desks, links, incidents, registry, clock=clock, site=site)
        built.services["reconciler"] = reconciler.run()
    if config.sla.enabled:
        built.watcher = SlaWatcher(
            incidents,
            config.sla,
            config.escalation,
            registry,
            upstreams={u.upstream_name for u in config.tickets if u.enabled},
            email_relay=config.email is not None,
            desks=list(desks),
            clock=clock,
        )
        built.services["sla"] = built.watcher.run()
    return built


def build_heartbeat(
    config: Config,
    pipeline: Pipeline,
    registry: CollectorRegistry,
    readiness: Readiness,
    clock: Callable[[], float] = time.time,
) -> Heartbeat | None:
    """The dead-man's switch of ``config.heartbeat`` (None when it is off). Its health
    inputs: the MQTT and state-store dependencies of ``readiness`` and the pipeline's
    last message."""

    def probe() -> HealthInputs:
        mqtt_connected, mqtt_detail = readiness.status(MQTT_READINESS)
        state_ok, state_detail = readiness.status(STATE_READINESS)
        return HealthInputs(
            mqtt_connected=mqtt_connected,
            mqtt_detail=mqtt_detail,
            state_problem=None if state_ok else state_detail,
            last_message_at=pipeline.last_message_at,
        )

    return heartbeat_with(config, probe, registry, clock)


def heartbeat_with(
    config: Config,
    probe: Callable[[], HealthInputs],
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.time,
) -> Heartbeat | None:
    """The dead-man's switch of ``config.heartbeat`` with its health from ``probe`` (a
    single-site daemon's or a fleet worker's); None when it is off."""
    section = config.heartbeat
    if not section.enabled:
        return None
    # Imported here: a daemon without a heartbeat target does not load the switch.
    from ccwatch.heartbeat.service import Heartbeat
    from ccwatch.heartbeat.targets import PingUrl, Target, WatchdogAlert

    context = AdapterContext(site=config.site, clock=clock)
    timeout = section.timeout
    targets: list[Target] = []
    if (url := section.ping_url()) is not None:
        targets.append(PingUrl(url, config.site, timeout.total_seconds(), context))
    if (upstream := config.heartbeat_upstream()) is not None:
        interval = section.interval.total_seconds()
        targets.append(WatchdogAlert(upstream, config.site, interval, timeout, context))
    return Heartbeat(section, targets, probe, registry, clock)


def open_state(state: StateConfig | Path) -> StateStore:
    """The state database with every feature's tables (raises StateStoreError): the
    ``state:`` section's backend, or the SQLite file at a path. On PostgreSQL also the
    site leases' tables (``fleet.leases``)."""
    if isinstance(state, Path):
        return SqliteStore.open(state, MIGRATIONS)
    if state.backend == "sqlite":
        return SqliteStore.open(state.path, MIGRATIONS)
    # Imported here: SQLite deployments never load libpq and the pool.
    from ccwatch.fleet.leases import MIGRATIONS as FLEET_MIGRATIONS
    from ccwatch.state.postgres import PostgresStore

    try:
        dsn = state.dsn()
    except (OSError, ValueError) as exc:
        raise StateStoreError(f"cannot open the state database: {exc}") from None
    pool = state.pool or StatePool()
    # The site leases (``sites:``) live beside the incidents: only on PostgreSQL.
    return PostgresStore.open(
        dsn, (*MIGRATIONS, FLEET_MIGRATIONS), min_size=pool.min_size, max_size=pool.max_size
    )


def lifecycle_settings(config: Config) -> LifecycleSettings:
    classification = config.classification
    return LifecycleSettings(
        open_after=classification.open_after.total_seconds(),
        resolve_after=classification.resolve_after.total_seconds(),
        stale_after=classification.stale_after.total_seconds(),
        reopen_window=config.incidents.reopen_window.total_seconds(),
        auto_close_after=(
            config.incidents.auto_close_after.total_seconds()
            if config.incidents.auto_close_after is not None
            else None
        ),
        depends_on={
            name: tuple(component.depends_on)
            for name, component in config.components.items()
            if component.depends_on
        },
        group_window=classification.group_window.total_seconds(),
        group_by=classification.group_by,
        components=tuple(config.components),
        auto_close_after_waiting=(
            config.incidents.auto_close_after_waiting.total_seconds()
            if config.incidents.auto_close_after_waiting is not None
            else None
        ),
        calls_window=classification.window.total_seconds(),
    )


def incident_settings(config: Config) -> IncidentSettings:
    return IncidentSettings(
        site=config.site,
        lifecycle=lifecycle_settings(config),
        upstreams=tuple(config.tickets),
    )


def _ignore(incident: object, change: str) -> None:
    return None


def _nothing() -> None:
    return None


def configure_incident_service(
    service: IncidentService,
    config: Config,
    on_change: OnChange = _ignore,
    on_write_failure: Callable[[], None] = _nothing,
    calendar: MaintenanceCalendar | None = None,
) -> IncidentService:
    """Give the service the (re)loaded config's settings and hooks. Bodies are redacted
    before they are stored, with the configured secrets. ``calendar`` (the runtime's)
    gets the config's scheduled windows; without one the service gets its own, with the
    ad-hoc windows of the store."""
    redactor = configure_redaction(secrets_from_config(config))
    if calendar is None:
        calendar = MaintenanceCalendar()
        calendar.refresh_sync(service.store, service.clock())
    calendar.scheduled = schedules(config.maintenance)
    service.reconfigure(
        incident_settings(config),
        body_extras=SlaBody(config.sla),
        diagnostics=DiagnosticsGatherer(config.components),
        on_change=on_change,
        on_write_failure=on_write_failure,
        redact=redactor.value,
        maintenance=calendar.hook,
    )
    return service


def build_incident_service(
    config: Config,
    store: StateStore,
    registry: CollectorRegistry,
    *,
    clock: Callable[[], float] = time.time,
    on_change: OnChange = _ignore,
) -> IncidentService:
    """The incident service for ``config``, its unresolved incidents loaded."""
    service = IncidentService(store, incident_settings(config), registry, clock=clock)
    configure_incident_service(service, config, on_change)
    service.load_sync()
    return service
