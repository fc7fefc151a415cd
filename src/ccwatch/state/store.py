"""The SQLite state store: one connection on one thread, for every feature's tables.

One connection, one owner: the connection is created on, and only ever used from, a
single worker thread. The event loop hands it work with ``await store.run(fn)`` and the
CLI with ``store.run_sync(fn)``, so a slow disk (fsync on commit) never stalls the loop
and there is no connection sharing to get wrong. WAL mode lets ``ccwatch incidents
list`` read from another process while the daemon writes.

Each feature owns its tables and their migrations (``state.migrations``); ``open`` applies
the ones it is handed. The folder is created 0700 and the database file 0600: incidents
carry host facts and log excerpts that are the site's business only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ccwatch.errors import StateStoreError
from ccwatch.state.migrations import Migrations, migrate

T = TypeVar("T")


class StateStore:
    """Owner of the one SQLite connection; see the module docstring."""

    def __init__(self, path: Path, migrations: Iterable[Migrations] = ()) -> None:
        self.path = path
        self.migrations = list(migrations)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccwatch-store")
        self._connection: sqlite3.Connection | None = None
        self._owner: threading.Thread | None = None
        self._inode: tuple[int, int] | None = None  # (device, inode) of the file we opened

    @classmethod
    def open(cls, path: Path, migrations: Iterable[Migrations] = ()) -> StateStore:
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
        self._owner = threading.current_thread()
        migrate(connection, self.migrations)
        if str(self.path) != ":memory:":
            info = os.stat(self.path)
            self._inode = (info.st_dev, info.st_ino)

    def probe(self) -> str | None:
        """Check the database can take a write; None when healthy, else why not.

        Runs a small write transaction (a full disk, a lock or corruption shows) and
        checks the file at ``path`` is still the one we write: a database deleted or
        replaced under a running daemon would otherwise take every write into an unlinked
        file and lose it at the next start. A deleted file is restored from the open
        connection (``VACUUM INTO``) and the store carries on with it.
        """
        return self.run_sync(self.check)

    def check(self, connection: sqlite3.Connection) -> str | None:
        """``probe`` on the store's thread: ``await store.run(store.check)``."""
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
            return self._restore_deleted(connection)
        except OSError as exc:
            return f"cannot stat {self.path}: {exc.strerror or exc}"
        if (info.st_dev, info.st_ino) != self._inode:
            return (
                f"{self.path} was replaced by another file while ccwatch runs; its writes go "
                "to the old one: restart ccwatch (a restored backup is read at start)"
            )
        return None

    def _restore_deleted(self, connection: sqlite3.Connection) -> str | None:
        """The file was deleted: write the live database back to ``path`` and reopen it."""
        try:
            connection.execute("VACUUM INTO ?", (str(self.path),))
            os.chmod(self.path, 0o600)
            connection.close()
            self._connection = None
            self._connect()
        except (sqlite3.Error, OSError) as exc:
            return (
                f"{self.path} was deleted while ccwatch runs and could not be restored ({exc}); "
                "its incidents live only in this process now: do not restart before fixing"
            )
        return None

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise StateStoreError("the state store is closed")
        return fn(self._connection)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, for synchronous callers (the CLI, tests)."""
        if threading.current_thread() is self._owner:
            return self._call(fn)
        return self._executor.submit(self._call, fn).result()

    def close(self) -> None:
        def _close(_: sqlite3.Connection) -> None:
            assert self._connection is not None
            self._connection.close()
            self._connection = None

        if self._connection is not None:
            self.run_sync(_close)
        self._executor.shutdown(wait=True)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue instead of failing
    half-way with SQLITE_BUSY.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            # SQLite may have rolled back already (disk full, I/O error): nothing to undo.
            # A COMMIT that failed leaves the transaction open: end it, or every later
            # BEGIN would fail too.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise
