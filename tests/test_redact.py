"""The one redaction step: passwords masked whole, identifiers cut to 4 + 4 (seed 002)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import Config
from ccwatch.errors import PermanentUpstreamError
from ccwatch.logs import JournalFormatter
from ccwatch.redact import (
    MASK,
    RedactingFilter,
    Redactor,
    Secret,
    cut,
    redact_then_cut,
    secrets_from_config,
)
from ccwatch.tickets.adapters.base import check_status
from tests.conftest import base_config, wait_until

ROUTING_KEY = "R0UT1NGKEYe93b2a7c4d5f6a8b9c0d1e2f"
DSN_PASSWORD = "Am3yo-DB-pa55word"


def test_cut_keeps_first_and_last_four_of_identifiers_of_16_or_more() -> None:
    assert cut("sk_live_51HxYzAbCdEfGhIjKlMnOp") == "sk_l...MnOp"
    assert cut("0123456789abcdef") == "0123...cdef"
    assert cut("0123456789abcde") == MASK  # 15 characters: 4 + 4 would give half away


# Each line is what the old redactor let through (in part or whole); the secret must go.
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("connect failed password=S3cr3tPassw0rd! host=db", "connect failed password=**** host=db"),
        ("login password=abcdefgh&ijklmnop from 10.0.0.9", "login password=**** from 10.0.0.9"),
        ("passwd=Sup3r;S3cretValue", "passwd=****"),
        ("password: 'my secret passphrase here'", "password: '****'"),
        ('password: "my secret passphrase here"', 'password: "****"'),
        ("export PGPASSWORD=Am3yoDbPass2024", "export PGPASSWORD=****"),
        ("credentials=agent7:Hunter2Hunter2", "credentials=****"),
        ("auth=agent7:Hunter2 mode=basic", "auth=**** mode=basic"),
        ("client_secret=Xy7-9kLmN0pQ", "client_secret=****"),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key=****",
        ),
        ("signing with wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY now", "signing with **** now"),
        (
            "dsn postgresql://ameyo:Am3yo-DB-pa55word@10.0.0.5:5432/ameyodb",
            "dsn postgresql://ameyo:****@10.0.0.5:5432/ameyodb",
        ),
        ("redis://:p@ss@word@cache:6379/0", "redis://:****@cache:6379/0"),
        (
            "host=db user=ameyo password='pa ss;w\\'rd' dbname=ameyodb",
            "host=db user=ameyo password='****' dbname=ameyodb",
        ),
        (
            "GET /x authorization=Basic YWdlbnQ6cGFzc3dvcmQxMjM=",
            "GET /x authorization=Basic ****",
        ),
        ('{"user": "ameyo", "password": "a \\" b"}', '{"user": "ameyo", "password": "****"}'),
        (
            "db:\n  password: my secret\n    phrase here\n  host: db\n",
            "db:\n  password: ****\n  host: db\n",
        ),
        ("mysqldump --password hunter2hunter2 ameyodb", "mysqldump --password **** ameyodb"),
    ],
)
def test_passwords_are_masked_entirely(line: str, expected: str) -> None:
    assert Redactor().text(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "Authorization: Bearer eyJh....sig",
        ),
        ('{"api_key": "AbCdEfGh12345678wxyz"}', '{"api_key": "AbCd...wxyz"}'),
        ("X-Api-Key: 9f8e7d6c5b4a39281706f5e4", "X-Api-Key: 9f8e...f5e4"),
        ("token=shorttoken123 next", "token=**** next"),  # under 16 characters: masked
        (
            "token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 used",
            "token ghp_...Q7r8 used",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE used", "aws AKIA...MPLE used"),
        ("slack xoxb-123456789012-abcdefghijkl", "slack xoxb...ijkl"),
        ("key=Zk9AbcDEF1234567890abcdefGHIJKLmnop", "key=Zk9A...mnop"),
        ("routing_key=R0UT1NGKEYe93b2a7c4d5f&x=1", "routing_key=R0UT...4d5f&x=1"),
    ],
)
def test_identifiers_keep_first_and_last_four(line: str, expected: str) -> None:
    assert Redactor().text(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "incident ccwatch:blr1:acd:3f2a9c1e-8d4b-4f0e-9a6b-1c2d3e4f5a6b:3 opened",
        "23 of 100 agents cannot take calls (23.0%)",
        "sha256=9b74c9897bac770ffc029102a200c5de8a2f0c8d8f1bd1e3b3a5c1e1f0a6c2d4",
        "passwords are never logged",
        "commit 3f2a9c1e8d4b4f0e9a6b1c2d3e4f5a6b7c8d9e0f merged",
        "bypass=1 author=asha password_env=CCWATCH_DB_PASSWORD password_file=/etc/ccwatch/pw",
        # Errors ABOUT a secret-named key are not values.
        "mqtt -> password: unknown key; secrets are never written inline: name an environment "
        "variable or a file (password_env, password_file)",
        "password: unknown key; secrets are never written inline",
        "tickets -> 1 -> auth: unknown key; did you mean 'url'?",
    ],
)
def test_ordinary_text_is_left_alone(line: str) -> None:
    assert Redactor().text(line) == line


def test_redacting_twice_changes_nothing() -> None:
    redactor = Redactor()
    once = redactor.text(
        "password=hunter2hunter2 api_key=AbCdEfGh12345678wxyz Bearer abcdefghijklmnopq"
    )
    assert redactor.text(once) == once
    assert once == "password=**** api_key=AbCd...wxyz Bearer abcd...nopq"


def test_values_and_headers() -> None:
    redactor = Redactor([DSN_PASSWORD], tokens=[ROUTING_KEY])
    body = {
        "summary": f"routing {ROUTING_KEY} via db {DSN_PASSWORD}",
        "diagnostics": {"env": {"DB_PASSWORD": "hunter2hunter2", "PATH": "/usr/bin"}},
        "log_excerpt": ["ok", "Bearer abcdefghijklmnopqrstu"],
        "auth": {"user": "ameyo", "pin": 4711, "enabled": True},
        "api_key": "AbCdEfGh12345678wxyz",
    }
    redacted = redactor.value(body)
    assert redacted["summary"] == "routing R0UT...1e2f via db ****"
    assert redacted["diagnostics"]["env"] == {"DB_PASSWORD": MASK, "PATH": "/usr/bin"}
    assert redacted["log_excerpt"][1] == "Bearer abcd...rstu"
    assert redacted["auth"] == {"user": MASK, "pin": MASK, "enabled": True}
    assert redacted["api_key"] == "AbCd...wxyz"
    headers = redactor.headers(
        {
            "Authorization": "Bearer tok_1234567890abcdef",
            "Proxy-Authorization": "Basic YWdlbnQ6cGFzc3dvcmQxMjM=",
            "X-Api-Key": "k3y-0123456789abcd",
            "X-Auth-Token": "short",
            "X-Webhook-Secret": "0123456789abcdef0123",
            "A": "b",
        }
    )
    assert headers == {
        "Authorization": "Bearer tok_...cdef",
        "Proxy-Authorization": "Basic ****",
        "X-Api-Key": "k3y-...abcd",
        "X-Auth-Token": MASK,
        "X-Webhook-Secret": MASK,
        "A": "b",
    }


def test_configured_secrets_are_collected_with_their_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCWATCH_TEST_PD_KEY", ROUTING_KEY)
    monkeypatch.setenv("CCWATCH_TEST_SMTP_PASSWORD", "smtp-Pa55-word!")
    token_file = tmp_path / "token"
    token_file.write_text("http-t0ken-from-file\n")
    config = Config.model_validate(
        {
            "site": "blr1",
            "http": {"token_file": str(token_file)},
            "email": {"host": "smtp", "from": "a@b", "password_env": "CCWATCH_TEST_SMTP_PASSWORD"},
            "tickets": [{"type": "pagerduty", "routing_key_env": "CCWATCH_TEST_PD_KEY"}],
        }
    )
    assert set(secrets_from_config(config)) == {
        Secret(ROUTING_KEY, "identifier"),
        Secret("smtp-Pa55-word!", "password"),
        Secret("http-t0ken-from-file", "identifier"),
    }
    redactor = Redactor(secrets_from_config(config))
    line = f"smtp login smtp-Pa55-word! key {ROUTING_KEY} token http-t0ken-from-file"
    assert redactor.text(line) == "smtp login **** key R0UT...1e2f token http...file"


def test_a_configured_password_is_masked_whole_wherever_it_appears() -> None:
    password = "plain words are my pass"  # no pattern would recognise this as a secret
    redactor = Redactor([password])
    assert redactor.text(f"login failed: {password}!") == "login failed: ****!"
    assert redactor.value({"note": [f"x{password}x"]}) == {"note": ["x****x"]}


def test_redact_then_cut_never_keeps_the_start_of_a_straddling_secret() -> None:
    secret = "Zq8-configured-webhook-secret-value-41"
    redactor = Redactor([secret])
    prefix = ("upstream said no; " * 11)[:190]
    text = prefix + secret + " tail"
    # The old order (cut, then redact) kept the first 10 characters of the secret.
    assert secret[:10] in redactor.text(text[:200])
    shown = redact_then_cut(text, 200, redactor)
    assert len(shown) <= 200
    assert secret[:4] not in shown and shown == prefix + MASK + " tail"


def test_a_dead_letter_excerpt_is_redacted_before_it_is_cut() -> None:
    secret = "Kx9-upstream-echoed-the-api-secret-back-77"
    head = '{"error": "invalid signature", "detail": "' + ("no such route; " * 10)[:147]
    answer = head + secret + '"}'  # the secret straddles character 200
    with pytest.raises(PermanentUpstreamError) as raised:
        check_status(400, answer, None, "webhook", Redactor([secret]), now=0.0)
    message = str(raised.value)
    for start in range(len(secret) - 3):
        assert secret[start : start + 4] not in message, message


def test_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []
    formatter = JournalFormatter(under_journald=False)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(formatter.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter(Redactor(tokens=[ROUTING_KEY])))
    log = logging.getLogger("ccwatch.test_redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("sending to PagerDuty with key %s", ROUTING_KEY)
        try:
            raise ValueError(f"bad dsn postgresql://u:{DSN_PASSWORD}@db/x")
        except ValueError:
            log.exception("retention failed")
    finally:
        log.removeHandler(handler)
    text = "\n".join(records)
    assert ROUTING_KEY not in text and DSN_PASSWORD not in text
    assert "R0UT...1e2f" in text
    assert "ValueError: bad dsn postgresql://u:****@db/x" in text


def _inline_password_config(tmp_path: Path) -> dict[str, Any]:
    config = base_config(tmp_path)
    config["mqtt"] = {**config["mqtt"], "password": "hunter2hunter2"}
    return config


def test_check_config_names_an_inline_password_key_readably(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_inline_password_config(tmp_path)))
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "password" in line]
    assert "mqtt -> password: unknown key; secrets are never written inline" in line
    assert "hunter2" not in result.stderr
    # The same text through the log redaction (as a refused SIGHUP reload logs it).
    assert Redactor(["hunter2hunter2"]).text(line) == line


def test_a_refused_reload_logs_the_inline_password_key_readably(
    tmp_path: Path, daemon_factory: Callable[..., Any]
) -> None:
    daemon = daemon_factory(base_config(tmp_path))
    daemon.write_config(_inline_password_config(tmp_path))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "config reload refused" in daemon.log(), timeout=15)
    log = daemon.log()
    assert "mqtt -> password: unknown key" in log, log
    assert "hunter2" not in log


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="*."),
        min_size=4,
        max_size=60,
    ),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_a_configured_secret_never_survives(secret: str, before: str, after: str) -> None:
    redacted = Redactor([secret]).text(before + secret + after)
    assert secret not in redacted


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        min_size=16,
        max_size=64,
    )
)
def test_identifiers_show_exactly_four_and_four_and_passwords_nothing(secret: str) -> None:
    shown = cut(secret)
    assert shown == f"{secret[:4]}...{secret[-4:]}"
    assert Redactor().text(f"api_key={secret}") == f"api_key={shown}"
    assert Redactor().text(f"password={secret}") == "password=****"
