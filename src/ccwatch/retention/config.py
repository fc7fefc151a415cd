"""Config of the retention job (``retention:`` in config.yaml)."""

from __future__ import annotations

from pydantic import Field

from ccwatch.configbase import SecretEnv, StrictModel


class RetentionTable(StrictModel):
    table: str
    column: str


class RetentionDatabase(StrictModel):
    enabled: bool = True
    name: str
    dsn: str | None = None
    dsn_env: SecretEnv = None
    keep_days: int = Field(ge=1)
    grace_days: int = Field(1, ge=0)
    tables: list[RetentionTable] = Field(default_factory=list)


class RetentionConfig(StrictModel):
    databases: list[RetentionDatabase] = Field(default_factory=list)
