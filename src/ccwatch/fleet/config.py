"""``sites:`` and ``fleet:`` — several sites per process, several workers per fleet.

``sites:`` lists the sites this fleet watches (``names``, and/or ``discover`` them from the
topics under ``mqtt.topic_prefix``), with per-site settings (``per_site``) and the
settings of every other site (``default``): time zone, components, SLA policy. The root
``components``, ``site_timezone`` and ``sla`` are what a site's settings leave out.
``fleet:`` tunes the site leases (README, "Several sites and workers").
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from ccwatch.configbase import StrictModel, TimeZone, repeated
from ccwatch.durations import Duration
from ccwatch.settings import ComponentConfig
from ccwatch.sla import SlaConfig

SiteName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)]


class SiteSettings(StrictModel):
    """What one site (or every site without its own entry) changes of the root config."""

    site_timezone: TimeZone | None = Field(
        None, description="IANA zone of the site (default: the root site_timezone)"
    )
    components: dict[str, ComponentConfig] | None = Field(
        None,
        description="components configured for this site (each as written, ComponentConfig "
        "defaults for keys left out); the others come from the root components",
    )
    sla: SlaConfig | None = Field(
        None, description="this site's SLA policy and calendars (default: the root sla)"
    )


class SitesConfig(StrictModel):
    names: list[SiteName] = Field(default_factory=list, description="the sites watched")
    discover: bool = Field(
        False, description="also watch every site seen under <topic_prefix>/<site>/<component>/…"
    )
    discover_every: Duration = Field(
        timedelta(minutes=1), description="how often the topics are looked at for new sites"
    )
    default: SiteSettings = Field(
        default_factory=SiteSettings, description="settings of sites without their own entry"
    )
    per_site: dict[SiteName, SiteSettings] = Field(
        default_factory=dict, description="settings of one site (the site is watched)"
    )

    @model_validator(mode="after")
    def _some_site(self) -> SitesConfig:
        if duplicates := repeated(self.names):
            raise ValueError(f"names: {', '.join(duplicates)} repeats")
        if not self.names and not self.per_site and not self.discover:
            raise ValueError("name the sites (names:, per_site:) or set discover: true")
        return self

    def configured(self) -> list[str]:
        """The sites named in the config (discovered ones come from the lease table)."""
        return list(dict.fromkeys([*self.names, *self.per_site]))

    def settings_for(self, site: str) -> SiteSettings:
        return self.per_site.get(site) or self.default


def default_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process start, so a restarted worker never
    mistakes an old lease of its predecessor for its own."""
    host = socket.gethostname().split(".")[0] or "worker"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class FleetConfig(StrictModel):
    worker_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        max_length=100,
        description="this worker's name in the lease table (default: host-pid-random)",
    )
    lease_ttl: Duration = Field(
        timedelta(seconds=15), description="a lease not renewed for this long may be taken"
    )
    renew_every: Duration | None = Field(None, description="default: a third of lease_ttl")
    safety_margin: Duration | None = Field(
        None,
        description="a worker stops a site this long before its lease could run out "
        "(default: a fifth of lease_ttl)",
    )
    rebalance_every: Duration = Field(
        timedelta(seconds=30),
        description="a worker over its share gives back at most one site this often",
    )
    client_id_prefix: str = Field(
        "ccwatch",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="each site's MQTT session is <client_id_prefix>-<site>",
    )
    advertise_url: str | None = Field(
        None, description="how other workers' pages link to this one (default http://<http.listen>)"
    )
    host: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        max_length=100,
        description="the host whose checklists this worker runs (job lease host:<host>); "
        "default: the host name",
    )

    @model_validator(mode="after")
    def _timings_fit(self) -> FleetConfig:
        ttl = self.lease_ttl.total_seconds()
        if ttl < 1:
            raise ValueError("lease_ttl: at least 1s")
        if self.margin() >= ttl - self.renew_interval():
            raise ValueError(
                "renew_every + safety_margin must be shorter than lease_ttl (a lease is "
                "renewed, with time to spare, before it can run out)"
            )
        return self

    def ttl(self) -> float:
        return self.lease_ttl.total_seconds()

    def renew_interval(self) -> float:
        if self.renew_every is not None:
            return self.renew_every.total_seconds()
        return self.ttl() / 3

    def margin(self) -> float:
        if self.safety_margin is not None:
            return self.safety_margin.total_seconds()
        return self.ttl() / 5

    def worker(self) -> str:
        return self.worker_id or default_worker_id()

    def host_name(self) -> str:
        """The host of this worker's checklists: ``host``, else the short host name (the
        same for every worker on one machine, and across restarts)."""
        return self.host or socket.gethostname().split(".")[0] or "localhost"
