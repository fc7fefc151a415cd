"""The state store: the one place features get a state-database connection from.

``StateStore`` is what features hold: ``await store.run(fn)`` runs ``fn(connection)`` on
a store thread (the event loop never waits on a disk or a socket), ``store.run_sync(fn)``
does the same for the CLI and tests. Two backends implement it:

- ``SqliteStore`` (the embedded default, ``state.backend: sqlite``): one connection,
  created on and only ever used from a single worker thread, so a slow disk (fsync on
  commit) never stalls the loop and there is no connection sharing to get wrong. WAL mode
  lets ``ccwatch incidents list`` read from another process while the daemon writes. The
  folder is created 0700 and the database file 0600: incidents carry host facts and log
  excerpts that are the site's business only. Its health check also notices a database
  file deleted (restored from the live connection) or replaced under the daemon.
- ``PostgresStore`` (``state.postgres``, ``state.backend: postgresql``): a psycopg 3
  connection pool, one store thread per pooled connection.

Each feature owns its tables and their migrations (``state.migrations``); ``open``
applies the ones it is handed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ccwatch.errors import StateStoreError
from ccwatch.state.connection import SQLITE, Connection, Dialect, transaction
from ccwatch.state.migrations import Migrations, migrate

T = TypeVar("T")

STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError, StateStoreError)
"""What a store call raises when the database fails (disk full, locked, unreachable):
SQLite's errors as they are, PostgreSQL's as ``StateStoreError``."""


class StateStore(ABC):
    """A state database and the threads its connections live on; see the module docstring."""

    dialect: Dialect

    def __init__(self, migrations: Iterable[Migrations], threads: int) -> None:
        self.migrations = list(migrations)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ccwatch-store")
        self._local = threading.local()  # .connection while a store thread runs a function

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the database is, for messages (a path, or ``postgresql://host:port/db``:
        never a password)."""

    @abstractmethod
    def _call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with a connection, on the current (store) thread."""

    @abstractmethod
    def check(self, connection: Connection) -> str | None:
        """``probe`` on a store thread: ``await store.run(store.check)``."""

    def probe(self) -> str | None:
        """Check the database can take a write; None when healthy, else why not."""
        return self.run_sync(self.check)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on a store thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """The same, for synchronous callers (the CLI, tests)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:  # already on a store thread, inside a function
            return fn(connection)
        return self._executor.submit(self._call, fn).result()

    @abstractmethod
    def close(self) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"


class SqliteStore(StateStore):
    """Owner of the one SQLite connection; see the module docstring."""

    dialect = SQLITE

    def __init__(self, path: Path, migrations: Iterable[Migrations] = ()) -> None:
        super().__init__(migrations, threads=1)
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None  # (device, inode) of the file we opened

    @classmethod
    def open(cls, path: Path, migrations: Iterable[Migrations] = ()) -> SqliteStore:
        """Open (creating folders and file) and apply ``migrations``; raises StateStoreError."""
        store = cls(path, migrations)
        try:
            store._executor.submit(store._connect).result()
        except (OSError, sqlite3.Error) as exc:
            store._executor.shutdown(wait=False)
            raise StateStoreError(
                f"cannot open state database {path}: {exc}; check `state.path` and that "
                "its folder is writable by the ccwatch user"
            ) from exc
        return store

    @property
    def location(self) -> str:
        return str(self.path)

    def _connect(self) -> None:
        if str(self.path) != ":memory:":
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against a process crash (what SIGKILL tests);
        # only an OS crash can lose the last commits.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        self._connection = connection
        self._local.connection = connection
        migrate(connection, self.migrations)
        if str(self.path) != ":memory:":
            info = os.stat(self.path)
            self._inode = (info.st_dev, info.st_ino)

    def check(self, connection: Connection) -> str | None:
        """A small write transaction (a full disk, a lock or corruption shows), and the file
        at ``path`` is still the one we write: a database deleted or replaced under a
        running daemon would otherwise take every write into an unlinked file and lose it
        at the next start. A deleted file is restored from the open connection (``VACUUM
        INTO``) and the store carries on with it. SQLite only, like the inode check."""
        try:
            with transaction(connection):
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS state_probe (id INTEGER PRIMARY KEY, at REAL)"
                )
                connection.execute(
                    "INSERT OR REPLACE INTO state_probe (id, at) VALUES (1, julianday('now'))"
                )
        except sqlite3.Error as exc:
            return f"a write transaction fails: {exc}"
        if self._inode is None:
            return None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return self._restore_deleted()
        except OSError as exc:
            return f"cannot stat {self.path}: {exc.strerror or exc}"
        if (info.st_dev, info.st_ino) != self._inode:
            return (
                f"{self.path} was replaced by another file while ccwatch runs; its writes go "
                "to the old one: restart ccwatch (a restored backup is read at start)"
            )
        return None

    def _restore_deleted(self) -> str | None:
        """The file was deleted: write the live database back to ``path`` and reopen it."""
        assert self._connection is not None
        try:
            self._connection.execute("VACUUM INTO ?", (str(self.path),))
            os.chmod(self.path, 0o600)
            self._connection.close()
            self._connection = None
            self._connect()
        except (sqlite3.Error, OSError) as exc:
            return (
                f"{self.path} was deleted while ccwatch runs and could not be restored ({exc}); "
                "its incidents live only in this process now: do not restart before fixing"
            )
        return None

    def _call(self, fn: Callable[[Connection], T]) -> T:
        if self._connection is None:
            raise StateStoreError("the state store is closed")
        return fn(self._connection)

    def close(self) -> None:
        def _close(_: Any) -> None:
            assert self._connection is not None
            self._connection.close()
            self._connection = None
            self._local.connection = None

        if self._connection is not None:
            self._executor.submit(_close, None).result()
        self._executor.shutdown(wait=True)
