"""The runner: concurrency, per-check timeouts, exceptions become `error`, severity."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from ccwatch.checklists.checks.base import MemoryUse
from ccwatch.checklists.definition import Checklist, load_checklist_file
from ccwatch.checklists.result import Status
from ccwatch.checklists.runner import run_checklist
from tests.test_checklist_support import env, write_checklist

GIB = 1024**3


def checklist(tmp_path: Path, text: str) -> Checklist:
    return load_checklist_file(write_checklist(tmp_path, "t", text))


def test_checks_run_concurrently(tmp_path: Path) -> None:
    # Each probe waits for the other one: this only completes if both run at once.
    barrier = threading.Barrier(2, timeout=5)

    def memory() -> MemoryUse:
        barrier.wait()
        return MemoryUse(100 * GIB, 50 * GIB)

    def swap() -> MemoryUse:
        barrier.wait()
        return MemoryUse(0, 0)

    text = "checks:\n  - {id: mem, type: memory}\n  - {id: swap, type: swap}\n"
    run = asyncio.run(
        run_checklist(checklist(tmp_path, text), env(virtual_memory=memory, swap_memory=swap))
    )
    assert [(r.id, r.status) for r in run.results] == [("mem", Status.OK), ("swap", Status.SKIPPED)]


def test_timeout_and_exception_are_errors_and_the_run_goes_on(tmp_path: Path) -> None:
    release = threading.Event()

    def hanging_disk(path: str):  # type: ignore[no-untyped-def]
        release.wait(10)
        raise AssertionError("unreachable in the test")

    def broken_memory() -> MemoryUse:
        raise RuntimeError("/proc/meminfo unreadable")

    text = """
timeout: 300ms
checks:
  - {id: disk, type: disk}
  - {id: mem, type: memory}
  - {id: swap, type: swap}
  - {id: slow_disk, type: disk, timeout: 100ms}
"""
    probes = env(
        disk_space=hanging_disk,
        virtual_memory=broken_memory,
        swap_memory=lambda: MemoryUse(GIB, GIB),
    )
    try:
        run = asyncio.run(run_checklist(checklist(tmp_path, text), probes))
    finally:
        release.set()
    results = {r.id: r for r in run.results}
    assert results["disk"].status is Status.ERROR
    assert results["disk"].value == "timed out after 0.3s"
    assert results["slow_disk"].value == "timed out after 100ms"
    assert results["mem"].status is Status.ERROR
    assert results["mem"].value == "RuntimeError: /proc/meminfo unreadable"
    assert results["mem"].hint
    assert results["swap"].status is Status.OK
    assert run.failed


def test_severity_warn_downgrades_a_failure(tmp_path: Path) -> None:
    text = """
checks:
  - {id: hard, type: memory}
  - {id: soft, type: memory, severity: warn}
  - {id: disabled, type: memory, enabled: false}
"""
    starving = env(virtual_memory=lambda: MemoryUse(100 * GIB, 1 * GIB))
    run = asyncio.run(run_checklist(checklist(tmp_path, text), starving))
    assert [(r.id, r.status) for r in run.results] == [("hard", Status.FAIL), ("soft", Status.WARN)]
    assert run.counts[Status.FAIL] == 1


def test_a_killed_command_leaves_no_process_behind(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    script = tmp_path / "slow.sh"
    script.write_text(f"sleep 1\ntouch {marker}\n")
    text = f"checks:\n  - {{id: slow, type: command, timeout: 200ms, params: {{argv: [/bin/sh, {script}]}}}}\n"
    run = asyncio.run(run_checklist(checklist(tmp_path, text), env()))
    assert run.results[0].status is Status.ERROR
    time.sleep(1.5)  # past the script's own sleep: it would have touched by now
    assert not marker.exists()
