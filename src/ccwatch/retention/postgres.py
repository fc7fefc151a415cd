"""Retention cleanup of one PostgreSQL database (psycopg 3, async).

Safety rules, in the order they are applied:

1. The cutoff is ``now - (keep_days + grace_days)`` days; only rows with a timestamp
   strictly before it go (``ts < cutoff``), so a row exactly at the cutoff stays and a
   NULL timestamp is never deleted. Every DELETE repeats the condition, so a row updated
   to a newer time while a batch runs is re-checked by PostgreSQL and kept.
2. Tables and columns are looked up in the catalog before anything is deleted; a
   missing one is a ``RetentionError`` naming the database, table and column. Names
   are only ever quoted with ``psycopg.sql.Identifier``, never pasted into SQL.
3. Rows go in short transactions (``SET LOCAL lock_timeout`` / ``statement_timeout``),
   so a batch never waits long for a lock and never holds one long: a timeout rolls the
   batch back and retries it with backoff, a bounded number of times.
4. Batches are keyset-paginated: each one walks the index of the batch key (the
   timestamp by default) forward from where the previous one stopped, so it does not
   revisit the dead rows of earlier batches. Its size adapts to take about
   ``target_duration``; a pause between batches lets the call flow breathe.
5. No batch starts outside the maintenance window; a run cut short continues next time.
6. Partitions (declarative, range on the timestamp column) entirely older than the
   cutoff are detached (``CONCURRENTLY`` where allowed) and dropped; the partition
   holding the cutoff is cleaned row by row.
7. With an archive folder, each batch's rows are copied out (CSV, gzip per table and
   day) and the files fsynced before the DELETE commits, in the same transaction with
   the rows locked; if the archived count differs from the deleted count the batch is
   rolled back and the archive files cut back to their previous length.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ccwatch.errors import RetentionError
from ccwatch.redact import Redactor
from ccwatch.retention.config import (
    Clock,
    RetentionConfig,
    RetentionDatabase,
    RetentionTable,
    resolve_dsn,
    utc_now,
)
from ccwatch.retention.metrics import RetentionMetrics
from ccwatch.retention.report import DatabaseReport, TableReport

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Column types a cutoff can be compared with, and how to spell them in a CAST.
TIMESTAMP_TYPES = {
    "timestamp with time zone": sql.SQL("timestamptz"),
    "timestamp without time zone": sql.SQL("timestamp"),
    "date": sql.SQL("date"),
}
RETRYABLE = (
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
)
_RANGE_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lower>.*)\) TO \((?P<upper>.*)\)$", re.S)


@dataclass(frozen=True)
class Relation:
    """A table or partition, as found in the catalog."""

    oid: int
    schema: str
    name: str
    kind: str  # 'r' ordinary table, 'p' partitioned table

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TablePlan:
    """A configured table checked against the catalog."""

    config: RetentionTable
    relation: Relation
    column_type: str
    columns: tuple[str, ...]

    @property
    def ts(self) -> sql.Identifier:
        return sql.Identifier(self.config.column)

    @property
    def key(self) -> sql.Identifier:
        return sql.Identifier(self.config.batch_key or self.config.column)

    @property
    def key_name(self) -> str:
        return self.config.batch_key or self.config.column


@dataclass
class _Batching:
    """Adaptive batch size: aims each batch at the target duration."""

    size: int
    min_size: int
    max_size: int
    target: float

    def adapt(self, elapsed: float) -> None:
        # Aim a little under the target so that noise stays under it; grow at most 4x
        # (a batch's fixed cost makes small ones look slow per row, so that errs low)
        # and shrink at most by half per batch.
        factor = 4.0 if elapsed <= 0 else 0.85 * self.target / elapsed
        factor = min(4.0, max(0.5, factor))
        self.size = min(self.max_size, max(self.min_size, int(self.size * factor)))

    def shrink(self) -> None:
        self.size = max(self.min_size, self.size // 2)


@dataclass
class _ArchiveFiles:
    """Gzip members appended per day; cut back to their old length on rollback."""

    folder: Path
    header: str
    sizes_before: dict[Path, int] = field(default_factory=dict)

    def append(self, day: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{day}.csv.gz"
        is_new = not path.exists()
        self.sizes_before.setdefault(path, 0 if is_new else path.stat().st_size)
        with path.open("ab") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb") as member:
                if is_new:
                    member.write(self.header.encode())
                member.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        if is_new:
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def roll_back(self) -> None:
        for path, size in self.sizes_before.items():
            with contextlib.suppress(FileNotFoundError):
                if size == 0:
                    path.unlink()
                else:
                    os.truncate(path, size)
        self.sizes_before.clear()

    def committed(self) -> None:
        self.sizes_before.clear()


class _WindowClosedError(Exception):
    """The maintenance window closed: stop starting batches."""


class PostgresRetention:
    """Cleans one database. ``run()`` never raises for a database problem: the error is in
    the report (``outcome == "failed"``); it raises only when cancelled."""

    def __init__(
        self,
        database: RetentionDatabase,
        config: RetentionConfig,
        *,
        metrics: RetentionMetrics | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.database = database
        self.config = config
        self.tuning = config.batch
        self.metrics = metrics
        self.clock = clock
        self.ignore_window = False
        self._cleaned: dict[str, list[Relation]] = {}  # per table: what lost rows

    # --- entry point --------------------------------------------------------------------

    async def run(self, *, dry_run: bool = False, ignore_window: bool = False) -> DatabaseReport:
        self.ignore_window = ignore_window or dry_run
        now = self.clock()
        cutoff = self.database.cutoff(now)
        report = DatabaseReport(
            database=self.database.name,
            dry_run=dry_run,
            cutoff=cutoff.isoformat(),
            started_at=now.isoformat(),
        )
        started = time.perf_counter()
        try:
            if not self._window_open():
                report.cut_short = True
                logger.info(
                    "retention of %s not started: outside the maintenance window %s",
                    self.database.name,
                    self._window_text(),
                )
                return report
            async with await self._connect() as conn:
                plans = [await self._plan(conn, table) for table in self.database.tables]
                for plan in plans:
                    table_report = TableReport(table=plan.config.table)
                    report.tables.append(table_report)
                    if dry_run:
                        await self._count(conn, plan, plan.relation, cutoff, table_report)
                        table_report.finished = True
                        continue
                    try:
                        await self._clean(conn, plan, plan.relation, cutoff, table_report)
                    except _WindowClosedError:
                        report.cut_short = True
                        logger.info(
                            "retention of %s stopped at %s: the maintenance window %s closed; "
                            "the next run continues",
                            self.database.name,
                            plan.config.table,
                            self._window_text(),
                        )
                        break
                    table_report.finished = True
                    await self._vacuum(conn, self._cleaned.pop(plan.config.table, []), table_report)
        except RetentionError as exc:
            report.error = str(exc)
        except psycopg.Error as exc:
            report.error = f"{self.database.name}: {type(exc).__name__}: {_one_line(exc)}"
        except OSError as exc:  # the archive folder, or a dsn_file read at run time
            report.error = f"{self.database.name}: {exc}"
        report.duration_seconds = round(time.perf_counter() - started, 3)
        if report.error:
            logger.error("retention of %s failed: %s", self.database.name, report.error)
        return report

    # --- connection and catalog ---------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        dsn = resolve_dsn(self.database)
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn,
                autocommit=True,
                connect_timeout=10,
                application_name="ccwatch-retention",
                # Plan every batch with its actual bounds: a generic plan cannot know
                # that [last, upper) is a small slice of the index.
                prepare_threshold=None,
            )
        except psycopg.Error as exc:
            # libpq quotes pieces of a malformed DSN back; none of it may reach a ticket.
            message = Redactor([dsn, *_dsn_password(dsn)]).text(_one_line(exc))
            raise RetentionError(f"{self.database.name}: cannot connect: {message}") from exc
        # Naive timestamp columns are read as UTC; a stalled ccwatch never keeps row locks.
        await conn.execute("SELECT set_config('TimeZone', 'UTC', false)")
        await conn.execute("SELECT set_config('DateStyle', 'ISO, YMD', false)")
        await conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '60s', false)")
        return conn

    async def _plan(self, conn: psycopg.AsyncConnection[Any], table: RetentionTable) -> TablePlan:
        where = f"{self.database.name}: table {table.table}"
        cursor = await conn.execute(
            """
            SELECT c.oid, n.nspname, c.relname, c.relkind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p')
              AND (n.nspname = %(schema)s::text
                   OR (%(schema)s::text IS NULL AND n.nspname = ANY (current_schemas(false))))
            ORDER BY array_position(current_schemas(false), n.nspname::text)
            LIMIT 1
            """,
            {"name": table.table_name, "schema": table.schema_name},
        )
        row = await cursor.fetchone()
        if row is None:
            looked = table.schema_name or "the search_path"
            raise RetentionError(f"{where} does not exist (looked in {looked})")
        relation = Relation(int(row[0]), row[1], row[2], row[3])
        columns = await self._columns(conn, relation.oid)
        for role, name in (("column", table.column), ("batch_key", table.batch_key)):
            if name is not None and name not in columns:
                raise RetentionError(
                    f"{where}: {role} {name!r} does not exist (columns: {', '.join(columns)})"
                )
        column_type = columns[table.column][0]
        if column_type not in TIMESTAMP_TYPES:
            raise RetentionError(
                f"{where}: column {table.column!r} is {column_type}; retention needs a "
                "timestamp, timestamptz or date column"
            )
        if table.batch_key is not None and not columns[table.batch_key][1]:
            raise RetentionError(
                f"{where}: batch_key {table.batch_key!r} must be NOT NULL (rows with a NULL "
                "key would never be reached)"
            )
        key = table.batch_key or table.column
        if not await self._has_leading_index(conn, relation.oid, key):
            raise RetentionError(
                f"{where}: no index starts with column {key!r}, so every batch would scan "
                f"the whole table; create one (CREATE INDEX CONCURRENTLY ON {relation.label} "
                f"({key})) or set batch_key to an indexed column"
            )
        return TablePlan(table, relation, column_type, tuple(columns))

    async def _columns(
        self, conn: psycopg.AsyncConnection[Any], oid: int
    ) -> dict[str, tuple[str, bool]]:
        cursor = await conn.execute(
            """
            SELECT attname, format_type(atttypid, NULL), attnotnull FROM pg_attribute
            WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum
            """,
            (oid,),
        )
        return {row[0]: (row[1], bool(row[2])) for row in await cursor.fetchall()}

    async def _has_leading_index(
        self, conn: psycopg.AsyncConnection[Any], oid: int, column: str
    ) -> bool:
        return await _fetch_flag(
            conn,
            """
            SELECT EXISTS (
                SELECT 1 FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                WHERE i.indrelid = %s AND a.attname = %s)
            """,
            (oid, column),
        )

    async def _children(
        self, conn: psycopg.AsyncConnection[Any], parent: Relation, plan: TablePlan
    ) -> list[tuple[Relation, str, bool]]:
        """(partition, bound expression, detach pending) of a partitioned table."""
        cursor = await conn.execute(
            """
            SELECT c.oid, n.nspname, c.relname, c.relkind,
                   pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.inhparent = %s
            ORDER BY c.relname
            """,
            (parent.oid,),
        )
        return [
            (Relation(int(r[0]), r[1], r[2], r[3]), r[4] or "", bool(r[5]))
            for r in await cursor.fetchall()
        ]

    async def _range_key_is(
        self, conn: psycopg.AsyncConnection[Any], parent: Relation, column: str
    ) -> bool:
        return await _fetch_flag(
            conn,
            """
            SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = %s
            FROM pg_partitioned_table p
            LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
            WHERE p.partrelid = %s
            """,
            (column, parent.oid),
        )

    async def _entirely_older(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        bound: str,
        cutoff: datetime,
    ) -> bool:
        """True when the partition's upper bound is at or before the cutoff."""
        match = _RANGE_BOUND.match(bound.strip())
        if match is None:
            return False  # DEFAULT partition, or not a range bound
        upper = match.group("upper").strip()
        if not (upper.startswith("'") and upper.endswith("'")):
            return False  # MAXVALUE
        literal = upper[1:-1].replace("''", "'")
        query = sql.SQL("SELECT CAST(%s AS {}) <= %s").format(TIMESTAMP_TYPES[plan.column_type])
        return await _fetch_flag(conn, query, (literal, cutoff))

    # --- dry run ------------------------------------------------------------------------

    async def _count(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        report: TableReport,
    ) -> None:
        if relation.kind == "p" and await self._range_key_is(conn, relation, plan.config.column):
            for child, bound, _pending in await self._children(conn, relation, plan):
                if await self._entirely_older(conn, plan, bound, cutoff):
                    report.partitions_dropped.append(child.label)
                    query = sql.SQL("SELECT count(*) FROM {}").format(child.ident)
                    report.partition_rows += await self._count_query(conn, query, ())
                else:
                    await self._count(conn, plan, child, cutoff, report)
            return
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(relation.ident, plan.ts)
        report.rows_deleted += await self._count_query(conn, query, (cutoff,))

    async def _count_query(
        self, conn: psycopg.AsyncConnection[Any], query: sql.Composed, params: tuple[object, ...]
    ) -> int:
        # A count may take a while on a big table, but must not queue behind a lock.
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", (_ms(self.tuning.lock_timeout),)
            )
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # --- cleanup ------------------------------------------------------------------------

    async def _clean(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        report: TableReport,
    ) -> None:
        if relation.kind != "p":
            await self._delete_rows(conn, plan, relation, cutoff, report)
            return
        by_time = await self._range_key_is(conn, relation, plan.config.column)
        children = await self._children(conn, relation, plan)
        has_default = any(bound.strip() == "DEFAULT" for _child, bound, _p in children)
        for child, bound, pending in children:
            # A detach-pending partition is finished only if it is ours to drop by its
            # bound; one a DBA is detaching is left alone.
            if by_time and await self._entirely_older(conn, plan, bound, cutoff):
                if self.config.archive_dir is not None and not pending:
                    # Archive first: the rows go out through the batch path, then the
                    # emptied partition is dropped.
                    await self._clean(conn, plan, child, cutoff, report)
                await self._drop_partition(conn, relation, child, has_default, pending, report)
            else:
                await self._clean(conn, plan, child, cutoff, report)

    async def _delete_rows(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        report: TableReport,
    ) -> None:
        batching = _Batching(
            size=self.tuning.initial_size,
            min_size=self.tuning.min_size,
            max_size=self.tuning.max_size,
            target=self.tuning.target_duration.total_seconds(),
        )
        last_key: object = None
        stalled = 0
        first = True
        while True:
            if not first and self.tuning.pause > timedelta(0):
                await asyncio.sleep(self.tuning.pause.total_seconds())
            first = False
            if not self._window_open():
                raise _WindowClosedError
            batch = self._delete_batch if self.config.archive_dir is None else self._archive_batch
            (more, deleted, next_key), elapsed = await self._retrying(
                relation,
                report,
                batching,
                functools.partial(batch, conn, plan, relation, cutoff, last_key, batching),
            )
            if self.config.archive_dir is not None:
                report.rows_archived += deleted
            report.batches += 1
            report.rows_deleted += deleted
            if deleted and relation not in self._cleaned.setdefault(plan.config.table, []):
                self._cleaned[plan.config.table].append(relation)
            report.slowest_batch_seconds = max(report.slowest_batch_seconds, round(elapsed, 4))
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(elapsed)
                if deleted:
                    self.metrics.rows_deleted.labels(
                        database=self.database.name, table=plan.config.table
                    ).inc(deleted)
            logger.debug(
                "retention batch %s.%s: %d of %d rows in %.3fs",
                self.database.name,
                relation.label,
                deleted,
                batching.size,
                elapsed,
            )
            batching.adapt(elapsed)
            if not more:
                return
            stalled = stalled + 1 if deleted == 0 and next_key == last_key else 0
            if stalled >= 3:
                raise RetentionError(
                    f"{self.database.name}: table {relation.label}: three batches in a row "
                    "made no progress (rows updated concurrently?)"
                )
            last_key = next_key

    async def _begin_batch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # A batch lost in a server crash is simply deleted again by the next run, so its
        # commit need not wait for the WAL flush (or a synchronous standby).
        await conn.execute(
            "SELECT set_config('lock_timeout', %s, true),"
            " set_config('statement_timeout', %s, true),"
            " set_config('synchronous_commit', 'off', true)",
            (_ms(self.tuning.lock_timeout), _ms(self.tuning.statement_timeout)),
        )

    async def _delete_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        last_key: object,
        batching: _Batching,
    ) -> tuple[bool, int, object]:
        """One batch: the key range [last, upper) holding the next ``size`` expired rows.

        ``upper`` comes from the key's index (an index-only scan when the key is the
        timestamp), and the DELETE of a key range lets PostgreSQL read the heap in
        physical order, nearly as cheaply as one big DELETE. Returns (more to do,
        rows deleted, where the next batch starts).
        """
        params = {"cutoff": cutoff, "last": last_key, "offset": batching.size}
        bound = sql.SQL(
            "SELECT {key} FROM {table} WHERE {ts} < %(cutoff)s {from_last} "
            "ORDER BY {key} OFFSET %(offset)s LIMIT 1"
        ).format(
            key=plan.key, table=relation.ident, ts=plan.ts, from_last=_from_last(plan, last_key)
        )
        async with conn.transaction():
            await self._begin_batch(conn)
            row = await (await conn.execute(bound, params)).fetchone()
            upper = row[0] if row else None
            if upper is not None and upper == last_key:
                # More than a batch of rows share one key value: take them by row id.
                return await self._delete_batch_by_row_ids(
                    conn, plan, relation, cutoff, last_key, batching
                )
            to_upper = (
                sql.SQL("AND {} < %(upper)s").format(plan.key) if upper is not None else sql.SQL("")
            )
            delete = sql.SQL("DELETE FROM {table} WHERE {ts} < %(cutoff)s {from_last} {to_upper}")
            cursor = await conn.execute(
                delete.format(
                    table=relation.ident,
                    ts=plan.ts,
                    from_last=_from_last(plan, last_key),
                    to_upper=to_upper,
                ),
                {**params, "upper": upper},
            )
            deleted = cursor.rowcount
        return upper is not None, deleted, upper

    async def _delete_batch_by_row_ids(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        last_key: object,
        batching: _Batching,
    ) -> tuple[bool, int, object]:
        """The next ``size`` rows along the key, deleted by ctid (inside the caller's
        transaction)."""
        query = sql.SQL(
            """
            WITH batch AS MATERIALIZED (
                SELECT ctid AS row_id, {key} AS batch_key FROM {table}
                WHERE {ts} < %(cutoff)s {from_last}
                ORDER BY {key} LIMIT %(limit)s
            ), gone AS (
                DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT row_id FROM batch))
                    AND {ts} < %(cutoff)s
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone),
                   (SELECT batch_key FROM batch ORDER BY batch_key DESC LIMIT 1)
            """
        ).format(
            key=plan.key,
            table=relation.ident,
            ts=plan.ts,
            from_last=_from_last(plan, last_key),
        )
        params = {"cutoff": cutoff, "limit": batching.size, "last": last_key}
        row = await (await conn.execute(query, params)).fetchone()
        assert row is not None
        selected, deleted = int(row[0]), int(row[1])
        return selected == batching.size, deleted, row[2] if selected else last_key

    async def _archive_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: TablePlan,
        relation: Relation,
        cutoff: datetime,
        last_key: object,
        batching: _Batching,
    ) -> tuple[bool, int, object]:
        """Lock the batch's rows, copy them out per day, fsync, delete, compare counts."""
        assert self.config.archive_dir is not None
        folder = (
            self.config.archive_dir / _safe_name(self.database.name) / _safe_name(plan.config.table)
        )
        archive = _ArchiveFiles(folder, ",".join(_csv_field(c) for c in plan.columns) + "\n")
        select = sql.SQL(
            """
            SELECT ctid::text AS row_id, {key} AS batch_key, {ts}::date::text AS day
            FROM {table}
            WHERE {ts} < %(cutoff)s {from_last}
            ORDER BY {key} LIMIT %(limit)s
            FOR UPDATE
            """
        ).format(
            key=plan.key, ts=plan.ts, table=relation.ident, from_last=_from_last(plan, last_key)
        )
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in plan.columns)
        try:
            async with conn.transaction():
                await self._begin_batch(conn)
                cursor = await conn.execute(
                    select, {"cutoff": cutoff, "limit": batching.size, "last": last_key}
                )
                rows = await cursor.fetchall()
                by_day: dict[str, list[str]] = {}
                for row_id, _key, day in rows:
                    by_day.setdefault(day, []).append(row_id)
                archived = 0
                for day, row_ids in sorted(by_day.items()):
                    copy_query = sql.SQL(
                        "COPY (SELECT {columns} FROM {table} WHERE ctid = ANY (%s::tid[])) "
                        "TO STDOUT (FORMAT csv)"
                    ).format(columns=columns, table=relation.ident)
                    chunks: list[bytes] = []
                    async with conn.cursor() as copy_cursor:
                        async with copy_cursor.copy(copy_query, (row_ids,)) as copy:
                            async for chunk in copy:
                                chunks.append(bytes(chunk))
                        archived += copy_cursor.rowcount
                    await asyncio.to_thread(archive.append, day, b"".join(chunks))
                all_ids = [row_id for row_ids in by_day.values() for row_id in row_ids]
                delete = sql.SQL(
                    "DELETE FROM {table} WHERE ctid = ANY (%s::tid[]) AND {ts} < %s"
                ).format(table=relation.ident, ts=plan.ts)
                cursor = await conn.execute(delete, (all_ids, cutoff))
                deleted = cursor.rowcount
                if deleted != archived or deleted != len(all_ids):
                    raise RetentionError(
                        f"{self.database.name}: table {relation.label}: archived {archived} "
                        f"rows but the delete matched {deleted}; batch rolled back"
                    )
        except BaseException:
            await asyncio.to_thread(archive.roll_back)
            raise
        archive.committed()
        return len(rows) == batching.size, deleted, rows[-1][1] if rows else last_key

    async def _retrying(
        self,
        relation: Relation,
        report: TableReport,
        batching: _Batching | None,
        attempt: Callable[[], Awaitable[T]],
    ) -> tuple[T, float]:
        """Run a batch; on a lock/statement timeout roll back, back off and retry (bounded).

        Returns the result and the duration of the attempt that succeeded."""
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                return await attempt(), time.perf_counter() - started
            except RETRYABLE as exc:
                failures += 1
                reason = _retry_reason(exc)
                report.retries += 1
                if self.metrics is not None:
                    self.metrics.batch_retries.labels(
                        database=self.database.name, reason=reason
                    ).inc()
                if failures > self.tuning.max_retries:
                    raise RetentionError(
                        f"{self.database.name}: table {relation.label}: gave up after "
                        f"{failures} attempts ({reason}: {_one_line(exc)}); another session "
                        "holds a conflicting lock or the batch is too slow"
                    ) from exc
                if batching is not None and isinstance(exc, pg_errors.QueryCanceled):
                    batching.shrink()
                delay = min(5.0, 0.1 * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
                logger.warning(
                    "retention batch on %s.%s rolled back (%s), retry %d of %d in %.1fs",
                    self.database.name,
                    relation.label,
                    reason,
                    failures,
                    self.tuning.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                if not self._window_open():
                    raise _WindowClosedError from exc

    async def _drop_partition(
        self,
        conn: psycopg.AsyncConnection[Any],
        parent: Relation,
        child: Relation,
        has_default: bool,
        pending: bool,
        report: TableReport,
    ) -> None:
        if not self._window_open():
            raise _WindowClosedError
        # CONCURRENTLY takes only SHARE UPDATE EXCLUSIVE on the parent, so inserts into
        # it go on; PostgreSQL refuses it when a DEFAULT partition exists.
        if pending:
            detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE")
        elif has_default:
            detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {}")
        else:
            detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY")
        detach_query = detach.format(parent.ident, child.ident)

        async def detach_and_drop() -> None:
            if pending or has_default:
                async with conn.transaction():
                    await self._begin_batch(conn)
                    await conn.execute(detach_query)
            else:
                # Not allowed in a transaction block: session-level timeouts, reset after.
                await conn.execute(
                    "SELECT set_config('lock_timeout', %s, false), "
                    "set_config('statement_timeout', %s, false)",
                    (_ms(self.tuning.lock_timeout), _ms(self.tuning.statement_timeout)),
                )
                try:
                    await conn.execute(detach_query)
                finally:
                    await conn.execute("RESET lock_timeout")
                    await conn.execute("RESET statement_timeout")
            async with conn.transaction():
                await self._begin_batch(conn)
                await conn.execute(sql.SQL("DROP TABLE {}").format(child.ident))

        try:
            await self._retrying(child, report, None, detach_and_drop)
        except RetentionError:
            if not pending and not has_default and await self._detach_pending(conn, child):
                # A cancelled CONCURRENTLY leaves the detach pending: finish it next time.
                logger.warning(
                    "partition %s is left detach-pending; the next run finalizes it", child.label
                )
            raise
        report.partitions_dropped.append(child.label)
        if self.metrics is not None:
            self.metrics.partitions_dropped.labels(
                database=self.database.name, table=report.table
            ).inc()
        logger.info("retention dropped partition %s of %s", child.label, parent.label)

    async def _detach_pending(self, conn: psycopg.AsyncConnection[Any], child: Relation) -> bool:
        query = "SELECT bool_or(inhdetachpending) FROM pg_inherits WHERE inhrelid = %s"
        return await _fetch_flag(conn, query, (child.oid,))

    async def _vacuum(
        self, conn: psycopg.AsyncConnection[Any], relations: list[Relation], report: TableReport
    ) -> None:
        """VACUUM (ANALYZE) of the tables or partitions that lost rows, outside a
        transaction; a lock conflict skips one (autovacuum will get to it)."""
        await conn.execute(
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('statement_timeout', '0', false)",
            (_ms(self.tuning.lock_timeout),),
        )
        try:
            for relation in relations:
                if not self._window_open():
                    return
                try:
                    await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(relation.ident))
                    report.vacuumed = True
                except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
                    logger.warning(
                        "VACUUM of %s.%s skipped (%s); autovacuum will get to it",
                        self.database.name,
                        relation.label,
                        _one_line(exc),
                    )
        finally:
            await conn.execute("RESET lock_timeout")
            await conn.execute("RESET statement_timeout")

    # --- window -------------------------------------------------------------------------

    def _window_open(self) -> bool:
        window = self.config.window
        return self.ignore_window or window is None or window.is_open(self.clock())

    def _window_text(self) -> str:
        return self.config.window.describe() if self.config.window else "(none)"


def _from_last(plan: TablePlan, last_key: object) -> sql.Composable:
    # ">=" and not ">": rows sharing the last key value that a LIMIT cut off are picked up
    # by the next batch; the already-deleted ones are invisible to it.
    if last_key is None:
        return sql.SQL("")
    return sql.SQL("AND {} >= %(last)s").format(plan.key)


def _retry_reason(exc: BaseException) -> str:
    if isinstance(exc, pg_errors.LockNotAvailable):
        return "lock_timeout"
    if isinstance(exc, pg_errors.QueryCanceled):
        return "statement_timeout"
    if isinstance(exc, pg_errors.DeadlockDetected):
        return "deadlock"
    return "serialization"


def _dsn_password(dsn: str) -> list[str]:
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return []
    return [str(password)] if password else []


def _ms(value: timedelta) -> str:
    return f"{max(1, round(value.total_seconds() * 1000))}ms"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


async def _fetch_flag(
    conn: psycopg.AsyncConnection[Any],
    query: str | sql.Composed,
    params: tuple[object, ...],
) -> bool:
    """The boolean first column of a one-row catalog probe (False when there is no row)."""
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return bool(row and row[0])
