"""What the daemon's services share: the current config and the long-lived resources."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from ccwatch.config import Config
from ccwatch.incidents.store import StateStore
from ccwatch.readiness import Readiness

if TYPE_CHECKING:
    from ccwatch.incidents.service import IncidentService


@dataclass
class Runtime:
    """Built once by ``app.py``. ``config`` is replaced on a successful SIGHUP reload;
    the registry, the store and the readiness tracker live as long as the process."""

    config: Config
    config_path: Path
    registry: CollectorRegistry
    store: StateStore
    readiness: Readiness
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    # The incident service (created by ingest/wiring.py on the first generation);
    # jobs raise incidents through it (it implements ExternalIncidents).
    incidents: IncidentService | None = None
