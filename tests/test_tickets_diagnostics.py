"""Diagnostics attached to an open ticket: host facts from fixtures, log tails, size cap."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from typing import Any

from ccwatch.redact import Redactor
from ccwatch.tickets.diagnostics import (
    DiagnosticsLimits,
    HostProbe,
    collect_diagnostics,
    tail_lines,
)

Memory = namedtuple("Memory", "total available percent")
Disk = namedtuple("Disk", "free percent")
Rss = namedtuple("Rss", "rss")

PROCESSES = [
    {"pid": 101, "name": "java", "cmdline": ["/opt/ameyo/bin/acd-server", "-c"], "status": "sleeping", "memory_info": Rss(512 << 20)},
    {"pid": 102, "name": "java", "cmdline": ["/opt/ameyo/bin/acd-server"], "status": "zombie", "memory_info": Rss(0)},
    {"pid": 200, "name": "asterisk", "cmdline": ["asterisk", "-f"], "status": "running", "memory_info": Rss(64 << 20)},
]  # fmt: skip

PROBE = HostProbe(
    loadavg=lambda: (3.456, 2.0, 1.0),
    memory=lambda: Memory(16 << 30, 2 << 30, 87.5),
    disk=lambda path: Disk(5 << 30, 91.0),
    processes=lambda: PROCESSES,
    cpu_count=lambda: 4,
)


def test_host_facts_and_process_states(tmp_path: Path) -> None:
    diagnostics = collect_diagnostics(
        metrics={"agents_unable_to_take_calls": 23, "seats": 100},
        process_names=["acd-server", "asterisk", "voicelogd"],
        log_files=[],
        probe=PROBE,
    )
    host = diagnostics["host"]
    assert host["load"] == {"1m": 3.46, "5m": 2.0, "15m": 1.0}
    assert host["memory"]["used_percent"] == 87.5
    assert host["disk"]["/"]["used_percent"] == 91.0
    acd = host["processes"]["acd-server"]
    assert acd["running"] is True and acd["count"] == 2
    assert acd["statuses"] == ["sleeping", "zombie"]
    assert host["processes"]["asterisk"]["running"] is True
    assert host["processes"]["voicelogd"] == {
        "running": False,
        "count": 0,
        "statuses": [],
        "instances": [],
    }
    assert diagnostics["metrics"]["agents_unable_to_take_calls"] == 23


def test_real_host_facts_have_the_same_shape() -> None:
    diagnostics = collect_diagnostics(metrics=None, process_names=["python3"], log_files=[])
    assert set(diagnostics["host"]) >= {"load", "memory", "disk", "processes"}


def test_log_tail_takes_the_last_lines_of_each_file(tmp_path: Path) -> None:
    acd_log = tmp_path / "acd.log"
    acd_log.write_text("".join(f"line {n}\n" for n in range(1, 10_001)))
    ivr_log = tmp_path / "ivr.log"
    ivr_log.write_text("ivr started\nivr: trunk 3 down\n")
    diagnostics = collect_diagnostics(
        metrics=None,
        process_names=[],
        log_files=[acd_log, ivr_log, tmp_path / "missing.log"],
        probe=PROBE,
        limits=DiagnosticsLimits(log_lines=3),
    )
    assert diagnostics["log_excerpt"] == [
        f"==> {acd_log} <==",
        "line 9998",
        "line 9999",
        "line 10000",
        f"==> {ivr_log} <==",
        "ivr started",
        "ivr: trunk 3 down",
        f"==> {tmp_path / 'missing.log'} <==",
        f"(cannot read {tmp_path / 'missing.log'}: No such file or directory)",
    ]


def test_size_cap_drops_oldest_log_lines_first(tmp_path: Path) -> None:
    log = tmp_path / "dialer.log"
    log.write_text("".join(f"{n:05d} " + "x" * 300 + "\n" for n in range(200)))
    diagnostics = collect_diagnostics(
        metrics={"calls_offered": 400},
        process_names=["acd-server"],
        log_files=[log],
        probe=PROBE,
        limits=DiagnosticsLimits(log_lines=200, max_bytes=8 * 1024),
    )
    assert len(json.dumps(diagnostics).encode()) <= 8 * 1024
    assert diagnostics["truncated"] is True
    assert diagnostics["log_excerpt"][-1].startswith("00199 ")
    assert "processes" in diagnostics["host"]
    assert len(tail_lines(log, 5)) == 5


def test_secrets_in_log_lines_are_cut_by_the_redaction_step(tmp_path: Path) -> None:
    log = tmp_path / "crm.log"
    log.write_text(
        "10:00 INFO connecting postgresql://ameyo:Am3yoDbPassw0rd@10.0.0.5/ameyodb\n"
        "10:01 ERROR POST /crm 401 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n"
        "10:02 WARN retrying with api_key=AbCdEfGh12345678ZyXwVuTs\n"
    )
    diagnostics: dict[str, Any] = collect_diagnostics(
        metrics=None, process_names=[], log_files=[log], probe=PROBE
    )
    text = json.dumps(Redactor().value(diagnostics))
    for secret in ("Am3yoDbPassw0rd", "eyJzdWIiOiJ4In0", "AbCdEfGh12345678ZyXwVuTs"):
        assert secret not in text
    assert "ameyo:****@10.0.0.5" in text and "AbCd...VuTs" in text  # passwords: never shown
