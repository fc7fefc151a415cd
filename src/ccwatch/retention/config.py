"""Config of the retention job (``retention:`` in config.yaml).

Everything here is checked at load time without touching a database: identifiers,
the safety floor, the DSN (an inline ``dsn:`` must not carry a password), the cron
expression, time zones and the maintenance window. Whether the tables and columns
exist is checked by the job when it connects (``RetentionError`` naming them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccwatch.configbase import (
    UTC_ZONE,
    SecretEnv,
    SecretFile,
    StrictModel,
    TimeZone,
    read_secret,
    repeated,
)
from ccwatch.cron import CronExpression, CronSchedule
from ccwatch.durations import Duration
from ccwatch.errors import RetentionError

DEFAULT_MIN_KEEP_DAYS = 30


def _clock_time(value: object) -> object:
    # YAML 1.1 reads an unquoted 22:00 as the sexagesimal integer 1320.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the time of day in quotes, e.g. "22:00"')
    return value


ClockTime = Annotated[time, BeforeValidator(_clock_time)]


def _identifier(value: str) -> str:
    if not value or "\x00" in value or len(value) > 63:
        raise ValueError(f"{value!r} is not a PostgreSQL identifier (1 to 63 characters)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


class RetentionTable(StrictModel):
    """One table to clean: ``table`` is ``name`` or ``schema.name`` (exact spelling)."""

    table: str = Field(description="table name, optionally schema-qualified (schema.table)")
    column: Identifier = Field(description="timestamp column: rows older than the cutoff go")
    batch_key: Identifier | None = Field(
        None, description="indexed column to walk batches by (default: the timestamp column)"
    )

    @field_validator("table")
    @classmethod
    def _qualified_name(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2:
            raise ValueError(f"{value!r}: write the table as 'name' or 'schema.name'")
        for part in parts:
            _identifier(part)
        return value

    @property
    def schema_name(self) -> str | None:
        return self.table.split(".")[0] if "." in self.table else None

    @property
    def table_name(self) -> str:
        return self.table.split(".")[-1]


class RetentionDatabase(StrictModel):
    """One database: where it is, how long rows live, and which tables to clean."""

    enabled: bool = True
    name: str = Field(min_length=1, description="label in reports, metrics and incidents")
    dsn: str | None = Field(None, description="libpq DSN or URI without a password")
    dsn_env: SecretEnv = Field(None, description="environment variable holding the DSN")
    dsn_file: SecretFile = Field(None, description="file whose first line is the DSN")
    min_keep_days: int = Field(
        DEFAULT_MIN_KEEP_DAYS, ge=1, description="safety floor keep_days may not go under"
    )
    keep_days: int = Field(ge=1, description="rows younger than keep_days + grace_days stay")
    grace_days: int = Field(1, ge=0)
    tables: list[RetentionTable] = Field(min_length=1)

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from psycopg.conninfo import conninfo_to_dict  # parses only; no connection

        try:
            params = conninfo_to_dict(value)
        except Exception:  # psycopg.ProgrammingError; its text may quote the DSN
            raise ValueError(
                "not a valid libpq DSN (key=value pairs or postgresql:// URI)"
            ) from None
        if params.get("password"):
            raise ValueError(
                "an inline dsn must not carry a password; put the whole DSN in an "
                "environment variable (dsn_env) or a file (dsn_file), or use ~/.pgpass"
            )
        return value

    @field_validator("keep_days")
    @classmethod
    def _above_floor(cls, value: int, info: ValidationInfo) -> int:
        floor = info.data.get("min_keep_days", DEFAULT_MIN_KEEP_DAYS)
        if value < floor:
            raise ValueError(
                f"keep_days {value} is below the safety floor min_keep_days ({floor}); "
                "a typo here deletes production data for good"
            )
        return value

    @model_validator(mode="after")
    def _one_dsn_source(self) -> RetentionDatabase:
        given = [
            key
            for key, value in (
                ("dsn", self.dsn),
                ("dsn_env", self.dsn_env),
                ("dsn_file", self.dsn_file),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"database {self.name!r}: give exactly one of dsn, dsn_env, dsn_file "
                f"(got {', '.join(given) or 'none'})"
            )
        if twice := repeated(table.table for table in self.tables):
            raise ValueError(f"database {self.name!r}: table {', '.join(twice)} listed twice")
        return self

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.keep_days + self.grace_days)

    def cutoff(self, now: datetime) -> datetime:
        """Rows with a timestamp strictly before this are deleted; rows at it are kept."""
        return now - self.retention


class RetentionSchedule(CronSchedule):
    """The one cron schedule type, with retention's default time: 01:30."""

    cron: CronExpression = Field(
        "30 1 * * *", description="5-field crontab: minute hour day-of-month month day-of-week"
    )


class MaintenanceWindow(StrictModel):
    """Batches start only inside [start, end) local time; end before start spans midnight."""

    start: ClockTime
    end: ClockTime
    timezone: TimeZone = UTC_ZONE

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("window start and end are equal; leave `window` out to allow any time")
        return self

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.timezone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"


class BatchTuning(StrictModel):
    target_duration: Duration = Field(
        timedelta(milliseconds=200), description="batch size adapts to take about this long"
    )
    pause: Duration = Field(timedelta(milliseconds=10), description="sleep between batches")
    initial_size: int = Field(1000, ge=1)
    min_size: int = Field(100, ge=1)
    max_size: int = Field(500_000, ge=1)
    lock_timeout: Duration = Field(timedelta(milliseconds=500), description="SET LOCAL per batch")
    statement_timeout: Duration = Field(timedelta(seconds=10), description="SET LOCAL per batch")
    max_retries: int = Field(
        5, ge=0, description="retries of a batch after a lock/statement timeout"
    )

    @model_validator(mode="after")
    def _consistent(self) -> BatchTuning:
        if not self.min_size <= self.initial_size <= self.max_size:
            raise ValueError(
                f"batch sizes must satisfy min_size ({self.min_size}) <= initial_size "
                f"({self.initial_size}) <= max_size ({self.max_size})"
            )
        if self.target_duration <= timedelta(0):
            raise ValueError("target_duration must be greater than 0")
        if self.lock_timeout <= timedelta(0):
            raise ValueError("lock_timeout must be greater than 0 (0 would wait forever)")
        if self.statement_timeout <= self.target_duration:
            raise ValueError("statement_timeout must be longer than target_duration")
        return self


class RetentionConfig(StrictModel):
    schedule: RetentionSchedule = RetentionSchedule()
    window: MaintenanceWindow | None = Field(
        None, description="no batch starts outside it; a run cut short continues next time"
    )
    batch: BatchTuning = BatchTuning()
    archive_dir: Path | None = Field(
        None, description="copy rows to <dir>/<database>/<table>/<day>.csv.gz before deleting"
    )
    databases: list[RetentionDatabase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> RetentionConfig:
        if twice := repeated(database.name for database in self.databases):
            raise ValueError(f"database names must be unique; {', '.join(twice)} repeats")
        return self

    @property
    def enabled_databases(self) -> list[RetentionDatabase]:
        return [database for database in self.databases if database.enabled]


Clock = Callable[[], datetime]
"""What a retention run reads the time from (tests pass a fixed or moving one)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def resolve_dsn(database: RetentionDatabase) -> str:
    """The database's DSN (inline, or read from its env variable or file)."""
    if database.dsn is not None:
        return database.dsn
    dsn = read_secret(database.dsn_env, database.dsn_file)
    if not dsn:
        source = database.dsn_env or str(database.dsn_file)
        raise RetentionError(f"{database.name}: the DSN in {source} is not set or empty")
    return dsn
