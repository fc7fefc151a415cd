"""Building blocks every config model uses: strict frozen models, secret references and
time zones (cron schedules are in ``ccwatch.cron``).

Secrets are never written inline. A model names where a secret lives with a pair of
fields ``<name>_env`` (an environment variable) and ``<name>_file`` (a file whose first
line is the secret). Both are checked at load time, so a missing secret is a config
error with its key path, not a failure at 3 a.m. on the first ticket.

``TimeZone`` is the one time-zone type (an IANA name, validated, held as a ``ZoneInfo``):
every model with a zone uses it, so a bad one is refused with the same words wherever
it is written.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors (with a "did you mean" hint from config.py).

    A model's own validator is built on its first use (``defer_build``): a section or
    upstream type is validated inside the root ``Config`` when the config loads, so its
    own validator is only built if something validates against it alone."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


def _is_enabled(info: ValidationInfo) -> bool:
    # A disabled example (``enabled: false``) may name a secret that is not set here.
    return bool(info.data.get("enabled", True))


def _env_var_is_set(name: str | None, info: ValidationInfo) -> str | None:
    if name is None or not _is_enabled(info):
        return name
    if not name.replace("_", "").isalnum():
        raise ValueError(f"{name!r} is not an environment variable name")
    if not os.environ.get(name):
        raise ValueError(f"environment variable {name} is not set (or is empty)")
    return name


def _secret_file_is_readable(path: Path | None, info: ValidationInfo) -> Path | None:
    if path is None or not _is_enabled(info):
        return path
    try:
        first_line = path.read_text(encoding="utf-8").splitlines()[:1]
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
    if not first_line or not first_line[0].strip():
        raise ValueError(f"secret file {str(path)!r} is empty")
    return path


SecretEnv = Annotated[str | None, AfterValidator(_env_var_is_set)]
"""Name of an environment variable holding a secret; must be set when the item is enabled."""

SecretFile = Annotated[Path | None, AfterValidator(_secret_file_is_readable)]
"""Path of a file whose first line is a secret; must be readable when the item is enabled."""


def repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted (for "must be unique" errors)."""
    seen: Counter[str] = Counter(names)
    return sorted(name for name, count in seen.items() if count > 1)


def read_secret(env: str | None, file: Path | None) -> str | None:
    """The secret named by an ``*_env`` / ``*_file`` pair (env wins), or None if neither is set."""
    if env and os.environ.get(env):
        return os.environ[env]
    if file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else None
    return None


# --- time zones and cron schedules -----------------------------------------------------

UTC_ZONE = ZoneInfo("UTC")


def time_zone(value: object) -> ZoneInfo:
    """An IANA time zone by name; ValueError says what a valid name looks like."""
    if isinstance(value, ZoneInfo):
        return value
    try:
        if not isinstance(value, str):
            raise TypeError(value)
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as 'Asia/Kolkata' or 'UTC'"
        ) from None


TimeZone = Annotated[
    ZoneInfo,
    PlainValidator(time_zone),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "IANA time zone, e.g. Asia/Kolkata"}),
]
"""An IANA time zone: written as its name (``Asia/Kolkata``), held as a ``ZoneInfo``."""
