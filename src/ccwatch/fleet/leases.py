"""Site and job leases in the state database (PostgreSQL): this module owns
``site_leases``, ``job_leases`` and ``fleet_workers`` and all their SQL.

A worker processes a site only while it holds the site's lease: a row of
``site_leases`` with ``holder`` (the worker id), ``epoch`` (the fencing token: every
acquisition adds one) and ``expires_at``. Every statement reads the database's clock
(``now()``), never a worker's, so the workers' clocks do not matter:

- ``acquire``: one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` the row is free or expired
  ``RETURNING epoch``: of two workers trying at once, one gets the site;
- ``renew``: one ``UPDATE … RETURNING`` extends the unexpired leases of the sites the
  worker runs and says which (the worker compares epochs; one missing is lost);
- ``release``: frees the row, only at the epoch the worker holds;
- ``check`` (the fence): run first inside a write's transaction, ``SELECT … FOR SHARE``
  of the row at the worker's epoch and unexpired. The share lock makes a takeover wait
  until the write commits, so the new holder, which loads the site's incidents after
  its takeover, sees it. It also sets ``idle_in_transaction_session_timeout`` for that
  transaction, so a worker frozen inside a write (SIGSTOP) cannot hold the row for
  longer than that; PostgreSQL ends its session and the takeover goes on.

``Lease`` is a held lease in the worker: ``deadline`` is the monotonic time of the last
renew's start plus the TTL minus a safety margin, so it passes before the row can expire
in the database; ``guard()`` raises ``LeaseLostError`` once it has passed (the worker
stops the site and sends nothing more), ``fence(conn)`` is ``guard()`` plus ``check``.

``fleet_workers`` has one row per live worker (a heartbeat each round, expiring like a
lease): the balancing counts them.

``job_leases`` holds the fleet's *job leases* with the same columns and the same
statements (``table=JOBS``): ``fleet`` (the fleet's scheduled jobs, retention, the
pruning of the loss history and the incidents they raise) and ``host:<host>`` (that
host's checklists). Each is held by one worker at a time, like a site, but outside the
balancing: a worker takes one whenever it is free or expired. See docs/architecture.md,
"Several sites and workers".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ccwatch.errors import LeaseLostError
from ccwatch.state import POSTGRESQL, Connection, Migrations, dialect_of, transaction

MIGRATIONS = Migrations(
    "fleet",
    {
        1: """
    CREATE TABLE site_leases (
        site         TEXT PRIMARY KEY,
        holder       TEXT,                       -- worker id; NULL: free
        epoch        INTEGER NOT NULL DEFAULT 0, -- fencing token, +1 per acquisition
        expires_at   REAL NOT NULL DEFAULT 0,    -- database clock, epoch seconds
        renewed_at   REAL,
        acquired_at  REAL
    );
    CREATE TABLE fleet_workers (
        worker       TEXT PRIMARY KEY,
        url          TEXT NOT NULL DEFAULT '',
        started_at   REAL NOT NULL,
        seen_at      REAL NOT NULL,
        expires_at   REAL NOT NULL
    );
    """,
        # The job leases (`fleet`, `host:<host>`): one holder each, fenced like a site.
        2: """
    CREATE TABLE job_leases (
        job          TEXT PRIMARY KEY,
        holder       TEXT,
        epoch        INTEGER NOT NULL DEFAULT 0,
        expires_at   REAL NOT NULL DEFAULT 0,
        renewed_at   REAL,
        acquired_at  REAL
    );
    """,
    },
)


@dataclass(frozen=True)
class LeaseTable:
    """A table of leases: ``site_leases`` (key ``site``) or ``job_leases`` (key ``job``);
    the same columns, the same statements."""

    name: str
    key: str


SITES = LeaseTable("site_leases", "site")
JOBS = LeaseTable("job_leases", "job")
FLEET_JOB = "fleet"  # the job lease of the fleet's own jobs
HOST_JOB_PREFIX = "host:"  # + the host name: the job lease of a host's checklists

NOW = "EXTRACT(EPOCH FROM now())::float8"
# A worker row is forgotten this long after it stopped renewing (the fleet view shows
# recently dead workers meanwhile).
FORGET_WORKERS_AFTER = 3600.0


def _postgresql(conn: Connection) -> None:
    if dialect_of(conn) is not POSTGRESQL:
        raise ValueError("site leases need the PostgreSQL state backend (state.backend)")


# --- sites and workers ------------------------------------------------------------------


def ensure_sites(conn: Connection, sites: Iterable[str]) -> None:
    """A row (free) for each site not in the table yet, so every worker sees it."""
    _postgresql(conn)
    rows = [(site,) for site in sites]
    if rows:
        conn.executemany(
            "INSERT INTO site_leases (site) VALUES (?) ON CONFLICT (site) DO NOTHING", rows
        )


def heartbeat(conn: Connection, worker: str, url: str, ttl: float) -> None:
    """This worker is alive until now + ``ttl`` (database clock)."""
    conn.execute(
        "INSERT INTO fleet_workers (worker, url, started_at, seen_at, expires_at)"
        f" VALUES (?, ?, {NOW}, {NOW}, {NOW} + ?)"
        " ON CONFLICT (worker) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at,"
        " expires_at = excluded.expires_at",
        (worker, url, ttl),
    )


def forget_worker(conn: Connection, worker: str) -> None:
    conn.execute("DELETE FROM fleet_workers WHERE worker = ?", (worker,))


@dataclass(frozen=True)
class LeaseRow:
    site: str
    holder: str | None
    epoch: int
    expires_at: float
    renewed_at: float | None
    acquired_at: float | None

    def held_at(self, now: float) -> bool:
        return self.holder is not None and self.expires_at > now


@dataclass(frozen=True)
class WorkerRow:
    worker: str
    url: str
    started_at: float
    seen_at: float
    expires_at: float

    def live_at(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True)
class Snapshot:
    """The lease tables, the workers and the database's clock, read in one go (the rows
    of ``jobs`` name their job lease in ``site``)."""

    now: float
    leases: list[LeaseRow]
    workers: list[WorkerRow]
    jobs: list[LeaseRow] = field(default_factory=list)

    def live_workers(self) -> list[WorkerRow]:
        return [w for w in self.workers if w.live_at(self.now)]


def _lease_rows(conn: Connection, table: LeaseTable) -> list[LeaseRow]:
    return [
        LeaseRow(
            str(row[0]),
            row[1],
            int(row[2]),
            float(row[3]),
            None if row[4] is None else float(row[4]),
            None if row[5] is None else float(row[5]),
        )
        for row in conn.execute(
            f"SELECT {table.key}, holder, epoch, expires_at, renewed_at, acquired_at"
            f" FROM {table.name} ORDER BY {table.key}"
        ).fetchall()
    ]


def snapshot(conn: Connection) -> Snapshot:
    _postgresql(conn)
    now = float(conn.execute(f"SELECT {NOW}").fetchone()[0])
    leases = _lease_rows(conn, SITES)
    workers = [
        WorkerRow(str(row[0]), str(row[1]), float(row[2]), float(row[3]), float(row[4]))
        for row in conn.execute(
            "SELECT worker, url, started_at, seen_at, expires_at FROM fleet_workers"
            " WHERE expires_at > ? ORDER BY worker",
            (now - FORGET_WORKERS_AFTER,),
        ).fetchall()
    ]
    return Snapshot(now, leases, workers, _lease_rows(conn, JOBS))


# --- leases -----------------------------------------------------------------------------


def acquire(
    conn: Connection, site: str, worker: str, ttl: float, table: LeaseTable = SITES
) -> int | None:
    """Take ``site`` (or a job lease, ``table=JOBS``) if it is free or its lease expired;
    returns the new epoch, or None when another worker (or this one, unexpired) holds it."""
    _postgresql(conn)
    t, key = table.name, table.key
    row = conn.execute(
        f"INSERT INTO {t} ({key}, holder, epoch, expires_at, renewed_at, acquired_at)"
        f" VALUES (?, ?, 1, {NOW} + ?, {NOW}, {NOW})"
        f" ON CONFLICT ({key}) DO UPDATE SET holder = excluded.holder,"
        f" epoch = {t}.epoch + 1, expires_at = excluded.expires_at,"
        " renewed_at = excluded.renewed_at, acquired_at = excluded.acquired_at"
        f" WHERE {t}.holder IS NULL OR {t}.expires_at <= {NOW}"
        " RETURNING epoch",
        (site, worker, ttl),
    ).fetchone()
    return None if row is None else int(row[0])


def renew(
    conn: Connection, worker: str, ttl: float, sites: Iterable[str], table: LeaseTable = SITES
) -> dict[str, int]:
    """Extend the unexpired leases of ``worker`` on ``sites`` to now + ``ttl``; returns
    site → epoch of the leases renewed (one the worker thinks it holds and that is
    missing, or has another epoch, is lost). Only the sites the worker runs: a lease it
    stopped using is left to run out."""
    _postgresql(conn)
    names = list(sites)
    if not names:
        return {}
    rows = conn.execute(
        f"UPDATE {table.name} SET expires_at = {NOW} + ?, renewed_at = {NOW}"
        f" WHERE holder = ? AND expires_at > {NOW} AND {table.key} = ANY(?)"
        f" RETURNING {table.key}, epoch",
        (ttl, worker, names),
    ).fetchall()
    return {str(site): int(epoch) for site, epoch in rows}


def release(
    conn: Connection, site: str, worker: str, epoch: int, table: LeaseTable = SITES
) -> bool:
    """Give ``site`` back (only at the epoch held): another worker may take it at once."""
    _postgresql(conn)
    return (
        conn.execute(
            f"UPDATE {table.name} SET holder = NULL, expires_at = 0"
            f" WHERE {table.key} = ? AND holder = ? AND epoch = ?",
            (site, worker, epoch),
        ).rowcount
        > 0
    )


def check(
    conn: Connection,
    site: str,
    worker: str,
    epoch: int,
    idle_timeout: float,
    table: LeaseTable = SITES,
) -> None:
    """The fence, inside the caller's transaction: raises ``LeaseLostError`` unless
    ``worker`` holds ``site`` at ``epoch`` and the lease has not expired; keeps the row
    share-locked until the transaction ends (see the module docstring)."""
    t, key = table.name, table.key
    row = conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', ?, true)"
        f" FROM {t} WHERE {key} = ? AND holder = ? AND epoch = ? AND expires_at > {NOW}"
        " FOR SHARE",
        (str(max(1, round(idle_timeout * 1000))), site, worker, epoch),
    ).fetchone()
    if row is not None:
        return
    now_row = conn.execute(
        f"SELECT holder, epoch, expires_at, {NOW} FROM {t} WHERE {key} = ?", (site,)
    ).fetchone()
    if now_row is None:
        why = "no lease row"
    elif now_row[0] is not None and (now_row[0] != worker or int(now_row[1]) != epoch):
        why = f"taken by {now_row[0]} at epoch {now_row[1]}"
    elif now_row[0] is None:
        why = "released"
    else:
        why = f"expired {float(now_row[3]) - float(now_row[2]):.1f}s ago, not renewed in time"
    raise LeaseLostError(site, epoch, why)


# --- a held lease -----------------------------------------------------------------------


@dataclass
class Lease:
    """A lease this worker holds; see the module docstring."""

    site: str
    worker: str
    epoch: int
    deadline: float  # time.monotonic() after which the site stops here
    idle_timeout: float = 5.0  # seconds a fenced transaction may sit idle in PostgreSQL
    lost: LeaseLostError | None = None
    table: LeaseTable = SITES  # JOBS: a job lease (``site`` is its name)
    monotonic: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def extend(self, deadline: float) -> None:
        with self._lock:
            if self.lost is None and deadline > self.deadline:
                self.deadline = deadline

    def lose(self, why: str) -> LeaseLostError:
        with self._lock:
            if self.lost is None:
                self.lost = LeaseLostError(self.site, self.epoch, why)
            return self.lost

    def remaining(self) -> float:
        return self.deadline - self.monotonic()

    def guard(self) -> None:
        """Raises ``LeaseLostError`` once the lease is lost or its local deadline passed."""
        lost = self.lost
        if lost is not None:
            raise lost
        if self.monotonic() >= self.deadline:
            raise self.lose("not renewed in time (local deadline passed)")

    def fence(self, conn: Connection) -> None:
        """``guard()``, then ``check`` in the caller's transaction (a ``repository.Fence``)."""
        self.guard()
        try:
            check(conn, self.site, self.worker, self.epoch, self.idle_timeout, self.table)
        except LeaseLostError as exc:
            raise self.lose(exc.why) from None


def acquire_lease(
    conn: Connection,
    site: str,
    worker: str,
    ttl: float,
    margin: float,
    monotonic: Callable[[], float] = time.monotonic,
    table: LeaseTable = SITES,
) -> Lease | None:
    """``acquire`` as a ``Lease`` whose deadline counts from before the statement."""
    started = monotonic()
    with transaction(conn):
        epoch = acquire(conn, site, worker, ttl, table)
    if epoch is None:
        return None
    return Lease(
        site,
        worker,
        epoch,
        started + ttl - margin,
        idle_timeout=max(1.0, margin),
        monotonic=monotonic,
        table=table,
    )
