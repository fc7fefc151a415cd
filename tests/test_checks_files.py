"""file_age, backup_age and log_errors on real files with set modification times."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from ccwatch.checklists.result import Status
from tests.test_checklist_support import NOW, env, run

HOUR = 3600.0
DAY = 86400.0


def touch(path: Path, age_seconds: float, content: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.utime(path, (NOW - age_seconds, NOW - age_seconds))
    return path


def test_file_age(tmp_path: Path) -> None:
    log = touch(tmp_path / "acd.log", 10 * 60)
    fixed = env(clock=NOW)
    fresh = run("file_age", fixed, path=str(log), fail_age="1h")
    assert (fresh.status, fresh.value) == (Status.OK, "last written 10 min ago")
    touch(log, 3 * HOUR)
    stale = run("file_age", fixed, path=str(log), fail_age="1h", warn_age="30m", writer="the ACD")
    assert stale.status is Status.FAIL
    assert stale.hint.startswith("the ACD has stopped writing")
    touch(log, 45 * 60)
    assert (
        run("file_age", fixed, path=str(log), fail_age="1h", warn_age="30m").status is Status.WARN
    )
    missing = run("file_age", fixed, path=str(tmp_path / "nope.log"))
    assert missing.status is Status.FAIL
    assert "does not exist" in missing.value


def test_backup_age_picks_the_newest_matching_file(tmp_path: Path) -> None:
    backups = tmp_path / "voicelogs"
    touch(backups / "2026-09" / "voicelogs-2026-09.tar.gz", 60 * DAY, "a" * 100)
    touch(backups / "2026-10" / "voicelogs-2026-10.tar.gz", 20 * DAY, "a" * 100)
    touch(backups / "2026-11" / "voicelogs-2026-11.tar.gz.partial", 1 * DAY, "a" * 100)
    touch(backups / "2026-11" / "empty.tar.gz", 1 * DAY, "")
    fixed = env(clock=NOW)
    outcome = run("backup_age", fixed, directory=str(backups), pattern="**/*.tar.gz", min_size=10)
    assert outcome.status is Status.OK
    assert outcome.value.startswith("voicelogs-2026-10.tar.gz (100 B) is 20.0 days old")
    stale = run(
        "backup_age",
        fixed,
        directory=str(backups),
        pattern="**/*.tar.gz",
        min_size=10,
        fail_age="14d",
    )
    assert stale.status is Status.FAIL
    none = run("backup_age", fixed, directory=str(backups), pattern="*.zip")
    assert (none.status, none.value) == (Status.FAIL, f"no *.zip in {backups}")
    absent = run("backup_age", fixed, directory=str(tmp_path / "unmounted"))
    assert absent.status is Status.FAIL
    assert "mount" in absent.hint


def _stamp(age_hours: float) -> str:
    return datetime.fromtimestamp(NOW - age_hours * HOUR).strftime("%Y-%m-%d %H:%M:%S,123")


def test_log_errors_counts_only_the_window(tmp_path: Path) -> None:
    lines = [
        f"{_stamp(30)} ERROR old failure, outside the window",
        f"{_stamp(20)} INFO call 1 answered",
        f"{_stamp(10)} ERROR SIP trunk down",
        "    at com.ameyo.Trunk.connect(Trunk.java:42)  ERROR in a stack trace line",
        f"{_stamp(2)} FATAL dialer stopped",
        f"{_stamp(1)} INFO recovered",
    ]
    log = touch(tmp_path / "acd.log", 60, "\n".join(lines) + "\n")
    fixed = env(clock=NOW)
    outcome = run("log_errors", fixed, path=str(log), fail_above=2)
    assert outcome.status is Status.FAIL
    assert outcome.value.startswith("3 lines matching")
    assert outcome.detail.splitlines()[-1].endswith("FATAL dialer stopped")
    few = run("log_errors", fixed, path=str(log), window="5h", warn_above=0, fail_above=5)
    assert (few.status, few.value.split()[0]) == (Status.WARN, "1")
    clean = run("log_errors", fixed, path=str(log), pattern="OutOfMemory")
    assert clean.status is Status.OK


def test_log_errors_custom_timestamp_and_no_timestamps(tmp_path: Path) -> None:
    recent = datetime.fromtimestamp(NOW - HOUR).strftime("%d/%m/%Y %H:%M")
    old = datetime.fromtimestamp(NOW - 3 * DAY).strftime("%d/%m/%Y %H:%M")
    log = touch(tmp_path / "ivr.log", 0, f"[{old}] ERROR a\n[{recent}] ERROR b\n")
    outcome = run(
        "log_errors",
        env(clock=NOW),
        path=str(log),
        timestamp_regex=r"^\[(\d\d/\d\d/\d{4} \d\d:\d\d)\]",
        timestamp_format="%d/%m/%Y %H:%M",
    )
    assert outcome.value.startswith("1 lines matching")
    bare = touch(tmp_path / "bare.log", 0, "ERROR one\nok\nERROR two\n")
    counted = run("log_errors", env(clock=NOW), path=str(bare))
    assert counted.value.startswith("2 lines matching")
    assert "no timestamps recognised" in counted.value


def test_log_errors_reads_only_the_tail_of_a_huge_log(tmp_path: Path) -> None:
    stamp = _stamp(1)
    body = "".join(f"{stamp} ERROR number {i}\n" for i in range(1000))
    log = touch(tmp_path / "big.log", 0, body)
    outcome = run("log_errors", env(clock=NOW), path=str(log), max_bytes=1000, fail_above=None)
    count = int(outcome.value.split()[0])
    assert 0 < count < 40
