"""The neutral state package: the state database's connections, transactions and migrations.

It knows no feature's tables. Each feature owns its tables and their migrations (a
``Migrations`` value next to the module that holds the table's SQL) and the composition
root hands the list to ``SqliteStore.open`` or ``state.postgres.PostgresStore.open``
(imported only for that backend). Features write their SQL once against ``Connection``
(``state.connection``). See docs/architecture.md, "State".
"""

from ccwatch.state.connection import (
    POSTGRESQL,
    SQLITE,
    Connection,
    Cursor,
    Dialect,
    PerDialect,
    Row,
    dialect_of,
    transaction,
)
from ccwatch.state.migrations import Migrations, migrate, schema_versions
from ccwatch.state.store import STORE_ERRORS, SqliteStore, StateStore

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "STORE_ERRORS",
    "Connection",
    "Cursor",
    "Dialect",
    "Migrations",
    "PerDialect",
    "Row",
    "SqliteStore",
    "StateStore",
    "dialect_of",
    "migrate",
    "schema_versions",
    "transaction",
]
