"""``postgres``: connect, a ``SELECT 1`` round trip, database size, longest-running
transaction and, when ``max_replication_lag`` is set, replication lag (on a primary: the
slowest connected replica; on a replica: its own replay delay)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from pydantic import ByteSize, Field, field_validator

from ccwatch.checklists.checks.base import CheckEnv, CheckType, format_age, format_bytes
from ccwatch.checklists.checks.pgconnect import connect, redact_dsn, reject_inline_password
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import SecretEnv, SecretFile, StrictModel
from ccwatch.durations import Duration, format_duration


class PostgresParams(StrictModel):
    dsn: str = Field(description="libpq DSN without a password, e.g. 'host=127.0.0.1 dbname=x'")
    password_env: SecretEnv = None
    password_file: SecretFile = None
    connect_timeout: Duration = timedelta(seconds=5)
    warn_size: ByteSize | None = Field(None, description="warn when the database is larger")
    max_transaction_age: Duration | None = Field(
        timedelta(hours=1), description="fail when a transaction has been open longer"
    )
    max_replication_lag: Duration | None = Field(
        None, description="check replication and fail when it lags more (set it on HA pairs)"
    )

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, value: str) -> str:
        reject_inline_password(value)
        return value


_STATS = """
SELECT pg_database_size(current_database()),
       current_database(),
       COALESCE(EXTRACT(EPOCH FROM max(now() - xact_start)), 0)
  FROM pg_stat_activity
 WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
"""
_REPLICATION = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery()
            THEN EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
            ELSE (SELECT EXTRACT(EPOCH FROM max(replay_lag)) FROM pg_stat_replication) END,
       (SELECT count(*) FROM pg_stat_replication)
"""


async def run(params: PostgresParams, env: CheckEnv) -> Outcome:
    import psycopg

    where = redact_dsn(params.dsn)
    timeout = params.connect_timeout.total_seconds()
    try:
        connection = await connect(params.dsn, params.password_env, params.password_file, timeout)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Outcome(
            Status.FAIL,
            f"cannot connect: {reason}",
            "connects and answers SELECT 1",
            f"check that PostgreSQL runs and accepts ccwatch ({where})",
        )
    async with connection:
        started = time.perf_counter()
        await connection.execute("SELECT 1")
        round_trip_ms = (time.perf_counter() - started) * 1000
        row = await (await connection.execute(_STATS)).fetchone()
        assert row is not None
        size, database, longest = int(str(row[0])), str(row[1]), float(str(row[2]))
        replication: tuple[Any, ...] | None = None
        if params.max_replication_lag is not None:
            replication = await (await connection.execute(_REPLICATION)).fetchone()

    value = (
        f"{database}: SELECT 1 in {round_trip_ms:.1f} ms, size {format_bytes(size)}, "
        f"longest transaction {format_age(longest)}"
    )
    limits = ["connects and answers SELECT 1"]
    status, hints = Status.OK, []
    if params.warn_size is not None:
        limits.append(f"size warn above {format_bytes(params.warn_size)}")
        if size > params.warn_size:
            status = Status.WARN
            hints.append("the database is growing: check that the retention cleanup runs")
    if params.max_transaction_age is not None:
        limits.append(
            f"no transaction open longer than {format_duration(params.max_transaction_age)}"
        )
        if longest > params.max_transaction_age.total_seconds():
            status = Status.FAIL
            hints.append(
                "a long transaction blocks vacuum: find it in pg_stat_activity "
                "(ORDER BY xact_start) and end it (pg_terminate_backend)"
            )
    if params.max_replication_lag is not None and replication is not None:
        max_lag = params.max_replication_lag.total_seconds()
        limits.append(f"replication lag at most {format_duration(params.max_replication_lag)}")
        in_recovery, lag, replicas = bool(replication[0]), replication[1], int(replication[2])
        if not in_recovery and replicas == 0:
            value += ", no replica connected"
            status = Status.FAIL
            hints.append("the standby is not streaming: check it and its primary_conninfo")
        else:
            lag_seconds = float(lag) if lag is not None else 0.0
            value += f", replication lag {format_age(lag_seconds)}"
            if lag_seconds > max_lag:
                status = Status.FAIL
                hints.append("replication lags: check the standby's disk, network and its log")
    return Outcome(status, value, "; ".join(limits), " ".join(hints))


CHECK = CheckType(
    "postgres",
    PostgresParams,
    run,
    "PostgreSQL answers; size, longest transaction, replication lag",
)
