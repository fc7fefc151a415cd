"""The configuration: read once from YAML, validated in one pass, frozen.

``load_config(path)`` returns the whole ``Config``, the checklist files of
``checklists.dir`` included (``config.checklists.definitions``), or raises
``ConfigError`` listing every problem on its own line with its key path (list items
counted from 1; the lines are made in ``config_errors``), e.g.::

    tickets -> 2 -> url: Input should be a valid URL, relative URL without a base
    mqtt -> prot: unknown key; did you mean 'port'?

Nothing here touches the network. Only ``app.py`` (the composition root) and the CLI
call ``load_config`` or see ``Config``; every feature receives its own section (and
plain values such as the site name), never the root model. This module imports the
features' models; no feature imports it.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from ccwatch.checklists.config import ChecklistsConfig, CheckSettings
from ccwatch.config_errors import format_validation_errors as format_validation_errors
from ccwatch.config_errors import read_yaml as read_yaml
from ccwatch.config_errors import validate_data as validate_data
from ccwatch.configbase import StrictModel, TimeZone, repeated
from ccwatch.durations import format_duration
from ccwatch.errors import ConfigError
from ccwatch.fleet.config import FleetConfig, SitesConfig
from ccwatch.heartbeat.config import HeartbeatConfig
from ccwatch.inbound.config import InboundSource, unique_names
from ccwatch.incidents.config import IncidentsConfig
from ccwatch.maintenance.config import MaintenanceWindowConfig
from ccwatch.notify.config import EmailConfig as EmailConfig
from ccwatch.retention.config import RetentionConfig
from ccwatch.settings import (
    KNOWN_COMPONENTS as KNOWN_COMPONENTS,
)
from ccwatch.settings import (
    ClassificationConfig as ClassificationConfig,
)
from ccwatch.settings import (
    ComponentConfig as ComponentConfig,
)
from ccwatch.settings import (
    HttpConfig as HttpConfig,
)
from ccwatch.settings import (
    LoggingConfig as LoggingConfig,
)
from ccwatch.settings import (
    MqttConfig as MqttConfig,
)
from ccwatch.settings import (
    MqttTls as MqttTls,
)
from ccwatch.settings import (
    StateConfig as StateConfig,
)
from ccwatch.settings import (
    _default_components as _default_components,
)
from ccwatch.settings import (
    dependency_problems,
    host_timezone,
)
from ccwatch.settings import (
    parse_listen as parse_listen,
)
from ccwatch.sla import EscalationConfig, SlaConfig, escalation_problems
from ccwatch.tickets.adapters.alertmanager import AlertmanagerUpstream
from ccwatch.tickets.config import TicketUpstream

DEFAULT_CONFIG_PATHS = (Path("config.yaml"), Path("/etc/ccwatch/config.yaml"))
FLEET_NAME = "fleet"  # `site` when `sites:` is given and `site` is not


class Config(StrictModel):
    site: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        description="this site's name in topics (with sites: the name of the fleet)",
    )
    site_timezone: TimeZone = Field(
        default_factory=host_timezone,
        description="IANA zone of the site: SLA calendars without a zone, staffing tables; "
        "default: the host's",
    )
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    state: StateConfig = StateConfig()
    components: dict[str, ComponentConfig] = Field(default_factory=_default_components)
    classification: ClassificationConfig = ClassificationConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    maintenance: list[MaintenanceWindowConfig] = Field(default_factory=list)
    tickets: list[TicketUpstream] = Field(default_factory=list)
    inbound: Annotated[list[InboundSource], AfterValidator(unique_names)] = Field(
        default_factory=list,
        description="signed webhooks that pagers and service desks push back "
        "(POST /api/inbound/<name>)",
    )
    email: EmailConfig | None = None
    sla: SlaConfig = Field(SlaConfig(), validate_default=True)
    escalation: EscalationConfig = EscalationConfig()
    checklists: ChecklistsConfig = ChecklistsConfig()
    retention: RetentionConfig = RetentionConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    sites: SitesConfig | None = Field(
        None, description="several sites in one process, several workers (PostgreSQL)"
    )
    fleet: FleetConfig | None = Field(None, description="site leases (with sites:)")
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="before")
    @classmethod
    def _fleet_names_itself(cls, data: object) -> object:
        # With several sites, `site` names the fleet (pages, logs); it may be left out.
        if isinstance(data, dict) and data.get("sites") is not None and "site" not in data:
            return {**data, "site": FLEET_NAME}
        return data

    @field_validator("components", mode="before")
    @classmethod
    def _merge_with_known_components(cls, value: object) -> object:
        # The five standard components always exist; the config adds to or tunes them.
        if not isinstance(value, dict):
            return value
        merged: dict[str, object] = {
            name: settings.model_dump() for name, settings in _default_components().items()
        }
        for name, settings in value.items():
            if isinstance(settings, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**typing.cast(dict[str, object], merged[name]), **settings}
            else:
                merged[name] = settings if settings is not None else {}
        return merged

    @field_validator("components", mode="after")
    @classmethod
    def _dependencies_form_no_cycle(
        cls, value: dict[str, ComponentConfig]
    ) -> dict[str, ComponentConfig]:
        if problems := dependency_problems(value):
            raise ValueError("; ".join(problems))
        return value

    @field_validator("sla", mode="after")
    @classmethod
    def _calendars_in_the_site_zone(cls, value: SlaConfig, info: ValidationInfo) -> SlaConfig:
        zone = info.data.get("site_timezone")
        return value.with_default_timezone(zone) if isinstance(zone, ZoneInfo) else value

    @model_validator(mode="after")
    def _unique_upstream_names(self) -> Config:
        duplicates = repeated(upstream.upstream_name for upstream in self.tickets)
        if duplicates:
            raise ValueError(
                f"tickets: upstream names must be unique, {', '.join(duplicates)} repeats; "
                "give each a `name:`"
            )
        if any(u.type == "email" for u in self.tickets if u.enabled) and self.email is None:
            raise ValueError("tickets: an email upstream needs the top-level `email:` section")
        enabled = [u.upstream_name for u in self.tickets if u.enabled]
        if problems := escalation_problems(self.escalation, enabled, self.email is not None):
            raise ValueError("; ".join(problems))
        name = self.heartbeat.alertmanager
        if name is not None and self.heartbeat.enabled and self.heartbeat_upstream() is None:
            known = [u.upstream_name for u in self.tickets if u.type == "alertmanager"]
            raise ValueError(
                f"heartbeat -> alertmanager: {name!r} is not an enabled alertmanager upstream "
                "of tickets: "
                + (f"(alertmanager upstreams: {', '.join(known)})" if known else "(none)")
            )
        self._check_sites()
        return self

    def _check_sites(self) -> None:
        if self.sites is None:
            if self.fleet is not None:
                raise ValueError("fleet: only with sites: (the sites whose leases it tunes)")
            return
        if self.state.backend != "postgresql":
            raise ValueError(
                "sites: needs state.backend postgresql: the site leases and the shared "
                "incidents live there"
            )
        if self.mqtt.client_id is not None:
            raise ValueError(
                "mqtt -> client_id: not with sites: (each site's session is "
                "<fleet.client_id_prefix>-<site>)"
            )
        if self.site in self.sites.configured():
            raise ValueError(
                f"site: {self.site} names the fleet (the site of its retention incidents); "
                "it cannot also be one of its sites"
            )
        for name, settings in {"default": self.sites.default, **self.sites.per_site}.items():
            if settings.components is not None:
                merged = {**self.components, **settings.components}
                if problems := dependency_problems(merged):
                    raise ValueError(f"sites -> {name} -> components: {'; '.join(problems)}")

    def fleet_settings(self) -> FleetConfig:
        """``fleet:`` as configured, or its defaults."""
        return self.fleet or FleetConfig()

    def heartbeat_upstream(self) -> AlertmanagerUpstream | None:
        """The enabled alertmanager upstream ``heartbeat.alertmanager`` names, if any."""
        for upstream in self.tickets:
            if (
                isinstance(upstream, AlertmanagerUpstream)
                and upstream.enabled
                and upstream.upstream_name == self.heartbeat.alertmanager
            ):
                return upstream
        return None

    def check_settings(self) -> CheckSettings:
        """What the checklist checks may read of this config (they never see all of it)."""
        return CheckSettings(
            site=self.site,
            mqtt=self.mqtt,
            components=tuple(self.components),
            retention=self.retention,
            component_settings=dict(self.components),
        )

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"ccwatch-{self.site}"

    def for_site(self, site: str) -> Config:
        """This config as one site of ``sites:`` sees it: ``site``, its time zone, its
        components (those it names as written, the others the root's), its SLA policy
        (calendars without a zone in the site's), and its MQTT session
        ``<fleet.client_id_prefix>-<site>``."""
        assert self.sites is not None
        settings = self.sites.settings_for(site)
        zone = settings.site_timezone or self.site_timezone
        components = dict(self.components)
        if settings.components is not None:
            components.update(settings.components)
        sla = settings.sla if settings.sla is not None else self.sla
        client_id = f"{self.fleet_settings().client_id_prefix}-{site}"
        return self.model_copy(
            update={
                "site": site,
                "site_timezone": zone,
                "components": components,
                "sla": sla.with_default_timezone(zone),
                "mqtt": self.mqtt.model_copy(update={"client_id": client_id}),
            }
        )

    def summary(self) -> str:
        enabled = [u.upstream_name for u in self.tickets if u.enabled]
        heartbeat = (
            f", heartbeat every {format_duration(self.heartbeat.interval)}"
            if self.heartbeat.enabled
            else ""
        )
        return (
            f"site {self.site}: {len(self.components)} components, "
            f"mqtt {self.mqtt.host}:{self.mqtt.port} (prefix {self.mqtt.topic_prefix}), "
            f"http {self.http.listen}, {len(enabled)} ticket upstream(s)"
            f"{' (' + ', '.join(enabled) + ')' if enabled else ''}, "
            f"{len(self.checklists.definitions)} checklist(s), "
            f"{len(self.retention.databases)} retention database(s), state {self.state.describe()}"
            + heartbeat
            + (
                f", sites {', '.join(self.sites.configured()) or '-'}"
                + (" (+ discovered)" if self.sites.discover else "")
                if self.sites is not None
                else ""
            )
        )


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``-c``, else ``$CCWATCH_CONFIG``, else ./config.yaml, else /etc/ccwatch/config.yaml."""
    if explicit:
        return Path(explicit)
    if env_path := os.environ.get("CCWATCH_CONFIG"):
        return Path(env_path)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_PATHS[0]


def load_config(path: str | os.PathLike[str]) -> Config:
    """The whole configuration: config.yaml, then the checklist files it points to.

    Checklist files are configuration too: a broken one is refused like a broken
    config (its problems are named by file). ``checklists.dir`` comes back resolved
    against the config file's folder.
    """
    config_path = Path(path)
    data = read_yaml(config_path)
    if not isinstance(data, dict):
        raise ConfigError(str(config_path), ["the config must be a YAML mapping of sections"])
    config: Config = validate_data(Config, data, str(config_path))
    checklists = config.checklists.load(config_path.parent)
    return config.model_copy(update={"checklists": checklists})
