"""The configuration: read once from YAML, validated in one pass, frozen.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` listing every
problem on its own line with its key path (list items counted from 1), e.g.::

    tickets -> 2 -> url: Input should be a valid URL, relative URL without a base
    mqtt -> prot: unknown key; did you mean 'port'?

Nothing here touches the network. Only ``app.py`` (the composition root) and the CLI
call ``load_config``; everything else receives the models it needs.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ccwatch.checklists.config import ChecklistsConfig
from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration
from ccwatch.errors import ConfigError
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

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> ClassificationConfig:
        if self.major_above >= self.critical_at:
            raise ValueError(
                f"major_above ({self.major_above}) must be below critical_at ({self.critical_at})"
            )
        if self.window <= timedelta(0) or self.stale_after <= timedelta(0):
            raise ValueError("window and stale_after must be greater than 0")
        return self


class EmailConfig(StrictModel):
    """The SMTP relay used for the checklist report and the e-mail ticket upstream."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    from_address: str = Field(alias="from")
    to: list[str] = Field(default_factory=list, description="default recipients (IT team)")
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password_env: SecretEnv = None
    password_file: SecretFile = None
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailConfig:
        if self.ssl and self.starttls:
            raise ValueError("choose either ssl (implicit TLS, port 465) or starttls, not both")
        return self


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
        names = [upstream.upstream_name for upstream in self.tickets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
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


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become a ConfigError naming the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read {path}: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(str(path), [f"YAML syntax error at {where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"YAML syntax error: {exc}"]) from None


def validate_data(model: type[BaseModel], data: Any, source: str) -> Any:
    """Validate ``data`` into ``model``; every problem becomes one path-named line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_errors(exc, data, model)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    config_path = Path(path)
    data = read_yaml(config_path)
    if not isinstance(data, dict):
        raise ConfigError(str(config_path), ["the config must be a YAML mapping of sections"])
    config: Config = validate_data(Config, data, str(config_path))
    # Checklist files are configuration too: a broken one is refused like a broken config.
    from ccwatch.checklists.definition import load_checklists  # late: it imports this module

    load_checklists(config, config_path)
    return config


# --- error formatting ------------------------------------------------------------------

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "routing_key", "dsn")


def format_validation_errors(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        path, hint = _readable_location(error["loc"], data, model, error["type"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + hint
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _readable_location(
    loc: tuple[int | str, ...], data: Any, model: type[BaseModel], error_type: str
) -> tuple[str, str]:
    """Key path with list items counted from 1, union tags dropped, and a near-miss hint."""
    parts: list[str] = []
    node: Any = data
    annotation: Any = model
    for index, key in enumerate(loc):
        is_last = index == len(loc) - 1
        # A tagged-union branch name ('webhook') that pydantic puts into the path.
        is_union_tag = isinstance(node, dict) and key not in node and node.get("type") == key
        if is_union_tag and not is_last and isinstance(key, str):
            annotation = _union_member(annotation, key)
            continue
        if isinstance(key, int):
            parts.append(str(key + 1))
            node = node[key] if isinstance(node, list) and key < len(node) else None
            annotation = _item_type(annotation)
            continue
        parts.append(str(key))
        if is_last and error_type == "extra_forbidden":
            return " -> ".join(parts), _near_miss_hint(key, annotation)
        node = node.get(key) if isinstance(node, dict) else None
        annotation = _field_type(annotation, key)
    return " -> ".join(parts), ""


def _near_miss_hint(key: str, annotation: Any) -> str:
    fields = _model_fields(annotation)
    if any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith(("_env", "_file")):
        choices = [f for f in fields if f.endswith(("_env", "_file"))] or [f"{key}_env"]
        return (
            "; secrets are never written inline: name an environment variable or a file "
            f"({', '.join(choices)})"
        )
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if fields:
        return f"; allowed keys here: {', '.join(sorted(fields))}"
    return ""


def _model_fields(annotation: Any) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        names: list[str] = []
        for name, field in annotation.model_fields.items():
            names.append(field.alias or name)
        return names
    return []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _field_type(annotation: Any, key: str) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if key in (name, field.alias):
                return _strip_optional(field.annotation)
        return None
    if typing.get_origin(annotation) is dict:
        return _strip_optional(typing.get_args(annotation)[1])
    return None


def _item_type(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is list:
        return _strip_optional(typing.get_args(annotation)[0])
    return None


def _strip_optional(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip_optional(members[0])
    return annotation


def _union_member(annotation: Any, tag: str) -> Any:
    annotation = _unwrap(annotation)
    for member in typing.get_args(annotation):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            type_field = member.model_fields.get("type")
            if type_field is not None and tag in typing.get_args(type_field.annotation):
                return member
    return None
