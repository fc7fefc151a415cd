"""The PostgreSQL state backend (``state.backend: postgresql``): psycopg 3 and psycopg_pool.

``PostgresStore`` is a ``StateStore`` like ``SqliteStore``: features hand it functions
``f(connection)`` and it runs them on a store thread. Here each store thread borrows a
connection from a ``psycopg_pool.ConnectionPool`` (``min_size``/``max_size``, one store
thread per pooled connection) for the length of the function, so a page read does not
wait behind the dispatcher's write. Connections are in autocommit mode, like the SQLite
one (``isolation_level=None``): statements outside ``transaction()`` commit themselves.

``PgConnection`` is what a feature's function receives: ``execute``/``executemany`` with
the features' ``?`` placeholders, turned into psycopg's ``%s`` once per statement text
(``pg_sql``, cached), and rows readable by name or position (``PgRow``), as
``sqlite3.Row`` is. Errors of psycopg leave the store as ``StateStoreError`` (what
callers catch for SQLite too, beside ``sqlite3.Error``).

``open`` applies the migrations on a connection of its own under a session advisory
lock (``MIGRATION_LOCK``), so two workers starting together on one database take turns:
the second finds the steps applied. The DSN is a secret (``state.dsn_env``/``dsn_file``):
``location`` and every message name only host, port and database.

This module imports psycopg; only ``compose.open_state`` imports it, and only for the
PostgreSQL backend, so SQLite deployments never load libpq.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from ccwatch.errors import StateStoreError
from ccwatch.state.connection import POSTGRESQL, Connection, Params, transaction
from ccwatch.state.migrations import Migrations, migrate
from ccwatch.state.store import StateStore

T = TypeVar("T")

# pg_advisory_lock key of the migration runner: "ccwatch" in ASCII.
MIGRATION_LOCK = 0x63637761746368
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 4
CONNECT_TIMEOUT = 5.0  # seconds to connect, and to wait for a free pooled connection
LOCK_TIMEOUT_MS = 5000  # like SQLite's busy_timeout


# --- statements and rows ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def pg_sql(sql: str) -> str:
    """A statement written with ``?`` placeholders, for psycopg: each ``?`` outside quotes
    and comments becomes ``%s``, and every literal ``%`` becomes ``%%`` (psycopg reads
    ``%`` everywhere in a query that has parameters)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while True:
                end = sql.find(ch, end)
                if end == -1:
                    end = n
                    break
                if end + 1 < n and sql[end + 1] == ch:  # a doubled quote inside
                    end += 2
                    continue
                end += 1
                break
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("--", i) or sql.startswith("/*", i):
            close = "\n" if sql[i + 1] == "-" else "*/"
            end = sql.find(close, i + 2)
            end = n if end == -1 else end + len(close)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        else:
            out.append("%s" if ch == "?" else "%%" if ch == "%" else ch)
            i += 1
    return "".join(out)


class PgRow(tuple[Any, ...]):
    """A result row: ``row["column"]`` or ``row[0]``, and it unpacks like a tuple."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[PgRow]:
    index = {name: position for position, name in enumerate(names)}
    return type("PgRow", (PgRow,), {"__slots__": (), "_index": index})


def pg_row(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    """psycopg row factory making ``PgRow`` values."""
    description = cursor.description
    cls = _row_class(tuple(column.name for column in description or ()))
    return cls


class PgConnection:
    """A pooled psycopg connection as features see it (``state.connection.Connection``)."""

    dialect = POSTGRESQL
    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Params = (), /) -> psycopg.Cursor[Any]:
        if not isinstance(parameters, Sequence):
            raise TypeError("state SQL uses ? placeholders with a sequence of parameters")
        return self.raw.execute(pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(pg_sql(sql), parameters)
        return cursor

    def transaction(self) -> AbstractContextManager[Any]:
        return self.raw.transaction()


# --- the store --------------------------------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """``postgresql://host:port/dbname`` of a DSN: never its user or password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://(an unparsable DSN)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _scrub(text: str, dsn: str) -> str:
    """An error message without the DSN or its password, should libpq quote them."""
    secrets = [dsn]
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        secrets.append(str(password))
    for secret in secrets:
        text = text.replace(secret, "****")
    return " ".join(text.split())


def _configure(raw: psycopg.Connection[Any]) -> None:
    """Each new pooled connection: wait at most as long for a lock as SQLite's
    ``busy_timeout`` (5 s), then fail the write (it is retried) instead of hanging."""
    raw.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_MS}ms'")


class PostgresStore(StateStore):
    """A psycopg connection pool and one store thread per connection."""

    dialect = POSTGRESQL

    def __init__(
        self,
        dsn: str,
        migrations: Iterable[Migrations] = (),
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(migrations, threads=max_size)
        self._dsn = dsn
        self._location = describe_dsn(dsn)
        self._timeout = timeout
        self._pool = ConnectionPool(
            self._conninfo(),
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": pg_row},
            configure=_configure,
            open=False,
            name="ccwatch-state",
            timeout=timeout,
        )
        self._open = False
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        dsn: str,
        migrations: Iterable[Migrations] = (),
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float = CONNECT_TIMEOUT,
    ) -> PostgresStore:
        """Connect, apply ``migrations`` under the advisory lock, open the pool; raises
        StateStoreError naming the database (not the DSN) and libpq's reason."""
        store = cls(dsn, migrations, min_size=min_size, max_size=max_size, timeout=timeout)
        try:
            store._migrate()
            store._pool.open(wait=True, timeout=timeout)
        except (psycopg.Error, StateStoreError) as exc:
            store._executor.shutdown(wait=False)
            store._pool.close()
            if isinstance(exc, StateStoreError):
                raise
            raise StateStoreError(
                f"cannot open state database {store.location}: {_scrub(str(exc), dsn)}; check "
                "the DSN of `state.dsn_env`/`state.dsn_file` and that the database exists"
            ) from None
        store._open = True
        return store

    def _conninfo(self) -> str:
        params = conninfo_to_dict(self._dsn)
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(1, round(self._timeout))
        if "application_name" not in params:
            extra["application_name"] = "ccwatch"
        return make_conninfo(self._dsn, **extra)

    def _migrate(self) -> None:
        with psycopg.connect(self._conninfo(), autocommit=True, row_factory=pg_row) as raw:
            connection = PgConnection(raw)
            connection.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
            try:
                migrate(connection, self.migrations)
                with transaction(connection):
                    connection.execute(
                        "CREATE TABLE IF NOT EXISTS state_probe"
                        " (id BIGINT PRIMARY KEY, at DOUBLE PRECISION)"
                    )
            finally:
                connection.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))

    @property
    def location(self) -> str:
        return self._location

    def _call(self, fn: Callable[[Connection], T]) -> T:
        if not self._open:
            raise StateStoreError("the state store is closed")
        try:
            with self._pool.connection() as raw:
                connection = PgConnection(raw)
                self._local.connection = connection
                try:
                    return fn(connection)
                finally:
                    self._local.connection = None
        except psycopg.Error as exc:
            raise StateStoreError(
                f"{self.location}: {type(exc).__name__}: {_scrub(str(exc), self._dsn)}"
            ) from exc

    def check(self, connection: Connection) -> str | None:
        """A small write transaction: the database answers and takes writes."""
        try:
            with transaction(connection):
                connection.execute(
                    "INSERT INTO state_probe (id, at) VALUES (1, ?)"
                    " ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    (time.time(),),
                )
        except psycopg.Error as exc:
            return f"a write transaction fails: {_scrub(str(exc), self._dsn)}"
        return None

    def probe(self) -> str | None:
        try:
            return self.run_sync(self.check)
        except StateStoreError as exc:
            return str(exc)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters (pool_size, pool_available, requests_waiting, …)."""
        return dict(self._pool.get_stats())

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._executor.shutdown(wait=True)
        self._pool.close()
