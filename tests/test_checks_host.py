"""Host check types against fixture probes (the psutil/os functions are arguments), and
once each against this machine."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest

from ccwatch.checklists.checks.base import CommandOutput, DiskSpace, MemoryUse, ProcessInfo
from ccwatch.checklists.checks.ntp import parse_chrony, parse_timesyncd
from ccwatch.checklists.result import Status
from tests.test_checklist_support import env, run

GIB = 1024**3


def disk(free_gib: float, total_gib: float = 100, inodes_free: int = 900, inodes: int = 1000):
    return lambda path: DiskSpace(int(total_gib * GIB), int(free_gib * GIB), inodes, inodes_free)


@pytest.mark.parametrize(
    ("free_gib", "status"), [(50, Status.OK), (15, Status.WARN), (9.9, Status.FAIL)]
)
def test_disk_free_percent_thresholds(free_gib: float, status: Status) -> None:
    outcome = run("disk", env(disk_space=disk(free_gib)), path="/")
    assert outcome.status is status
    assert "% free" in outcome.value
    assert "fail below 10%" in outcome.threshold
    assert "free space on /" in outcome.hint


def test_disk_bytes_and_inodes() -> None:
    low_bytes = run("disk", env(disk_space=disk(40)), fail_free_bytes="50GiB")
    assert low_bytes.status is Status.FAIL
    no_inodes = run("disk", env(disk_space=disk(50, inodes_free=10)))
    assert no_inodes.status is Status.FAIL
    assert "inodes" in no_inodes.hint
    # btrfs/overlay report no inode table: not a failure
    assert run("disk", env(disk_space=disk(50, inodes=0, inodes_free=0))).status is Status.OK


def test_disk_missing_path_fails_with_a_hint() -> None:
    def missing(path: str) -> DiskSpace:
        raise FileNotFoundError(path)

    outcome = run("disk", env(disk_space=missing), path="/srv/recordings")
    assert outcome.status is Status.FAIL
    assert "/srv/recordings" in outcome.hint


@pytest.mark.parametrize(
    ("available", "status"), [(50, Status.OK), (15, Status.WARN), (5, Status.FAIL)]
)
def test_memory(available: int, status: Status) -> None:
    probe = lambda: MemoryUse(100 * GIB, available * GIB)  # noqa: E731
    outcome = run("memory", env(virtual_memory=probe))
    assert outcome.status is status
    assert outcome.value.startswith(f"{available}.0% available")


def test_swap_used_and_absent() -> None:
    assert run("swap", env(swap_memory=lambda: MemoryUse(8 * GIB, 7 * GIB))).status is Status.OK
    assert run("swap", env(swap_memory=lambda: MemoryUse(8 * GIB, 1 * GIB))).status is Status.FAIL
    none = run("swap", env(swap_memory=lambda: MemoryUse(0, 0)))
    assert none.status is Status.SKIPPED
    assert "no swap" in none.value


def test_cpu_load_is_per_cpu() -> None:
    busy = env(load_average=lambda: (9.0, 9.0, 9.0), cpu_count=lambda: 4)
    assert run("cpu_load", busy).status is Status.FAIL  # 2.25 per CPU
    calm = env(load_average=lambda: (9.0, 9.0, 1.0), cpu_count=lambda: 4)
    outcome = run("cpu_load", calm, period="15m")
    assert outcome.status is Status.OK
    assert outcome.value.startswith("0.25 per CPU")


PROCESSES = [
    ProcessInfo(1, "systemd", ("/sbin/init",)),
    ProcessInfo(10, "postgres", ("/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/pg")),
    ProcessInfo(11, "postgres", ("postgres: checkpointer",)),
    ProcessInfo(20, "java", ("/usr/bin/java", "-jar", "/opt/ameyo/acd.jar")),
    ProcessInfo(21, "java", ("/usr/bin/java", "-jar", "/opt/ameyo/ivr.jar")),
]


def test_process_counts_by_name_and_command_line() -> None:
    probes = env(processes=lambda: PROCESSES)
    assert run("process", probes, name="postgres", min_count=2).status is Status.OK
    acd = run("process", probes, name="java", cmdline_contains="acd.jar", max_count=1)
    assert (acd.status, acd.value) == (Status.OK, "1 running")
    dialer = run("process", probes, name="java", cmdline_contains="dialer", service="ameyo-dialer")
    assert dialer.status is Status.FAIL
    assert "systemctl status ameyo-dialer" in dialer.hint
    too_many = run("process", probes, name="java", max_count=1)
    assert too_many.status is Status.FAIL


def test_ntp_parsers() -> None:
    chrony = "Reference ID    : A9FEA97B\nSystem time     : 0.000250000 seconds slow of NTP time\n"
    chrony += "Leap status     : Normal\n"
    assert parse_chrony(chrony) == (-0.00025, True)
    unsynced = chrony.replace("Normal", "Not synchronised")
    assert parse_chrony(unsynced) == (-0.00025, False)
    assert parse_timesyncd("       Server: 10.0.0.1\n       Offset: +2.345ms\n") == pytest.approx(
        0.002345
    )
    assert parse_timesyncd("Offset: -1.5s") == -1.5


def _commands(outputs: dict[str, CommandOutput]):
    async def fake(argv: Sequence[str], timeout: float | None) -> CommandOutput:
        return outputs.get(argv[0] + " " + argv[1], CommandOutput(1, "failed"))

    return fake


def test_ntp_from_chrony_then_timesyncd_then_skipped() -> None:
    chrony_out = "System time     : 2.5 seconds fast of NTP time\nLeap status     : Normal\n"
    chrony = env(
        which=lambda name: "/usr/bin/chronyc" if name == "chronyc" else None,
        run_command=_commands({"chronyc -n": CommandOutput(0, chrony_out)}),
    )
    outcome = run("ntp", chrony)
    assert (outcome.status, outcome.value) == (Status.FAIL, "offset +2500.0 ms (chrony)")

    timesyncd = env(
        which=lambda name: "/usr/bin/timedatectl" if name == "timedatectl" else None,
        run_command=_commands({"timedatectl timesync-status": CommandOutput(0, "Offset: +40ms")}),
    )
    assert run("ntp", timesyncd).status is Status.OK

    nothing = run("ntp", env(which=lambda name: None))
    assert nothing.status is Status.SKIPPED
    assert "neither chronyc nor timedatectl" in nothing.value


def test_command_exit_codes_and_first_lines(tmp_path) -> None:
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\necho line one\necho line two\necho line three\nexit "$1"\n')
    ok = run("command", argv=["/bin/sh", str(script), "0"], output_lines=2)
    assert ok.status is Status.OK
    assert ok.value == "exit code 0: line one"
    assert ok.detail == "line one\nline two"
    warn = run("command", argv=["/bin/sh", str(script), "3"], warn_exit_codes=[3])
    assert warn.status is Status.WARN
    failed = run("command", argv=["/bin/sh", str(script), "2"])
    assert failed.status is Status.FAIL
    assert "run `" in failed.hint


def test_command_is_not_run_through_a_shell(tmp_path) -> None:
    marker = tmp_path / "pwned"
    outcome = run("command", argv=["echo", f"; touch {marker}"])
    assert outcome.status is Status.OK
    assert not marker.exists()
    missing = run("command", argv=["no-such-program-ccwatch"])
    assert (missing.status, missing.value) == (
        Status.FAIL,
        "no-such-program-ccwatch: command not found",
    )


def test_real_host_checks_on_this_machine() -> None:
    for check_type, values in [
        ("disk", {"path": "/"}),
        ("memory", {}),
        ("cpu_load", {}),
        ("swap", {}),
        ("ntp", {}),
        ("process", {"name": "python3" if "python3" in sys.executable else "python"}),
        ("command", {"argv": ["uname", "-s"]}),
    ]:
        outcome = run(check_type, **values)
        assert outcome.status is not Status.ERROR, (check_type, outcome)
        assert outcome.value, check_type


def test_command_with_a_lot_of_output_keeps_the_first_lines() -> None:
    outcome = run("command", argv=["seq", "1", "200000"], output_lines=3)  # about 1.3 MB
    assert (outcome.status, outcome.value, outcome.detail) == (
        Status.OK,
        "exit code 0: 1",
        "1\n2\n3",
    )
