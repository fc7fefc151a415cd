"""Connecting to PostgreSQL for the ``postgres`` and ``retention`` checks.

A DSN in a checklist file carries no password: the password comes from
``password_env``/``password_file`` (or the retention database's ``dsn_env``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ccwatch.configbase import read_secret

if TYPE_CHECKING:
    import psycopg

_INLINE_PASSWORD = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


def reject_inline_password(dsn: str | None) -> str | None:
    if dsn is not None and _INLINE_PASSWORD.search(dsn):
        raise ValueError(
            "the DSN carries a password; secrets are never written inline: "
            "use password_env or password_file"
        )
    return dsn


def redact_dsn(dsn: str) -> str:
    """host=… dbname=… as written, any password replaced (for values and logs)."""
    dsn = re.sub(r"(password\s*=\s*)\S+", r"\1****", dsn, flags=re.IGNORECASE)
    return re.sub(r"(://[^/@\s:]*:)[^/@\s]*@", r"\1****@", dsn)


async def connect(
    dsn: str, password_env: str | None, password_file: Path | None, timeout: float
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    import psycopg  # deferred: `ccwatch check-config` need not load libpq

    password = read_secret(password_env, password_file)
    kwargs: dict[str, str | int] = {
        "connect_timeout": max(1, round(timeout)),
        "application_name": "ccwatch-checklist",
    }
    if password:
        kwargs["password"] = password
    return await psycopg.AsyncConnection.connect(
        psycopg.conninfo.make_conninfo(dsn, **kwargs), autocommit=True
    )
