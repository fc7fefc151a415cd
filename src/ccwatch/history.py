"""The per-minute loss history of each component (this module owns the ``loss_history`` table).

One row per component per minute: the highest loss and severity the recorder saw in that
minute. ``LossRecorder`` fills it from the pipeline's current values, which it reads once
a second (a handful of components: a few dict reads, nothing on the per-message path), and
writes one small transaction a minute. Rows older than ``KEEP_SECONDS`` (8 days) are
pruned by the recorder once an hour. The operator pages draw their charts from it.

Each row names its ``site``: ``''`` for the one site of a single-site ccwatch (what rows
written before the column existed became), the site's name for a site of a fleet
(``sites:``; ``ccwatch.sites`` runs one recorder per held site, with ``prune=False``).
A fleet prunes once, on the worker holding its ``fleet`` job lease (``prune_every``);
``DELETE … WHERE minute < cutoff`` is idempotent, so two prunes at once would only
repeat work, never remove a row the other keeps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ccwatch.severity import Severity
from ccwatch.state import STORE_ERRORS, Connection, Migrations, StateStore, transaction

logger = logging.getLogger(__name__)

KEEP_SECONDS = 8 * 86400
SAMPLE_SECONDS = 1.0
PRUNE_SECONDS = 3600.0

MIGRATIONS = Migrations(
    "history",
    {
        1: """
    CREATE TABLE loss_history (
        component  TEXT NOT NULL,
        minute     INTEGER NOT NULL,  -- epoch seconds of the minute's start (UTC)
        loss       REAL NOT NULL,     -- the highest loss seen in that minute (0..1)
        severity   INTEGER NOT NULL,  -- the highest severity seen in that minute
        PRIMARY KEY (component, minute)
    ) WITHOUT ROWID;
    CREATE INDEX loss_history_by_minute ON loss_history (minute);
    """,
        # Several sites in one database (`sites:`): the site is part of the key. The rows
        # already there are the single site's ('').
        2: """
    CREATE TABLE loss_history_by_site (
        site       TEXT NOT NULL DEFAULT '',
        component  TEXT NOT NULL,
        minute     INTEGER NOT NULL,
        loss       REAL NOT NULL,
        severity   INTEGER NOT NULL,
        PRIMARY KEY (site, component, minute)
    ) WITHOUT ROWID;
    INSERT INTO loss_history_by_site (site, component, minute, loss, severity)
        SELECT '', component, minute, loss, severity FROM loss_history;
    DROP TABLE loss_history;
    ALTER TABLE loss_history_by_site RENAME TO loss_history;
    CREATE INDEX loss_history_by_minute ON loss_history (minute);
    """,
    },
)


@dataclass(frozen=True, slots=True)
class Reading:
    """A component's current classified values, as the pipeline last computed them."""

    loss: float
    severity: Severity
    sampled_at: float  # the `ts` of the sample behind them (epoch seconds)


@dataclass(frozen=True, slots=True)
class Point:
    minute: int
    loss: float
    severity: Severity


def minute_of(timestamp: float) -> int:
    return int(timestamp // 60) * 60


# --- SQL ------------------------------------------------------------------------------


def record(
    conn: Connection, minute: int, values: Mapping[str, tuple[float, int]], site: str = ""
) -> None:
    """Store one minute's maxima (a minute written twice keeps the higher values)."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO loss_history (site, component, minute, loss, severity)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (site, component, minute) DO UPDATE SET"
            " loss = CASE WHEN excluded.loss > loss_history.loss"
            " THEN excluded.loss ELSE loss_history.loss END,"
            " severity = CASE WHEN excluded.severity > loss_history.severity"
            " THEN excluded.severity ELSE loss_history.severity END",
            [(site, name, minute, loss, severity) for name, (loss, severity) in values.items()],
        )


def prune(conn: Connection, before: float) -> int:
    with transaction(conn):
        return conn.execute("DELETE FROM loss_history WHERE minute < ?", (before,)).rowcount


def series(
    conn: Connection,
    since: float,
    until: float,
    component: str | None = None,
    site: str | None = None,
) -> dict[str, list[Point]]:
    """The points of ``[since, until)`` by component, oldest first; of every row's site
    (``None``: a single-site database) or of one site of a fleet."""
    query = (
        "SELECT component, minute, loss, severity FROM loss_history"
        " WHERE minute >= ? AND minute < ?"
    )
    params: list[object] = [since, until]
    if site is not None:
        query += " AND site = ?"
        params.append(site)
    if component is not None:
        query += " AND component = ?"
        params.append(component)
    found: dict[str, list[Point]] = {}
    for name, minute, loss, severity in conn.execute(query + " ORDER BY component, minute", params):
        found.setdefault(name, []).append(Point(minute, loss, Severity(severity)))
    return found


# --- the recorder ------------------------------------------------------------------------


class LossRecorder:
    """Samples ``readings()`` every ``sample_seconds`` and writes each minute's maxima.

    ``latest`` keeps the last readings for the pages (current loss, sample age). ``site``
    names the rows' site (``''``: the one site of a single-site ccwatch); ``prune=False``
    leaves pruning to ``prune_every`` (a fleet prunes once, not per site).
    """

    def __init__(
        self,
        store: StateStore,
        readings: Callable[[], Mapping[str, Reading]],
        *,
        keep_seconds: float = KEEP_SECONDS,
        sample_seconds: float = SAMPLE_SECONDS,
        clock: Callable[[], float] = time.time,
        site: str = "",
        prune: bool = True,
    ) -> None:
        self.store = store
        self.readings = readings
        self.keep_seconds = keep_seconds
        self.sample_seconds = sample_seconds
        self.clock = clock
        self.site = site
        self.prune = prune
        self.latest: dict[str, Reading] = {}
        self._minute: int | None = None
        self._maxima: dict[str, tuple[float, int]] = {}
        self._pruned_at = -PRUNE_SECONDS

    def sample(self, now: float) -> tuple[int, dict[str, tuple[float, int]]] | None:
        """Take one sample; returns a finished minute to write, if one just ended."""
        current = dict(self.readings())
        self.latest = current
        minute = minute_of(now)
        finished: tuple[int, dict[str, tuple[float, int]]] | None = None
        if self._minute is not None and minute != self._minute and self._maxima:
            finished = (self._minute, self._maxima)
            self._maxima = {}
        self._minute = minute
        for name, reading in current.items():
            before = self._maxima.get(name)
            value = (reading.loss, int(reading.severity))
            if before is None:
                self._maxima[name] = value
            else:
                self._maxima[name] = (max(before[0], value[0]), max(before[1], value[1]))
        return finished

    async def flush(self, minute: int, values: Mapping[str, tuple[float, int]]) -> None:
        try:
            await self.store.run(lambda conn: record(conn, minute, values, self.site))
            now = self.clock()
            if self.prune and now - self._pruned_at >= PRUNE_SECONDS:
                self._pruned_at = now
                cutoff = now - self.keep_seconds
                removed = await self.store.run(lambda conn: prune(conn, cutoff))
                if removed:
                    logger.debug("loss history: pruned %d rows older than %.0f", removed, cutoff)
        except STORE_ERRORS as exc:
            # The pages miss a minute; the state-store health check reports the cause.
            logger.warning("loss history: could not write minute %d: %s", minute, exc)

    async def run(self) -> None:
        while True:
            finished = self.sample(self.clock())
            if finished is not None:
                await self.flush(*finished)
            await asyncio.sleep(self.sample_seconds)


async def prune_every(
    store: StateStore,
    *,
    every: float = PRUNE_SECONDS,
    keep_seconds: float = KEEP_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    """Prune every site's rows older than ``keep_seconds``, every ``every`` seconds, until
    cancelled (a fleet's recorders do not prune: see the module docstring)."""
    while True:
        cutoff = clock() - keep_seconds
        try:
            removed = await store.run(functools.partial(prune, before=cutoff))
            if removed:
                logger.debug("loss history: pruned %d rows older than %.0f", removed, cutoff)
        except STORE_ERRORS as exc:
            logger.warning("loss history: could not prune: %s; trying again later", exc)
        await asyncio.sleep(every)
