"""``heartbeat:`` — the dead-man's switch (README, "Dead-man's switch").

Targets: a ping URL in the style of healthchecks.io (``url_env`` / ``url_file``) and/or
an always-firing ``Watchdog`` alert to an ``alertmanager`` upstream of ``tickets:``
(named here, checked by the root config). ``enabled`` defaults to true when a target
is given. A ping URL embeds its check's secret id, so it is a secret: it is never
written inline (a literal ``url:`` is refused) and never logged whole.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, StrictModel, read_secret
from ccwatch.durations import Duration

_INLINE_URL = (
    "a ping URL carries its check's secret id and is never written inline: put it in an "
    "environment variable (url_env) or in a file whose first line is the URL (url_file)"
)


class HeartbeatConfig(StrictModel):
    enabled: bool = Field(
        False, description="default: true when url_env, url_file or alertmanager is set"
    )
    interval: Duration = Field(timedelta(minutes=1), description="ping this often")
    url: str | None = Field(None, description=f"refused: {_INLINE_URL}")
    url_env: SecretEnv = Field(None, description="environment variable holding the ping URL")
    url_file: SecretFile = Field(None, description="file whose first line is the ping URL")
    signal_failure: bool = Field(
        True, description="while unhealthy, POST the reason to <url>/fail (healthchecks.io)"
    )
    timeout: Duration = Field(timedelta(seconds=10), description="of each send")
    alertmanager: str | None = Field(
        None, description="name of an alertmanager upstream of tickets: for the Watchdog alert"
    )
    max_stall: Duration | None = Field(
        timedelta(minutes=5),
        description="unhealthy when no MQTT message was processed for this long (null: off)",
    )

    @model_validator(mode="before")
    @classmethod
    def _enabled_by_a_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and "enabled" not in data:
            targets = ("url", "url_env", "url_file", "alertmanager")
            return {**data, "enabled": any(data.get(key) for key in targets)}
        return data

    @field_validator("url")
    @classmethod
    def _not_inline(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(_INLINE_URL)
        return value

    @field_validator("url_env", "url_file", mode="after")
    @classmethod
    def _an_http_url(cls, value: str | Path | None, info: ValidationInfo) -> str | Path | None:
        if value is None or not info.data.get("enabled"):
            return value
        try:
            if isinstance(value, Path):
                url, where = read_secret(None, value), f"the first line of {str(value)!r}"
            else:
                url, where = os.environ.get(value), f"environment variable {value}"
        except OSError:
            return value  # SecretFile said why
        if url is None or not _is_http_url(url):
            # The value is a secret: say where it is, never what it is.
            raise ValueError(f"{where} is not an http(s) URL with a host (value not shown)")
        return value

    @field_validator("interval")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @field_validator("timeout")
    @classmethod
    def _within_the_interval(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        interval = info.data.get("interval")
        if value <= timedelta(0) or (isinstance(interval, timedelta) and value > interval):
            raise ValueError("must be greater than 0 and at most the interval")
        return value

    @field_validator("max_stall")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be greater than 0 (null: off)")
        return value

    @model_validator(mode="after")
    def _something_to_ping(self) -> HeartbeatConfig:
        if self.url_env and self.url_file:
            raise ValueError("give url_env or url_file, not both")
        if self.enabled and not (self.url_env or self.url_file or self.alertmanager):
            raise ValueError(
                "enabled, but there is nothing to ping: set url_env or url_file (a "
                "healthchecks.io-style ping URL) and/or alertmanager (an upstream name)"
            )
        return self

    def ping_url(self) -> str | None:
        """The ping URL, read now from its environment variable or file (None: no URL)."""
        if not self.enabled or not (self.url_env or self.url_file):
            return None
        return read_secret(self.url_env, self.url_file)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url.strip()


def shown_url(url: str) -> str:
    """A ping URL as logs may show it: scheme://host/…, then the last 4 characters."""
    parts = urlsplit(url)
    rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
    tail = rest[-4:] if len(rest) > 8 else ""
    return f"{parts.scheme}://{parts.hostname or ''}/…{tail}"
