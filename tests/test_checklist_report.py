"""The report: text, JSON, and the e-mail (through a real SMTP server), rendered in
headless Chromium to a screenshot kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import email
import json
import shutil
import subprocess
import tempfile
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ccwatch.checklists.definition import load_checklist_file
from ccwatch.checklists.report import render_html, render_json, render_text, subject
from ccwatch.checklists.result import ChecklistRun, CheckResult, Status
from ccwatch.checklists.service import send_report
from tests.conftest import REPO_ROOT, free_port
from tests.test_checklist_support import config, write_checklist

ARTIFACTS = REPO_ROOT / "test-artifacts"


def result(
    id: str,
    type: str,
    status: Status,
    value: str,
    threshold: str = "",
    hint: str = "",
    detail: str = "",
    description: str = "",
) -> CheckResult:
    return CheckResult(id, type, description, status, value, threshold, hint, detail, 0.01)


def sample_run() -> ChecklistRun:
    ok = [
        result("memory", "memory", Status.OK, "62.4% available (14.6 GiB of 23.5 GiB)"),
        result("cpu_load", "cpu_load", Status.OK, "0.31 per CPU (15m load 2.48 on 8 CPUs)"),
        result("swap", "swap", Status.OK, "2.1% used (84.0 MiB of 4.0 GiB)"),
        result("clock", "ntp", Status.OK, "offset +0.4 ms (chrony)"),
        result("postgres_process", "process", Status.OK, "14 running"),
        result("ivr_process", "process", Status.OK, "1 running"),
        result("dialer_process", "process", Status.OK, "1 running"),
        result("postgres_port", "tcp_port", Status.OK, "127.0.0.1:5432: connected in 0.2 ms"),
        result(
            "postgres",
            "postgres",
            Status.OK,
            "ameyodb: SELECT 1 in 0.6 ms, size 182.4 GiB, longest transaction 3s",
        ),
        result(
            "pg_isready",
            "command",
            Status.OK,
            "exit code 0: 127.0.0.1:5432 - accepting connections",
        ),
        result(
            "ameyodb_retention",
            "retention",
            Status.OK,
            "0 rows older than the cutoff in 3 table(s)",
        ),
        result("telemetry", "mqtt_freshness", Status.OK, "5 components fresh"),
        result(
            "web_console_certificate",
            "certificate",
            Status.OK,
            "127.0.0.1:8443 expires 2027-08-14 (264 days left)",
        ),
        result("acd_log_written", "file_age", Status.OK, "last written 4s ago"),
    ]
    problems = [
        result(
            "sip_port",
            "tcp_port",
            Status.FAIL,
            "127.0.0.1:5060: Connection refused",
            "connects within 3s",
            "start the SIP server or check that it listens on 127.0.0.1:5060",
            description="SIP signalling answers on TCP 5060",
        ),
        result(
            "acd_log_errors",
            "log_errors",
            Status.WARN,
            "7 lines matching /\\b(ERROR|FATAL)\\b/ in the last 24h",
            "fail above 100 lines, warn above 0 lines",
            "read the errors in /var/log/ameyo/acd.log (latest below)",
            "2026-11-23 05:58:01 ERROR trunk T2 registration timed out\n"
            "2026-11-23 06:02:44 ERROR <campaign 'outbound-7'> & dialer link lost",
        ),
        result(
            "disk_root",
            "disk",
            Status.FAIL,
            "6.2% free (15.6 GiB of 252.0 GiB), inodes 97.5% free",
            "fail below 10%, warn below 20%; inodes fail below 5%",
            "free space on /: rotate or compress logs, move old recordings/backups",
            description="Free space and inodes on /",
        ),
    ]
    # File order: a problem in the middle, so "failures first" is the report's doing.
    results = ok[:3] + problems[:1] + ok[3:8] + problems[1:] + ok[8:]
    return ChecklistRun("daily", "blr1", 1795482004.0, 1.23, results)


def test_subject_reads_at_a_glance() -> None:
    assert subject(sample_run()) == "[ccwatch] blr1 daily checklist: 2 FAIL, 1 WARN, 14 OK"
    clean = ChecklistRun("daily", "blr1", 0, 0.5, [result("m", "memory", Status.OK, "x")])
    assert subject(clean) == "[ccwatch] blr1 daily checklist: all 1 OK"


def test_text_report_puts_failures_first_with_value_threshold_and_hint() -> None:
    text = render_text(sample_run())
    lines = text.splitlines()
    assert lines[0].startswith("blr1 daily checklist, 2026-11-24 01:00 UTC")
    assert "3 of 17 checks need attention (2 FAIL, 1 WARN, 14 OK" in lines[0]
    statuses = [line.split()[0] for line in lines[2:] if line and not line.startswith(" ")]
    assert statuses == ["FAIL", "FAIL", "WARN"] + ["OK"] * 14
    assert lines[2].startswith("FAIL    sip_port (tcp_port)")
    assert "threshold: connects within 3s" in lines[3]
    assert "what to do: start the SIP server" in lines[4]


def test_json_report() -> None:
    data = json.loads(render_json(sample_run()))
    assert data["counts"] == {"ok": 14, "warn": 1, "fail": 2, "error": 0, "skipped": 0}
    assert [r["id"] for r in data["results"][:3]] == ["sip_port", "disk_root", "acd_log_errors"]
    assert data["results"][0]["threshold"] == "connects within 3s"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def _received(tmp_path: Path, smtp_server: Any, recipients: str) -> tuple[list[str], EmailMessage]:
    controller, inbox = smtp_server
    cfg = config(
        email={
            "host": "127.0.0.1",
            "port": controller.port,
            "starttls": False,
            "from": "ccwatch@blr1.example.com",
            "to": ["it-team@example.com"],
        }
    )
    checklist = load_checklist_file(
        write_checklist(
            tmp_path,
            "daily",
            f"recipients: {recipients}\n"
            "schedule: {cron: '30 6 * * *', timezone: Asia/Kolkata}\n"
            "checks:\n  - {id: m, type: memory}\n",
        )
    )
    asyncio.run(send_report(sample_run(), checklist, cfg.email))
    ((rcpt, raw),) = inbox.messages
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return rcpt, message


def test_email_is_multipart_text_and_html_with_failures_first(
    tmp_path: Path, smtp_server: Any
) -> None:
    rcpt, message = _received(tmp_path, smtp_server, "[noc@example.com, cc-admin@example.com]")
    assert rcpt == ["noc@example.com", "cc-admin@example.com"]
    assert message["Subject"] == "[ccwatch] blr1 daily checklist: 2 FAIL, 1 WARN, 14 OK"
    assert message["From"] == "ccwatch@blr1.example.com"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text is not None and html_part is not None
    plain, html = text.get_content(), html_part.get_content()
    # the checklist's time zone
    assert "2026-11-24 06:30 IST" in plain
    for body in (plain, html):
        assert body.index("sip_port") < body.index("disk_root") < body.index("acd_log_errors")
        assert body.index("acd_log_errors") < body.index("memory")
    assert "6.2% free (15.6 GiB of 252.0 GiB)" in html
    assert "fail below 10%, warn below 20%" in html
    assert "rotate or compress logs" in html
    assert "&lt;campaign &#x27;outbound-7&#x27;&gt; &amp; dialer" in html  # escaped
    assert "http" not in html.replace("http-equiv", "")  # no external assets
    assert "<link" not in html and "<script" not in html and "<style" not in html


def test_email_defaults_to_the_configured_recipients(tmp_path: Path, smtp_server: Any) -> None:
    rcpt, _ = _received(tmp_path, smtp_server, "[]")
    assert rcpt == ["it-team@example.com"]


def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_run()), encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "checklist-email.png"
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={screenshot}",
                "--window-size=900,1400",
                "--hide-scrollbars",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
