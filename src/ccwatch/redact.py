"""The one redaction step: secrets are cut to their first and last 4 characters.

Seed 002: "never share full API keys; if you have to, only the few beginning and few
ending characters", and "never share your passwords". Every outgoing ticket body and
header and every log line goes through ``Redactor``:

- configured secrets (every value named by an ``*_env`` / ``*_file`` pair in the config)
  are replaced wherever they appear;
- anything that looks like one is cut too: ``Authorization:``/``Bearer`` tokens,
  ``password=…``/``token: …``/``"api_key": "…"`` values, the password of a DSN or URL
  (``postgresql://user:pw@host``), and API-key-shaped words (``sk_live_…``, ``ghp_…``,
  ``AKIA…``, ``xoxb-…``, long mixed-case alphanumeric keys).

``cut("sk_live_51HxY…")`` keeps 4 + 4 characters (``sk_l...xY9z``); a value shorter than
12 characters would be given away by that, so it becomes ``****``.

The logging filter uses the process-wide redactor, which ``app.py`` fills with the
configured secrets at start-up (``configure(secrets_from_config(config))``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ccwatch.configbase import read_secret

MASK = "****"
_MIN_SHOWN = 12

# Names of secrets (not a secret): a key or header named like this has a secret value.
_NAME_WORDS = [r"pass(?:word|wd)?", "pwd", "secret", "token", r"api[_-]?key", "apikey"]
_NAME_WORDS += [r"access[_-]?key", r"routing[_-]?key", r"client[_-]?secret", r"private[_-]?key"]
_SECRET_NAMES = "(?:" + "|".join(_NAME_WORDS) + ")"
_SECRET_NAME = re.compile(rf"(?i)[\w-]*{_SECRET_NAMES}")
_MIN_MATCH = 5  # no pattern below matches a shorter string ("pwd=x")
_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Authorization: Bearer abc / Authorization: Basic abc / authorization=abc
    re.compile(r"(?i)(\bauthorization\b\"?\s*[:=]\s*\"?(?:bearer|basic|token)?\s*)([^\s\"',;]+)"),
    re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{6,})"),
    # password=abc, "token": "abc", api_key: abc, X-Api-Key: abc
    re.compile(rf"(?i)(\b[\w-]*{_SECRET_NAMES}\b\"?\s*[:=]\s*\"?)([^\s\"',;&}}]+)"),
    # scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(?=@)"),
    # Well-known key shapes.
    re.compile(
        r"()\b((?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|"
        r"glpat-[A-Za-z0-9_-]{16,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
        r"AIza[0-9A-Za-z_-]{30,})\b"
    ),
    # A long word mixing upper case, lower case and digits is a key, not prose.
    # (Lower-case hex such as incident UUIDs and dedup keys is left alone.)
    re.compile(
        r"()\b((?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*\d)"
        r"[A-Za-z0-9_-]{32,})\b"
    ),
)


def cut(secret: str) -> str:
    """First and last 4 characters of a secret, or ``****`` when it is too short to cut."""
    if len(secret) < _MIN_SHOWN:
        return MASK
    return f"{secret[:4]}...{secret[-4:]}"


class Redactor:
    """Redacts known secrets and secret-looking text in strings, JSON values and headers."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        # Ticket bodies repeat the same strings (site, summary, keys) event after event.
        self._cached_text = functools.lru_cache(maxsize=8192)(self._text)
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self._secrets) | {s for s in secrets if s and len(s) >= 4}
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(known, key=len, reverse=True)
        self._cached_text.cache_clear()

    def text(self, value: str) -> str:
        if len(value) > 4096:  # log excerpts and tracebacks: not worth caching
            return self._text(value)
        return self._cached_text(value)

    def _text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, cut(secret))
        if len(value) < _MIN_MATCH:
            return value
        for pattern in _PATTERNS:
            value = pattern.sub(_cut_match, value)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string redacted (keys kept, secret-named keys cut)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self._item(str(key), item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def _item(self, key: str, item: Any) -> Any:
        if isinstance(item, str) and _is_secret_name(key):
            return cut(item) if not _already_cut(item) else item
        return self.value(item)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, item in headers.items():
            if name.lower() in ("authorization", "proxy-authorization") or _is_secret_name(name):
                scheme, _, credential = item.partition(" ")
                result[name] = f"{scheme} {cut(credential)}" if credential else cut(item)
            else:
                result[name] = self.text(item)
        return result


@functools.lru_cache(maxsize=1024)
def _is_secret_name(key: str) -> bool:
    return _SECRET_NAME.fullmatch(key) is not None


def _already_cut(value: str) -> bool:
    return value == MASK or (len(value) == 11 and value[4:7] == "...")


def _cut_match(match: re.Match[str]) -> str:
    prefix, secret = match.group(1), match.group(2)
    if _already_cut(secret) or secret.startswith(MASK):
        return match.group(0)
    rest = match.group(0)[len(prefix) + len(secret) :]
    return f"{prefix}{cut(secret)}{rest}"


def secrets_from_config(model: BaseModel) -> list[str]:
    """Every secret the config names through ``<x>_env`` / ``<x>_file`` pairs, read now."""
    found: list[str] = []
    _collect(model, found)
    return found


def _collect(node: Any, found: list[str]) -> None:
    if isinstance(node, BaseModel):
        fields = type(node).model_fields
        for name in fields:
            if name.endswith("_env"):
                stem = name.removesuffix("_env")
                env = getattr(node, name)
                file = getattr(node, f"{stem}_file", None)
                if env or file:
                    try:
                        secret = read_secret(env, file if isinstance(file, Path) else None)
                    except OSError:
                        secret = None
                    if secret:
                        found.append(secret)
            else:
                _collect(getattr(node, name), found)
    elif isinstance(node, Mapping):
        for item in node.values():
            _collect(item, found)
    elif isinstance(node, list | tuple):
        for item in node:
            _collect(item, found)


_process_redactor = Redactor()


def configure(secrets: Iterable[str]) -> Redactor:
    """Teach the process-wide redactor (used by the log filter) the configured secrets."""
    _process_redactor.add(secrets)
    return _process_redactor


def process_redactor() -> Redactor:
    return _process_redactor


class RedactingFilter(logging.Filter):
    """Redacts each record's final message (and its traceback text) before it is written."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor or _process_redactor
        message = record.getMessage()
        redacted = redactor.text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.levelno >= logging.ERROR:
            # The formatters print tracebacks themselves; hand them redacted text instead.
            trace = redactor.text(logging.Formatter().formatException(record.exc_info))
            record.msg, record.args = f"{redacted}\n{trace}", None
            record.exc_info, record.exc_text = None, None
        return True
