"""Numbered schema migrations, one series per owning feature.

Each feature declares ``Migrations(owner, {1: sql, 2: sql, ...})`` beside the module that
holds its tables' SQL; ``migrate`` applies, in one transaction per step, every step newer
than the version recorded for that owner in ``schema_migrations``. Append steps; never
edit one that has shipped. Steps are written in SQLite's DDL; on PostgreSQL
``Dialect.ddl`` derives the text (``REAL`` → ``DOUBLE PRECISION``, rowid keys → identity
columns, …), and a step that needs different words per backend is a ``PerDialect``.
The same versions mean the same tables on both.

Databases written before migrations were split by owner recorded one global version in
``PRAGMA user_version`` (1: incidents, timeline, outbox; 2: + scheduler and checklist
history). On SQLite ``migrate`` adopts them once, then sets ``user_version`` to
``PER_OWNER`` so a newer ccwatch's layout is recognised and an older ccwatch refuses it.
PostgreSQL databases have only ever had the per-owner layout; there the caller holds an
advisory lock around ``migrate`` (``state.postgres``), so two workers starting together
do not race.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ccwatch.errors import StateStoreError
from ccwatch.state.connection import SQLITE, Connection, PerDialect, dialect_of, transaction

# user_version once versions are kept per owner (below it: the old global numbering).
PER_OWNER = 1000
# What the old global versions contained, as (owner, version) pairs.
_LEGACY: dict[int, tuple[tuple[str, int], ...]] = {
    1: (("incidents", 1),),
    2: (("incidents", 1), ("scheduler", 1), ("checklists", 1)),
}


@dataclass(frozen=True)
class Migrations:
    """The schema steps of one owner (a feature), by version number from 1."""

    owner: str
    steps: Mapping[int, str | PerDialect]

    @property
    def latest(self) -> int:
        return max(self.steps, default=0)


def transaction_script(connection: Connection, script: str) -> None:
    for statement in _statements(script):
        connection.execute(statement)


def schema_versions(connection: Connection) -> dict[str, int]:
    """The applied version of each owner (empty for a new database)."""
    if not dialect_of(connection).table_exists(connection, "schema_migrations"):
        return {}
    rows = connection.execute("SELECT owner, version FROM schema_migrations").fetchall()
    return {str(owner): int(version) for owner, version in rows}


def migrate(connection: Connection, migrations: Iterable[Migrations]) -> dict[str, int]:
    """Apply what is missing of ``migrations``; returns the versions now applied."""
    dialect = dialect_of(connection)
    series = list(migrations)
    owners = [m.owner for m in series]
    if len(set(owners)) != len(owners):
        raise ValueError(f"two migration series share an owner: {sorted(owners)}")
    global_version = 0
    if dialect is SQLITE:
        global_version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if global_version > PER_OWNER:
            raise StateStoreError(
                f"state database layout {global_version} is newer than this ccwatch knows "
                f"({PER_OWNER}); run a newer ccwatch or restore a backup"
            )
    with transaction(connection):
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        if 0 < global_version < PER_OWNER:
            legacy = _LEGACY.get(global_version, _LEGACY[max(_LEGACY)])
            connection.executemany(
                "INSERT INTO schema_migrations (owner, version) VALUES (?, ?)"
                " ON CONFLICT (owner) DO NOTHING",
                legacy,
            )
        if dialect is SQLITE:
            connection.execute(f"PRAGMA user_version = {PER_OWNER}")
    applied = schema_versions(connection)
    for migration in series:
        current = applied.get(migration.owner, 0)
        if current > migration.latest:
            raise StateStoreError(
                f"state database schema of {migration.owner} is version {current}, newer than "
                f"this ccwatch knows ({migration.latest}); run a newer ccwatch or restore a backup"
            )
        for version in sorted(v for v in migration.steps if v > current):
            with transaction(connection):
                transaction_script(connection, dialect.ddl(migration.steps[version]))
                connection.execute(
                    "INSERT INTO schema_migrations (owner, version) VALUES (?, ?)"
                    " ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                    (migration.owner, version),
                )
            applied[migration.owner] = version
    return applied


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
