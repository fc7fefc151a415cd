"""``retention``: no rows older than the retention cutoff remain (the cleanup ran).

Either ``database:`` names a database of ``retention.databases`` in config.yaml (its DSN,
``keep_days``, ``grace_days`` and tables are reused), ``database: "*"`` checks every
enabled database there (one line per database; a database added to config.yaml is
checked without editing the checklist), or the check gives ``dsn``, ``keep_days`` and
``tables`` itself. The cleanup deletes what is older than
``keep_days + grace_days`` days; between two cleanups rows keep crossing that line, so the
check only fails on rows older than that cutoff minus ``slack`` (default one day, the
cleanup's usual period). A check that ignored this would fail every morning after a
perfectly good nightly run.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from ccwatch.checklists.checks.base import CheckEnv, CheckType
from ccwatch.checklists.checks.pgconnect import connect, redact_dsn, reject_inline_password
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration, format_duration
from ccwatch.errors import RetentionError
from ccwatch.retention.config import RetentionTable, resolve_dsn


class RetentionParams(StrictModel):
    database: str | None = Field(
        None, description='a name from retention.databases, or "*" for every enabled one'
    )
    dsn: str | None = None
    password_env: SecretEnv = None
    password_file: SecretFile = None
    keep_days: int | None = Field(None, ge=1)
    grace_days: int = Field(1, ge=0)
    tables: list[RetentionTable] = Field(default_factory=list)
    slack: Duration = Field(
        timedelta(days=1), description="time between cleanups; rows this far past the cutoff fail"
    )
    connect_timeout: Duration = timedelta(seconds=5)

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, value: str | None) -> str | None:
        return reject_inline_password(value)

    @model_validator(mode="after")
    def _one_source(self) -> RetentionParams:
        if self.database is not None:
            if self.dsn is not None or self.tables or self.keep_days is not None:
                raise ValueError(
                    "give either `database` (from retention.databases) or `dsn`, `keep_days` "
                    "and `tables`, not both"
                )
        elif self.dsn is None or self.keep_days is None or not self.tables:
            raise ValueError(
                "give `database` (a name from retention.databases) or all of `dsn`, "
                "`keep_days` and `tables`"
            )
        return self


EVERY_DATABASE = "*"


def _target(
    params: RetentionParams, env: CheckEnv, name: str | None
) -> tuple[str, int, list[RetentionTable]] | str:
    """(dsn, cutoff days, tables) of database ``name`` (None: the check's own ``dsn``), or
    the reason the check is skipped."""
    if name is None:
        assert params.dsn is not None and params.keep_days is not None
        return params.dsn, params.keep_days + params.grace_days, list(params.tables)
    databases = {db.name: db for db in env.config.retention.databases}
    database = databases.get(name)
    if database is None:
        close = difflib.get_close_matches(name, databases, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"retention database {name!r} is not configured in config.yaml{hint}"
    if not database.enabled:
        return f"retention database {name!r} is disabled in config.yaml"
    try:
        dsn = resolve_dsn(database)
    except RetentionError as exc:
        return f"retention database {name!r}: {exc}"
    if not database.tables:
        return f"retention database {name!r} lists no tables"
    return dsn, database.keep_days + database.grace_days, list(database.tables)


def _identifier(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(*name.split("."))


async def run(params: RetentionParams, env: CheckEnv) -> Outcome:
    if params.database != EVERY_DATABASE:
        return await _check_one(params, env, params.database)
    names = [db.name for db in env.config.retention.databases]
    if not names:
        return Outcome.skipped("no retention databases are configured in config.yaml")
    outcomes = {name: await _check_one(params, env, name) for name in names}
    checked = {name: o for name, o in outcomes.items() if o.status is not Status.SKIPPED}
    lines = [f"{name}: {o.status.value}: {o.value}" for name, o in outcomes.items()]
    lines += [f"{name}: {o.detail}" for name, o in checked.items() if o.detail]
    if not checked:
        return Outcome.skipped("; ".join(o.value for o in outcomes.values()))
    worst = min(checked.values(), key=lambda o: o.status.report_rank).status
    problems = [name for name, o in checked.items() if o.status is not Status.OK]
    hints = [f"{name}: {o.hint}" for name, o in checked.items() if o.hint]
    value = (
        "; ".join(f"{name}: {checked[name].value}" for name in problems)
        if problems
        else f"0 rows older than the cutoff in {len(checked)} database(s): {', '.join(checked)}"
    )
    return Outcome(
        worst,
        value,
        "; ".join(f"{name}: {o.threshold}" for name, o in checked.items()),
        "; ".join(hints),
        "\n".join(lines),
    )


async def _check_one(params: RetentionParams, env: CheckEnv, name: str | None) -> Outcome:
    import psycopg
    from psycopg import sql

    target = _target(params, env, name)
    if isinstance(target, str):
        return Outcome.skipped(target)
    dsn, cutoff_days, tables = target
    cutoff = datetime.fromtimestamp(env.clock(), UTC) - timedelta(days=cutoff_days) - params.slack
    threshold = (
        f"no rows older than {cutoff_days} days + {format_duration(params.slack)} slack "
        f"(before {cutoff:%Y-%m-%d %H:%M} UTC)"
    )
    timeout = params.connect_timeout.total_seconds()
    try:
        connection = await connect(dsn, params.password_env, params.password_file, timeout)
    except psycopg.Error as exc:
        return Outcome(
            Status.FAIL,
            f"cannot connect: {str(exc).strip().splitlines()[0]}",
            threshold,
            f"check that the database is reachable ({redact_dsn(dsn)})",
        )
    found: list[str] = []
    missing: list[str] = []
    oldest: list[str] = []
    async with connection:
        for entry in tables:
            query = sql.SQL(
                "SELECT count(*), min({column}) FROM {table} WHERE {column} < %s"
            ).format(column=sql.Identifier(entry.column), table=_identifier(entry.table))
            try:
                row = await (await connection.execute(query, (cutoff,))).fetchone()
            except psycopg.errors.UndefinedTable:
                missing.append(entry.table)
                continue
            except psycopg.errors.UndefinedColumn:
                missing.append(f"{entry.table}.{entry.column}")
                continue
            assert row is not None
            count = int(str(row[0]))
            if count:
                found.append(f"{entry.table}: {count} rows")
                oldest.append(f"{entry.table} oldest {row[1]}")
    if missing:
        return Outcome(
            Status.FAIL,
            f"not found: {', '.join(missing)}",
            threshold,
            "fix the table/column names in the retention config; a renamed table is never cleaned",
        )
    if found:
        return Outcome(
            Status.FAIL,
            "; ".join(found) + " older than the cutoff",
            threshold,
            "the cleanup did not run or fell behind: run `ccwatch retention run` and read its log",
            detail="; ".join(oldest),
        )
    return Outcome(Status.OK, f"0 rows older than the cutoff in {len(tables)} table(s)", threshold)


CHECK = CheckType("retention", RetentionParams, run, "no rows older than the retention cutoff")
