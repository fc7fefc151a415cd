"""The one redaction step: configured secrets and secret-looking text, cut to 4 + 4."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccwatch.config import Config
from ccwatch.logs import JournalFormatter
from ccwatch.redact import RedactingFilter, Redactor, cut, secrets_from_config

ROUTING_KEY = "R0UT1NGKEYe93b2a7c4d5f6a8b9c0d1e2f"
DSN_PASSWORD = "Am3yo-DB-pa55word"


def test_cut_keeps_first_and_last_four() -> None:
    assert cut("sk_live_51HxYzAbCdEfGhIjKlMnOp") == "sk_l...MnOp"
    assert cut("short1234") == "****"  # 4 + 4 of 9 characters would give it away


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        ("connect failed password=S3cr3tPassw0rd! host=db", "S3cr3tPassw0rd!", "S3cr...0rd!"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "eyJzdWIiOiIxIn0",
            "eyJh",
        ),
        ("GET /x authorization=Basic YWdlbnQ6cGFzc3dvcmQxMjM=", "YWdlbnQ6cGFzc3dvcmQxMjM=", "YWdl"),
        ("dsn postgresql://ameyo:Am3yo-DB-pa55word@10.0.0.5:5432/ameyodb", DSN_PASSWORD, "Am3y"),
        ('{"api_key": "AbCdEfGh12345678wxyz"}', "AbCdEfGh12345678wxyz", "AbCd...wxyz"),
        ("X-Api-Key: 9f8e7d6c5b4a39281706f5e4", "9f8e7d6c5b4a39281706f5e4", "9f8e...f5e4"),
        (
            "token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
            "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
            "ghp_",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "AKIA...MPLE"),
        ("slack xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl", "xoxb"),
        ("key=Zk9AbcDEF1234567890abcdefGHIJKLmnop", "Zk9AbcDEF1234567890abcdefGHIJKLmnop", "Zk9A"),
    ],
)
def test_secret_looking_text_is_cut(line: str, secret: str, kept: str) -> None:
    redacted = Redactor().text(line)
    assert secret not in redacted
    assert kept in redacted


@pytest.mark.parametrize(
    "line",
    [
        "incident ccwatch:blr1:acd:3f2a9c1e-8d4b-4f0e-9a6b-1c2d3e4f5a6b:3 opened",
        "23 of 100 agents cannot take calls (23.0%)",
        "sha256=9b74c9897bac770ffc029102a200c5de8a2f0c8d8f1bd1e3b3a5c1e1f0a6c2d4",
        "passwords are never logged",
    ],
)
def test_ordinary_text_is_left_alone(line: str) -> None:
    assert Redactor().text(line) == line


def test_values_and_headers() -> None:
    redactor = Redactor([ROUTING_KEY])
    body = {
        "summary": f"routing {ROUTING_KEY}",
        "diagnostics": {"env": {"DB_PASSWORD": "hunter2hunter2", "PATH": "/usr/bin"}},
        "log_excerpt": ["ok", "Bearer abcdefghijklmnopqrstu"],
    }
    redacted = redactor.value(body)
    assert redacted["summary"] == "routing R0UT...1e2f"
    assert redacted["diagnostics"]["env"] == {"DB_PASSWORD": "hunt...ter2", "PATH": "/usr/bin"}
    assert redacted["log_excerpt"][1] == "Bearer abcd...rstu"
    headers = redactor.headers(
        {"Authorization": "Bearer tok_1234567890abcdef", "X-Api-Key": "k3y-0123456789", "A": "b"}
    )
    assert headers == {"Authorization": "Bearer tok_...cdef", "X-Api-Key": "k3y-...6789", "A": "b"}


def test_configured_secrets_are_collected_from_env_and_file(
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
        ROUTING_KEY,
        "smtp-Pa55-word!",
        "http-t0ken-from-file",
    }


def test_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []
    formatter = JournalFormatter(under_journald=False)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(formatter.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter(Redactor([ROUTING_KEY])))
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
    assert "ValueError: bad dsn postgresql://u:Am3y...word@db/x" in text


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
        min_size=12,
        max_size=64,
    )
)
def test_cut_shows_exactly_four_and_four(secret: str) -> None:
    shown = cut(secret)
    assert shown == f"{secret[:4]}...{secret[-4:]}"
    assert Redactor().text(f"password={secret}") == f"password={shown}"
