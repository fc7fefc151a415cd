"""The neutral state package: the SQLite connection, transactions and migrations.

It knows no feature's tables. Each feature owns its tables and their migrations (a
``Migrations`` value next to the module that holds the table's SQL) and the composition
root hands the list to ``StateStore.open``. See docs/architecture.md, "State".
"""

from ccwatch.state.migrations import Migrations, migrate, schema_versions
from ccwatch.state.store import StateStore, transaction

__all__ = ["Migrations", "StateStore", "migrate", "schema_versions", "transaction"]
