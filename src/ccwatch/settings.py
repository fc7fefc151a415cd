"""The configuration sections that belong to no single feature: the broker, the HTTP
surface, the state database, the components, classification and logging.

They live here, not in ``config.py``, so that the features using them (ingest, tickets,
checklists) import a small module of models and never the root ``Config``, which composes
every feature's section (docs/architecture.md, "Dependency rules").
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccwatch.classify import Thresholds
from ccwatch.configbase import (
    UTC_ZONE,
    SecretEnv,
    SecretFile,
    StrictModel,
    read_secret,
    time_zone,
)
from ccwatch.durations import Duration
from ccwatch.severity import Severity, SeverityName

logger = logging.getLogger(__name__)

KNOWN_COMPONENTS = ("acd", "ivr", "dialer", "voice_logger", "reports")


def host_timezone(environ: dict[str, str] | None = None, etc: Path = Path("/etc")) -> ZoneInfo:
    """The host's IANA time zone: ``$TZ``, else /etc/timezone, else the /etc/localtime
    link, else UTC (logged). The default of ``site_timezone``, read once per config load.
    """
    env = os.environ if environ is None else environ
    candidates: list[str] = []
    if tz := env.get("TZ", "").removeprefix(":").strip():
        candidates.append(tz)
    with contextlib.suppress(OSError):
        candidates.append((etc / "timezone").read_text(encoding="utf-8").strip())
    try:
        target = os.readlink(etc / "localtime")
    except OSError:
        pass
    else:
        _, found, name = target.partition("zoneinfo/")
        if found:
            candidates.append(name)
    for name in candidates:
        try:
            return time_zone(name)
        except ValueError:
            continue
    logger.info("could not tell the host's time zone; site_timezone defaults to UTC")
    return UTC_ZONE


def _clock_time(value: object) -> object:
    # YAML 1.1 reads an unquoted 20:00 as the sexagesimal integer 1200.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the time of day in quotes, e.g. "20:00"')
    return value


TimeOfDay = Annotated[time, BeforeValidator(_clock_time)]


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


DEFAULT_STATE_PATH = Path("/var/lib/ccwatch/state.db")


class StatePool(StrictModel):
    """The PostgreSQL connection pool (one store thread per connection)."""

    min_size: int = Field(1, ge=0, description="connections kept open")
    max_size: int = Field(4, ge=1, le=100, description="connections (and store threads) at most")

    @model_validator(mode="after")
    def _ordered(self) -> StatePool:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is above max_size {self.max_size}")
        return self


class StateConfig(StrictModel):
    """Where incidents, the outbox and the history live: an embedded SQLite file (the
    default) or a PostgreSQL database, whose DSN is a secret (``dsn_env``/``dsn_file``)."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path = Field(DEFAULT_STATE_PATH, description="the SQLite file")
    dsn_env: SecretEnv = Field(None, description="environment variable holding the DSN")
    dsn_file: SecretFile = Field(None, description="file whose first line is the DSN")
    pool: StatePool | None = Field(None, description="PostgreSQL only; default min 1, max 4")

    @field_validator("path", "pool")
    @classmethod
    def _one_backend_only(cls, value: object, info: ValidationInfo) -> object:
        backend = info.data.get("backend", "sqlite")
        # (The default path comes back from a dumped config: not an error.)
        if info.field_name == "path" and backend != "sqlite" and value != DEFAULT_STATE_PATH:
            raise ValueError(
                "only for backend sqlite; backend postgresql takes dsn_env or dsn_file"
            )
        if info.field_name == "pool" and value is not None and backend == "sqlite":
            raise ValueError("only for backend postgresql (SQLite has one connection)")
        return value

    @field_validator("dsn_env", "dsn_file")
    @classmethod
    def _valid_dsn(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return value
        if info.data.get("backend", "sqlite") == "sqlite":
            raise ValueError("only for backend postgresql")
        if info.field_name == "dsn_env":
            dsn = read_secret(str(value), None)
        else:
            dsn = read_secret(None, value if isinstance(value, Path) else None)
        from psycopg.conninfo import conninfo_to_dict  # parses only; no connection

        try:
            conninfo_to_dict(dsn or "")
        except Exception:  # psycopg.ProgrammingError; its text may quote the DSN
            raise ValueError(
                "the DSN there is not a valid libpq DSN (key=value pairs or postgresql:// URI)"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_dsn(self) -> StateConfig:
        if self.backend == "postgresql" and (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError(
                "backend postgresql takes the DSN from exactly one of dsn_env, dsn_file"
            )
        return self

    def describe(self) -> str:
        """For messages: the file, or where the DSN comes from (never the DSN)."""
        if self.backend == "sqlite":
            return str(self.path)
        return f"postgresql (DSN in {self.dsn_env or self.dsn_file})"

    def dsn(self) -> str:
        """The PostgreSQL DSN, read now from its variable or file (a secret: never log it)."""
        dsn = read_secret(self.dsn_env, self.dsn_file)
        if not dsn:
            raise ValueError(f"the DSN in {self.dsn_env or self.dsn_file} is not set or empty")
        return dsn


class StaffingShift(StrictModel):
    """From ``from`` (local time of day, site time zone) on, ``expected`` agents."""

    start: TimeOfDay = Field(alias="from", description='local time of day, e.g. "08:00"')
    expected: int = Field(ge=0, description="agents expected to be logged in")


class Staffing:
    """A component's expected agents by local time of day (the ``staffing:`` table).

    Each shift runs until the next one starts; before the first one of the day the
    last one of the day before still runs. ``expected_at(ts)`` caches the value for the
    current UTC minute (shifts start on whole minutes), so the ingest hot path pays one
    comparison per message.
    """

    __slots__ = ("_cached_minute", "_cached_value", "_starts", "_values", "timezone")

    def __init__(self, shifts: list[StaffingShift], timezone: ZoneInfo) -> None:
        ordered = sorted(shifts, key=lambda shift: shift.start)
        self._starts = [s.start.hour * 60 + s.start.minute for s in ordered]
        self._values = [s.expected for s in ordered]
        self.timezone = timezone
        self._cached_minute = -1
        self._cached_value = 0

    def expected_at_local(self, local: time) -> int:
        index = bisect_right(self._starts, local.hour * 60 + local.minute) - 1
        return self._values[index]  # -1: the last shift of the day before

    def expected_at(self, ts: float) -> int:
        minute = int(ts // 60)
        if minute != self._cached_minute:
            local = datetime.fromtimestamp(minute * 60, self.timezone).time()
            self._cached_value = self.expected_at_local(local)
            self._cached_minute = minute
        return self._cached_value


class ComponentConfig(StrictModel):
    seats: int | None = Field(None, gt=0, description="seats when payloads do not carry them")
    max_severity: SeverityName = Severity.CRITICAL
    processes: list[str] = Field(default_factory=list, description="process names (diagnostics)")
    log_files: list[Path] = Field(default_factory=list, description="logs to excerpt (diagnostics)")
    staffing: list[StaffingShift] = Field(
        default_factory=list,
        description="expected agents by time of day (site time zone); default: the seats",
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="components this one depends on: its faults within "
        "classification.group_window of a parent's incident join that incident",
    )

    @model_validator(mode="after")
    def _valid_staffing(self) -> ComponentConfig:
        starts = [shift.start for shift in self.staffing]
        repeats = sorted({f"{s:%H:%M}" for s in starts if starts.count(s) > 1})
        if repeats:
            raise ValueError(f"staffing: each `from` time once; {', '.join(repeats)} repeats")
        for number, shift in enumerate(self.staffing, start=1):
            if shift.start.second or shift.start.microsecond or shift.start.tzinfo:
                raise ValueError(
                    f'staffing -> {number} -> from: a local time in whole minutes, e.g. "08:00"'
                )
            if self.seats is not None and shift.expected > self.seats:
                raise ValueError(
                    f"staffing -> {number} -> expected: {shift.expected} is more than the "
                    f"seats ({self.seats})"
                )
        return self

    def staffing_table(self, timezone: ZoneInfo) -> Staffing | None:
        """The staffing table in ``timezone`` (the site's), or None without one."""
        return Staffing(self.staffing, timezone) if self.staffing else None


def _default_components() -> dict[str, ComponentConfig]:
    # Seed 004 lists reports among the components of a major issue, never a critical one.
    capped = {"reports": Severity.MAJOR}
    return {
        name: ComponentConfig(max_severity=capped.get(name, Severity.CRITICAL))
        for name in KNOWN_COMPONENTS
    }


class ClassificationConfig(StrictModel):
    """``classification:`` — thresholds, holds, the metrics window and fault grouping.

    ``group_by`` (default ``site``): a component whose fault would open an incident within
    ``group_window`` of the open of another production-loss incident of the site joins
    that incident (the earliest; a parent's through ``components.<c>.depends_on`` first)
    instead of opening its own, as Alertmanager's ``group_by: [site]`` with a group wait
    would. The default is ``site`` because a site-wide fault (power, network, the PBX
    host) must be one incident and one ticket (issue 11), and an unrelated second fault
    in the same two minutes is not hidden: the ticket gets an ``update`` naming it, and
    it opens its own incident as soon as the first one is over. ``dependencies`` groups
    only dependants with their parents (two independent faults: two tickets).
    """

    open_after: Duration = timedelta(seconds=30)
    resolve_after: Duration = timedelta(minutes=5)
    stale_after: Duration = timedelta(minutes=2)
    window: Duration = timedelta(minutes=5)
    group_window: Duration = Field(
        timedelta(minutes=2),
        description="a fault this soon after the open of the incident it groups with joins it",
    )
    group_by: Literal["site", "dependencies"] = Field(
        "site",
        description="site: any component's fault within group_window of an incident of the "
        "site joins it (one incident per site-wide fault); dependencies: only depends_on",
    )
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
        if self.group_window < timedelta(0):
            raise ValueError("group_window must be 0 or more")
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


def dependency_problems(components: Mapping[str, ComponentConfig]) -> list[str]:
    """What is wrong with the components' ``depends_on`` (unknown names, self-references,
    cycles), each with its key path; empty when they form a forest."""
    problems: list[str] = []
    for name, component in components.items():
        for number, parent in enumerate(component.depends_on, start=1):
            path = f"components -> {name} -> depends_on -> {number}"
            if parent == name:
                problems.append(f"{path}: a component cannot depend on itself")
            elif parent not in components:
                known = ", ".join(sorted(components))
                problems.append(f"{path}: unknown component {parent!r} (known: {known})")
    if problems:
        return problems
    if cycle := _dependency_cycle({n: c.depends_on for n, c in components.items()}):
        problems.append(
            f"components -> {cycle[0]} -> depends_on: a dependency cycle ({' -> '.join(cycle)})"
        )
    return problems


def _dependency_cycle(parents: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle of the ``depends_on`` graph (its names, the first repeated at the end)."""
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            name, index = stack.pop()
            if index == 0:
                if name in path:
                    return [*path[path.index(name) :], name]
                if name in done:
                    continue
                path.append(name)
            if index < len(parents[name]):
                stack.append((name, index + 1))
                stack.append((parents[name][index], 0))
            else:
                path.pop()
                done.add(name)
    return None
