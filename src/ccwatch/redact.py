"""The one redaction step: passwords never shown, identifiers by their first and last 4.

Seed 002: "never share your passwords", and API keys only by "the few beginning and few
ending characters". Every outgoing ticket body and header, every stored excerpt and
every log line goes through ``Redactor``. Two kinds of secret are told apart:

- **passwords** — a password or passphrase, the password of a DSN or of a URL's
  userinfo, a ``Basic`` credential, an AWS secret key, and the value of any key named
  like ``password``/``passwd``/``pwd``/``passphrase``/``secret``/``credentials``/``auth``
  (``PGPASSWORD=…``, ``client_secret: …``, ``"db_pass": "…"``): replaced **entirely**
  by ``****``;
- **identifiers** — API keys, tokens, routing keys (``Bearer …``, ``api_key=…``,
  ``X-Api-Key: …``, ``sk_live_…``, ``ghp_…``, ``AKIA…``, long mixed-case keys): cut to
  their first and last 4 characters (``sk_l...MnOp``), and only when at least 16
  characters long; shorter ones become ``****``.

A value ends where its context ends it: a quoted string is taken whole (escapes and line
breaks included), an unquoted ``key=value`` runs to the next whitespace (so ``;`` and
``&`` inside it are part of it), an unquoted ``key: value`` (YAML) runs to the end of the
line and over its more-indented continuation lines.

Secrets named by the config (every ``<x>_env`` / ``<x>_file`` pair) are taught to the
redactor with their kind (``secrets_from_config``) and replaced wherever they appear.

Key names are not values: ``mqtt -> password: unknown key`` (a config error about the
key) stays readable.

Redact first, cut after: an excerpt cut before redaction can keep the first part of a
secret that straddles the cut, which no pattern recognises any more. ``redact_then_cut``
is the one way to shorten text that may carry secrets.

The logging filter uses the process-wide redactor, which ``app.py`` fills with the
configured secrets at start-up (``configure(secrets_from_config(config))``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ccwatch.configbase import read_secret

MASK = "****"
_MIN_SHOWN = 16  # an identifier shorter than this is given away by 4 + 4: masked whole

Kind = Literal["password", "identifier"]

# Key names (not secrets): a key or header named like this has a secret value.
# Password-like names; `pass`, `pwd` and `auth` only as a whole word or after _/-.
_WHOLE_MASK_WORDS = (
    r"(?:[\w-]*?)(?:password|passwd|passphrase|secret|credentials?|private[_-]?key)"
    r"|(?:[\w-]*[_-])?(?:pass|pwd|auth)"
    r"|(?:pg|my|db)pass"
)
# Identifier-like names.
_IDENTIFIER_WORDS = (
    r"(?:[\w-]*?)(?:token|api[_-]?key|apikey|access[_-]?key|routing[_-]?key"
    r"|integration[_-]?key|license[_-]?key)"
)
_KEY_NAME = rf"(?:{_WHOLE_MASK_WORDS}|{_IDENTIFIER_WORDS})"
_SECRET_NAME = re.compile(rf"(?i){_KEY_NAME}")
_PASSWORD_NAME = re.compile(
    r"(?i)password|passwd|passphrase|secret|credential|private[_-]?key|"
    r"(?:^|[_-])(?:pass|pwd|auth)$|^(?:pg|my|db)pass$"
)

_DOUBLE_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SINGLE_QUOTED = r"'(?:[^'\\]|\\.|'')*'"
_IDENTIFIER_CHARS = r"[^\s\"'`<>,;&(){}\[\]]+"

# key <sep>, where a value follows (its end is found by ``_value_end``). A key right after
# "-> " is a config key path in an error message: not followed by a value.
_KEY_VALUE = re.compile(
    rf"(?i)(?<![\w-])(?<!-> )(?P<key>{_KEY_NAME})(?![\w-])"
    r"(?P<between>[\"']?[ \t]*(?P<sep>=>|[:=])[ \t]*)(?=[^ \t\r\n])"
)
_QUOTED = re.compile(rf"{_DOUBLE_QUOTED}|{_SINGLE_QUOTED}", re.DOTALL)
# What may follow a quoted value that is the whole value ('ab'cd is not).
_AFTER_QUOTED = re.compile(r"$|[\s,;:)}\]>&\\]")
_WORD = re.compile(r"[^ \t\r\n\f\v]+")  # ASCII white space ends it; a no-break space not
_IDENTIFIER_WORD = re.compile(_IDENTIFIER_CHARS)
_REST_OF_LINE = re.compile(r"[^\r\n]*")
_CONTINUATION = re.compile(r"\r?\n([ \t]+)\S[^\r\n]*")
# What a config error says about a key named like a secret: not a value.
_ABOUT_THE_KEY = re.compile(
    r"unknown key; (?:secrets are never written inline|did you mean|allowed keys here)"
)
# --password value, -p value on command lines.
_OPTION_VALUE = re.compile(
    r"(?i)(?<![\w-])(?P<key>--?[\w-]*(?:password|passwd|passphrase|secret))(?P<between>[ \t]+)"
    rf"(?P<value>{_DOUBLE_QUOTED}|{_SINGLE_QUOTED}|(?!-)\S+)"
)
# Authorization: Bearer abc / Authorization: Basic abc / authorization=abc
_AUTHORIZATION = re.compile(
    r"(?i)(?<![\w-])(?P<key>(?:proxy-)?authorization)(?P<between>[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?:(?P<bearer>(?:bearer|token)[ \t]+)(?P<token>[A-Za-z0-9._~+/=-]+)"
    r"|(?P<scheme>[A-Za-z]+[ \t]+)(?P<credential>[A-Za-z0-9._~+/=-]+)"
    r"|(?P<bare>[^\s\"',;]+))"
)
_BEARER = re.compile(r"(?i)(?<![\w-])(bearer[ \t]+)([A-Za-z0-9._~+/=-]{6,})")
_BASIC = re.compile(r"(?i)(?<![\w-])(basic[ \t]+)([A-Za-z0-9+/]{8,}+=*+)")
# scheme://user:password@host (the password may carry unencoded '@': the last one ends it)
_URL_USERINFO = re.compile(
    r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}://[^\s:/@?#]*+:)([^\s/?#]*)@"
)
# Well-known identifier shapes. Runs are matched possessively (``{n,}+``) and whole, so a
# hostile 100 kB word costs one pass, not one pass per position.
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_])((?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}+|gh[pousr]_[A-Za-z0-9]{20,}+|"
    r"glpat-[A-Za-z0-9_-]{16,}+|xox[abposr]-[A-Za-z0-9-]{10,}+|"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])|AIza[0-9A-Za-z_-]{30,}+)"
)
# An AWS secret access key: 40 characters of base64 mixing cases and digits. A secret.
_AWS_SECRET = re.compile(
    r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
    r"(?=[A-Za-z0-9/+]{0,39}\d)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
# A long word mixing upper case, lower case and digits is a key, not prose.
# (Lower-case hex such as incident UUIDs and dedup keys is left alone.)
# The run is matched whole here; ``_long_key`` checks the mix.
_LONG_KEY = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}+")
_MIN_MATCH = 5  # no pattern matches a shorter string ("pwd=x")


def cut(secret: str) -> str:
    """An identifier's first and last 4 characters, or ``****`` when it is too short."""
    if _already_redacted(secret):
        return secret
    if len(secret) < _MIN_SHOWN:
        return MASK
    return f"{secret[:4]}...{secret[-4:]}"


def mask(secret: str, kind: Kind) -> str:
    """How a secret of this kind is shown: passwords never, identifiers as ``cut``."""
    return cut(secret) if kind == "identifier" else MASK


def key_kind(key: str) -> Kind | None:
    """The kind of secret a key or header of this name holds, or None."""
    return _key_kind(key)


@functools.lru_cache(maxsize=2048)
def _key_kind(key: str) -> Kind | None:
    if key.lower() in ("authorization", "proxy-authorization"):
        return "identifier"  # the scheme decides; see Redactor.headers
    if _SECRET_NAME.fullmatch(key) is None:
        return None
    return "password" if _PASSWORD_NAME.search(key) else "identifier"


@dataclass(frozen=True)
class Secret:
    """A secret value named by the config, with the kind that decides how it is shown."""

    value: str
    kind: Kind = "password"


class Redactor:
    """Redacts known secrets and secret-looking text in strings, JSON values and headers.

    ``Redactor(passwords, tokens=…)``: plain strings are passwords (masked whole);
    ``tokens`` and ``Secret(..., "identifier")`` items are cut to 4 + 4.
    """

    def __init__(self, secrets: Iterable[str | Secret] = (), tokens: Iterable[str] = ()) -> None:
        self._secrets: list[Secret] = []
        # Ticket bodies repeat the same strings (site, summary, keys) event after event.
        self._cached_text = functools.lru_cache(maxsize=8192)(self._text)
        self.add(secrets)
        self.add(Secret(token, "identifier") for token in tokens)

    def add(self, secrets: Iterable[str | Secret]) -> None:
        known = {s.value: s for s in self._secrets}
        for item in secrets:
            secret = item if isinstance(item, Secret) else Secret(item)
            if len(secret.value) < 4:
                continue  # replacing "ab" everywhere would wreck the text and hide nothing
            earlier = known.get(secret.value)
            if earlier is None or earlier.kind == "identifier":
                known[secret.value] = secret  # a value known as both is a password
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(known.values(), key=lambda s: len(s.value), reverse=True)
        self._cached_text.cache_clear()

    def text(self, value: str) -> str:
        if len(value) > 4096:  # log excerpts and tracebacks: not worth caching
            return self._text(value)
        return self._cached_text(value)

    def _text(self, value: str) -> str:
        for secret in self._secrets:
            if secret.value in value:
                value = value.replace(secret.value, mask(secret.value, secret.kind))
        if len(value) < _MIN_MATCH:
            return value
        for rule in _RULES:
            value = rule(value)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string redacted (keys kept, secret-named keys masked)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self._item(str(key), item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def _item(self, key: str, item: Any) -> Any:
        kind = _key_kind(key)
        if kind is None:
            return self.value(item)
        if key.lower() in ("authorization", "proxy-authorization") and isinstance(item, str):
            return _authorization_value(item)
        if kind == "password":
            return _mask_all(item)
        if isinstance(item, str):
            return cut(item)
        if isinstance(item, int | float) and not isinstance(item, bool):
            return MASK
        return self.value(item)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, item in headers.items():
            if name.lower() in ("authorization", "proxy-authorization"):
                result[name] = _authorization_value(item)
            elif (kind := _key_kind(name)) is not None:
                result[name] = mask(item, kind)
            else:
                result[name] = self.text(item)
        return result


def redact_then_cut(text: str, limit: int, redactor: Redactor | None = None) -> str:
    """``text`` redacted, then cut to at most ``limit`` characters (never the other way)."""
    redacted = (redactor or _process_redactor).text(text)
    return redacted[:limit]


def _authorization_value(item: str) -> str:
    scheme, _, credential = item.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return cut(item)  # a bare token
    if scheme.lower() in ("bearer", "token"):
        return f"{scheme} {cut(credential)}"
    return f"{scheme} {MASK}"  # Basic user:password, Digest, anything else: a password


def _mask_all(item: Any) -> Any:
    """Every string and number under a password-named key, masked; the shape kept."""
    if isinstance(item, Mapping):
        return {key: _mask_all(value) for key, value in item.items()}
    if isinstance(item, list | tuple):
        return [_mask_all(value) for value in item]
    if item is None or isinstance(item, bool):
        return item
    return MASK


def _already_redacted(value: str) -> bool:
    return value == MASK or (len(value) == 11 and value[4:7] == "...")


def _masked_value(value: str, kind: Kind) -> str:
    """A matched value masked, its quotes kept."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if not inner:
            return value  # an empty string hides nothing
        return f"{value[0]}{inner if _already_redacted(inner) else mask(inner, kind)}{value[0]}"
    if _already_redacted(value):
        return value
    trailing = ""
    if kind == "password":
        stripped = value.rstrip()
        trailing = value[len(stripped) :]
    return mask(value.strip(), kind) + trailing


def _redact_key_values(text: str) -> str:
    """Every ``key <sep> value`` with a secret-named key, its value masked whole."""
    parts: list[str] = []
    pos = 0
    while (match := _KEY_VALUE.search(text, pos)) is not None:
        start = match.end()
        if _ABOUT_THE_KEY.match(text, start):
            parts.append(text[pos:start])
            pos = start
            continue
        kind = _key_kind(match["key"]) or "password"
        end = _value_end(text, match, kind)
        if end == start:  # nothing that can be a value here
            parts.append(text[pos:start])
            pos = start
            continue
        parts.append(text[pos:start])
        parts.append(_masked_value(text[start:end], kind))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _value_end(text: str, match: re.Match[str], kind: Kind) -> int:
    """Where the value after ``match`` ends, by the quoting and format of its context."""
    start = match.end()
    quoted = _QUOTED.match(text, start) if text[start] in "\"'" else None
    if quoted is not None and _AFTER_QUOTED.match(text, quoted.end()):
        return quoted.end()  # a quoted string, whole
    if kind == "identifier":  # one word
        word = _IDENTIFIER_WORD.match(text, start)
        return word.end() if word is not None else start
    if match["sep"] != ":":  # key=value: up to whitespace
        word = _WORD.match(text, start)
        return word.end() if word is not None else start
    # key: value (YAML, headers): to the end of the line, and over the continuation lines
    # of a YAML plain or block scalar when the key starts its line.
    end = _REST_OF_LINE.match(text, start).end()  # type: ignore[union-attr]
    line_start = text.rfind("\n", 0, match.start()) + 1
    lead = text[line_start : match.start()]
    if lead.strip(" \t-\"'") == "":
        column = len(lead)
        while (more := _CONTINUATION.match(text, end)) is not None and len(more[1]) > column:
            end = more.end()
    return end


def _option_value(match: re.Match[str]) -> str:
    return f"{match['key']}{match['between']}{_masked_value(match['value'], 'password')}"


def _authorization(match: re.Match[str]) -> str:
    head = f"{match['key']}{match['between']}"
    if match["token"] is not None:
        return f"{head}{match['bearer']}{_masked_value(match['token'], 'identifier')}"
    if match["credential"] is not None:
        return f"{head}{match['scheme']}{_masked_value(match['credential'], 'password')}"
    return f"{head}{_masked_value(match['bare'], 'identifier')}"


def _group2(kind: Kind) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return f"{match[1]}{_masked_value(match[2], kind)}" + match[0][len(match[1] + match[2]) :]

    return replace


def _long_key(match: re.Match[str]) -> str:
    word = match[0]
    mixed = re.search("[A-Z]", word) and re.search("[a-z]", word) and re.search("[0-9]", word)
    return _masked_value(word, "identifier") if mixed else word


def _whole(kind: Kind) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return _masked_value(match[0], kind)

    return replace


def _rule(
    pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]
) -> Callable[[str], str]:
    return functools.partial(pattern.sub, replace)


_RULES: tuple[Callable[[str], str], ...] = (
    _rule(_AUTHORIZATION, _authorization),
    _rule(_BEARER, _group2("identifier")),
    _rule(_BASIC, _group2("password")),
    _rule(_URL_USERINFO, _group2("password")),
    _redact_key_values,
    _rule(_OPTION_VALUE, _option_value),
    _rule(_AWS_SECRET, _whole("password")),
    _rule(_KEY_SHAPES, _whole("identifier")),
    _rule(_LONG_KEY, _long_key),
)


# --- secrets named by the config ---------------------------------------------------------

_IDENTIFIER_STEM = re.compile(r"(?i)(?:token|key)$")
_PASSWORD_STEM = re.compile(r"(?i)password|passwd|secret|private|credential|dsn")
_DSN_PASSWORD = re.compile(
    rf"(?i)(?:(?<![\w-])password[ \t]*=[ \t]*({_SINGLE_QUOTED}|\S+)"
    r"|://[^\s:/@?#]*:([^\s/?#]*)@)"
)


def secret_kind(field_stem: str) -> Kind:
    """``routing_key``, ``bearer_token``: identifiers; ``password``, ``secret``, ``dsn``,
    anything else: passwords (when unsure, show nothing)."""
    if _IDENTIFIER_STEM.search(field_stem) and not _PASSWORD_STEM.search(field_stem):
        return "identifier"
    return "password"


def secrets_from_config(model: BaseModel) -> list[Secret]:
    """Every secret the config names through ``<x>_env`` / ``<x>_file`` pairs, read now,
    with its kind (from the field's name). A DSN's own password is a secret too."""
    found: list[Secret] = []
    _collect(model, found)
    return found


def _collect(node: Any, found: list[Secret]) -> None:
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
                        found.append(Secret(secret, secret_kind(stem)))
                        found.extend(Secret(p, "password") for p in dsn_passwords(secret))
            else:
                _collect(getattr(node, name), found)
    elif isinstance(node, dict):
        # A validated model's mappings are dicts. (``isinstance(x, Mapping)`` on every leaf
        # type of the config would fill the ABC caches of every Mapping subclass loaded.)
        for item in node.values():
            _collect(item, found)
    elif isinstance(node, list | tuple):
        for item in node:
            _collect(item, found)


def dsn_passwords(dsn: str) -> list[str]:
    """The password(s) written in a DSN (``password=…`` or URL userinfo), as written."""
    found: list[str] = []
    for match in _DSN_PASSWORD.finditer(dsn):
        value = match[1] or match[2] or ""
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        if value:
            found.append(value)
    return found


_process_redactor = Redactor()


def configure(secrets: Iterable[str | Secret]) -> Redactor:
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
