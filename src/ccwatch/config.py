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

import ipaddress
import os
import typing
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ccwatch.checklists.checks import CheckSettings
from ccwatch.checklists.config import ChecklistsConfig
from ccwatch.classify import Thresholds
from ccwatch.config_errors import format_validation_errors as format_validation_errors
from ccwatch.config_errors import read_yaml as read_yaml
from ccwatch.config_errors import validate_data as validate_data
from ccwatch.configbase import SecretEnv, SecretFile, StrictModel, repeated
from ccwatch.durations import Duration
from ccwatch.errors import ConfigError
from ccwatch.notify.config import EmailConfig as EmailConfig
from ccwatch.retention.config import RetentionConfig
from ccwatch.severity import Severity, SeverityName
from ccwatch.sla import EscalationConfig, SlaConfig, escalation_problems
from ccwatch.tickets.config import TicketUpstream

DEFAULT_CONFIG_PATHS = (Path("config.yaml"), Path("/etc/ccwatch/config.yaml"))
KNOWN_COMPONENTS = ("acd", "ivr", "dialer", "voice_logger", "reports")


class MqttTls(StrictModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (test brokers only)")


class MqttConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("cc", min_length=1, pattern=r"^[^#+]+$")
    client_id: str | None = Field(None, description="fixed id for the persistent session")
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = False
    keepalive: Duration = timedelta(seconds=30)
    username: str | None = None
    password_env: SecretEnv = None
    password_file: SecretFile = None
    tls: MqttTls | None = None
    reconnect_max: Duration = Field(timedelta(seconds=30), description="backoff cap")
    max_payload_bytes: int = Field(65536, ge=64)
    queue_size: int = Field(10_000, ge=1, description="bound of the ingest queue")
    max_clock_skew: Duration = Field(
        timedelta(minutes=5), description="a ts further ahead is rejected as clock_skew"
    )

    @field_validator("reconnect_max")
    @classmethod
    def _positive_backoff(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises ValueError with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port (e.g. '127.0.0.1:9817')")
    host = host.removeprefix("[").removesuffix("]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    if not host.replace("-", "").replace(".", "").isalnum():
        ipaddress.ip_address(host)  # raises ValueError for garbage
    return host, int(port_text)


class HttpConfig(StrictModel):
    listen: str = "127.0.0.1:9817"
    token_env: SecretEnv = Field(None, description="bearer token for state-changing calls")
    token_file: SecretFile = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class StateConfig(StrictModel):
    path: Path = Path("/var/lib/ccwatch/state.db")


class ComponentConfig(StrictModel):
    seats: int | None = Field(None, gt=0, description="seats when payloads do not carry them")
    max_severity: SeverityName = Severity.CRITICAL
    processes: list[str] = Field(default_factory=list, description="process names (diagnostics)")
    log_files: list[Path] = Field(default_factory=list, description="logs to excerpt (diagnostics)")


def _default_components() -> dict[str, ComponentConfig]:
    # Seed 004 lists reports among the components of a major issue, never a critical one.
    capped = {"reports": Severity.MAJOR}
    return {
        name: ComponentConfig(max_severity=capped.get(name, Severity.CRITICAL))
        for name in KNOWN_COMPONENTS
    }


class ClassificationConfig(StrictModel):
    open_after: Duration = timedelta(seconds=30)
    resolve_after: Duration = timedelta(minutes=5)
    stale_after: Duration = timedelta(minutes=2)
    window: Duration = timedelta(minutes=5)
    min_calls_offered: int = Field(20, ge=0)
    critical_at: float = Field(0.20, gt=0, le=1)
    major_above: float = Field(0.02, ge=0, lt=1)
    _thresholds: Thresholds = PrivateAttr()

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> ClassificationConfig:
        if self.major_above >= self.critical_at:
            raise ValueError(
                f"major_above ({self.major_above}) must be below critical_at ({self.critical_at})"
            )
        if self.window <= timedelta(0) or self.stale_after <= timedelta(0):
            raise ValueError("window and stale_after must be greater than 0")
        self._thresholds = Thresholds(
            critical_at=self.critical_at,
            major_above=self.major_above,
            min_calls_offered=self.min_calls_offered,
        )
        return self

    @property
    def thresholds(self) -> Thresholds:
        """The severity boundaries and the calls guard, built once at validation."""
        return self._thresholds


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Config(StrictModel):
    site: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="this site's name in topics")
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    state: StateConfig = StateConfig()
    components: dict[str, ComponentConfig] = Field(default_factory=_default_components)
    classification: ClassificationConfig = ClassificationConfig()
    tickets: list[TicketUpstream] = Field(default_factory=list)
    email: EmailConfig | None = None
    sla: SlaConfig = SlaConfig()
    escalation: EscalationConfig = EscalationConfig()
    checklists: ChecklistsConfig = ChecklistsConfig()
    retention: RetentionConfig = RetentionConfig()
    logging: LoggingConfig = LoggingConfig()

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
        return self

    def check_settings(self) -> CheckSettings:
        """What the checklist checks may read of this config (they never see all of it)."""
        return CheckSettings(
            site=self.site,
            mqtt=self.mqtt,
            components=tuple(self.components),
            retention=self.retention,
        )

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"ccwatch-{self.site}"

    def summary(self) -> str:
        enabled = [u.upstream_name for u in self.tickets if u.enabled]
        return (
            f"site {self.site}: {len(self.components)} components, "
            f"mqtt {self.mqtt.host}:{self.mqtt.port} (prefix {self.mqtt.topic_prefix}), "
            f"http {self.http.listen}, {len(enabled)} ticket upstream(s)"
            f"{' (' + ', '.join(enabled) + ')' if enabled else ''}, "
            f"{len(self.checklists.definitions)} checklist(s), "
            f"{len(self.retention.databases)} retention database(s), state {self.state.path}"
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
