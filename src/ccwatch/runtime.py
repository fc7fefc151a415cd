"""What the daemon's services share: the current config and the long-lived resources."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from ccwatch.config import Config
from ccwatch.history import LossRecorder
from ccwatch.incidents.service import IncidentService
from ccwatch.maintenance.store import MaintenanceCalendar
from ccwatch.readiness import Readiness
from ccwatch.state import StateStore

if TYPE_CHECKING:  # only with sites: (never imported on the single-site path)
    from ccwatch.fleet.manager import LeaseManager


@dataclass
class Runtime:
    """Built once by ``app.py``. ``config`` is replaced on a successful SIGHUP reload;
    the registry, the store, the readiness tracker and the incident service live as long
    as the process."""

    config: Config
    config_path: Path
    registry: CollectorRegistry
    store: StateStore
    readiness: Readiness
    incidents: IncidentService
    clock: Callable[[], float] = time.time
    # The current generation's loss recorder (set by ``build_services``): the pages read
    # its latest readings.
    recorder: LossRecorder | None = None
    # With ``sites:``: the loss recorder of each site held here (``sites.FleetWorker``).
    site_recorders: dict[str, LossRecorder] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    # Scheduled (config) and ad-hoc windows; the incident service asks it on every open.
    maintenance: MaintenanceCalendar = field(default_factory=MaintenanceCalendar)
    # With ``sites:``: this worker's lease manager (set by the generation; the pages and
    # /api/sites read its leases and its last view of the fleet). None: one site.
    fleet: LeaseManager | None = None
