"""Property: random secrets in random log lines, JSON, YAML, DSNs and URLs never survive.

For a password (any value of a password-named key, a DSN or URL password): no substring
of 4 characters or more is left, on the text path (``Redactor.text``: log lines, ticket
text, excerpts) or the value path (``Redactor.value``: ticket bodies, API answers).
For an API key / token: at most its first and last 4 characters are left.
Half the examples teach the redactor the secret (as the config does), half rely on the
patterns alone.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ccwatch.redact import Redactor, redact_then_cut

PASSWORD_KEYS = [
    "password", "passwd", "pwd", "pass", "passphrase", "PGPASSWORD", "DB_PASSWORD",
    "db_pass", "mysql_pwd", "secret", "client_secret", "webhook_secret", "credentials",
    "auth", "basic_auth", "private_key", "aws_secret_access_key", "Password",
]  # fmt: skip
TOKEN_KEYS = [
    "api_key", "apikey", "API-KEY", "X-Api-Key", "token", "access_token", "auth_token",
    "routing_key", "integration_key", "access_key",
]  # fmt: skip
WORDS = [
    "ERROR", "WARN", "INFO", "connect", "failed", "retrying", "agent", "queue", "ivr",
    "acd", "host=db01", "port=5432", "user=ameyo", "timeout", "upstream", "campaign",
]  # fmt: skip
OTHER_KEYS = ["host", "port", "user", "database", "timeout", "site", "queue", "mode"]

# Passwords: anything printable (spaces only where the format can quote them).
_PRINTABLE = st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"], blacklist_characters="*")
PASSWORDS = st.text(alphabet=_PRINTABLE, min_size=4, max_size=40)
WORD_PASSWORDS = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Z"], blacklist_characters="*"),
    min_size=4,
    max_size=40,
)
TOKENS = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["", "", "sk_live_", "ghp_", "xoxb-", "tok_", "pd-"]),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
        min_size=16,
        max_size=64,
    ),
)
FILLER = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)

TRIED: dict[str, int] = {}


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


def _substrings(secret: str, size: int) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _password_left(secret: str, shown: str) -> set[str]:
    return {part for part in _substrings(secret, 4) if part in shown}


def _libpq_quote(value: str) -> str:
    if value and not any(ch in value for ch in " \t'\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _single_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Each builds a text carrying the password; "plain" ones need a password without spaces.
PASSWORD_FORMATS: dict[str, tuple[bool, Callable[[str, str, str], str]]] = {
    "log key=value": (False, lambda k, p, f: f"2026-11-23 10:00:01 {f} {k}={p} {f}"),
    "log key: 'quoted'": (True, lambda k, p, f: f"{f} {k}: {_single_quote(p)} {f}"),
    "log key=\"json-quoted\"": (True, lambda k, p, f: f"{f} {k}={json.dumps(p)} {f}"),
    "header key: value": (True, lambda k, p, f: f"{k}: {p}\r\nHost: db01\r\n"),
    "json": (True, lambda k, p, f: json.dumps({"site": "blr1", k: p, "note": f})),
    "json ascii": (True, lambda k, p, f: json.dumps({"db": {k: p, "host": "db01"}}, ensure_ascii=True)),
    "yaml": (True, lambda k, p, f: yaml.safe_dump({"db": {"host": "db01", k: p, "note": f}})),
    "yaml flow list": (
        True,
        lambda k, p, f: yaml.safe_dump({"dbs": [{k: p, "host": "db01"}]}, allow_unicode=True),
    ),
    "libpq dsn": (
        True,
        lambda k, p, f: f"{f} dsn host=db01 port=5432 user=ameyo password={_libpq_quote(p)} "
        f"dbname=ameyodb {f}",
    ),
    "postgres url": (
        True,
        lambda k, p, f: f"{f} postgresql://ameyo:{urllib.parse.quote(p, safe='')}@db01:5432/a {f}",
    ),
    "https url": (
        True,
        lambda k, p, f: f"GET https://agent:{urllib.parse.quote(p, safe='!$,;')}@crm.example/x?y=1",
    ),
    "cli option": (True, lambda k, p, f: f"exec mysqldump --password {_single_quote(p)} {f}"),
}  # fmt: skip

TOKEN_FORMATS: dict[str, Callable[[str, str, str], str]] = {
    "log key=value": lambda k, t, f: f"{f} {k}={t} {f}",
    "header": lambda k, t, f: f"{k}: {t}\r\nAccept: */*",
    "bearer": lambda k, t, f: f"{f} Authorization: Bearer {t} {f}",
    "bare bearer": lambda k, t, f: f"{f} sent bearer {t} to {f}",
    "json": lambda k, t, f: json.dumps({"event": "open", k: t, "note": f}),
    "yaml": lambda k, t, f: yaml.safe_dump({"upstream": {k: t, "url": "https://x"}}),
    "query string": lambda k, t, f: f"POST /v2/enqueue?{k}={t}&site=blr1 {f}",
}


def _assume_not_in_skeleton(secret: str, build: Callable[[str], str], size: int) -> None:
    """The surrounding text must not carry a piece of the secret by coincidence."""
    skeleton = build("\x00")
    assume(not any(part in skeleton for part in _substrings(secret, size)))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    fmt=st.sampled_from(sorted(PASSWORD_FORMATS)),
    key=st.sampled_from(PASSWORD_KEYS),
    spaced=PASSWORDS,
    word=WORD_PASSWORDS,
    filler=FILLER,
    taught=st.booleans(),
)
def test_no_piece_of_a_password_survives_the_text_path(
    fmt: str, key: str, spaced: str, word: str, filler: str, taught: bool
) -> None:
    quotes_it, build = PASSWORD_FORMATS[fmt]
    password = spaced if quotes_it else word
    _assume_not_in_skeleton(password, lambda p: build(key, p, filler), 4)
    text = build(key, password, filler)
    redactor = Redactor([password] if taught else [])
    shown = redactor.text(text)
    assert not _password_left(password, shown), (text, shown)
    # Cut after redaction: a shorter excerpt leaks nothing either.
    assert not _password_left(password, redact_then_cut(text, 60, redactor)), text
    _count(f"password text/{fmt}")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    key=st.sampled_from(PASSWORD_KEYS),
    password=PASSWORDS,
    line=st.sampled_from(["log key=value", "libpq dsn", "postgres url", "json"]),
    filler=FILLER,
    taught=st.booleans(),
)
def test_no_piece_of_a_password_survives_the_value_path(
    key: str, password: str, line: str, filler: str, taught: bool
) -> None:
    build = PASSWORD_FORMATS[line][1]
    if line == "log key=value":  # unquoted: a value ends at whitespace
        password = "".join("_" if ch.isspace() else ch for ch in password)
    assume(len(password) >= 4)

    def body_of(p: str) -> dict[str, Any]:
        return {
            "summary": filler,
            "diagnostics": {"env": {key: p}, "log_excerpt": [build(key, p, filler)]},
            "config": [{"host": "db01", key: p}],
        }

    # The whole body's skeleton, its fixed keys included ("conf" is in "config").
    _assume_not_in_skeleton(password, lambda p: json.dumps(body_of(p), ensure_ascii=False), 4)
    body = body_of(password)
    redactor = Redactor([password] if taught else [])
    shown = json.dumps(redactor.value(body), ensure_ascii=False)
    assert not _password_left(password, shown), shown
    _count("password value")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    fmt=st.sampled_from(sorted(TOKEN_FORMATS)),
    key=st.sampled_from(TOKEN_KEYS),
    token=TOKENS,
    filler=FILLER,
    taught=st.booleans(),
)
def test_at_most_four_and_four_characters_of_an_api_key_survive(
    fmt: str, key: str, token: str, filler: str, taught: bool
) -> None:
    build = TOKEN_FORMATS[fmt]
    _assume_not_in_skeleton(token, lambda t: json.dumps([key, build(key, t, filler)]), 4)
    text = build(key, token, filler)
    redactor = Redactor(tokens=[token] if taught else [])
    for path, shown in (
        ("text", redactor.text(text)),
        ("value", json.dumps(redactor.value({key: token, "log": [text]}))),
    ):
        assert not any(part in shown for part in _substrings(token, 5)), (path, text, shown)
        assert len({p for p in _substrings(token, 4) if p in shown}) <= 2, (path, text, shown)
        _count(f"api key {path}/{fmt}")


@settings(max_examples=500, deadline=None)
@given(secret=PASSWORDS, before=st.text(max_size=80), after=st.text(max_size=80))
def test_a_configured_password_in_any_text_is_masked_whole(
    secret: str, before: str, after: str
) -> None:
    assume("*" not in secret)
    text = before + secret + after
    _assume_not_in_skeleton(secret, lambda s: before + s + after, 4)
    assert not _password_left(secret, Redactor([secret]).text(text))
    _count("configured password in random text")


def teardown_module() -> None:
    total = sum(TRIED.values())
    print(f"\nredaction properties: {total} examples tried")
    for name, count in sorted(TRIED.items()):
        print(f"  {count:6d} {name}")
