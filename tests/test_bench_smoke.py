"""Benchmarks stay runnable as the schema and code move (figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_store_bench_runs_on_the_current_schema() -> None:
    result = subprocess.run(
        [sys.executable, "bench/store.py", "--writes", "20"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "store thread (chosen)" in result.stdout and "on the event loop" in result.stdout


def test_desks_bench_polls_a_tiny_pass_against_the_fake_clickup() -> None:
    result = subprocess.run(
        [sys.executable, "bench/desks.py", "--tickets", "3", "--rpm", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "requests_per_minute 600" in result.stdout and "bare aiohttp GET loop" in result.stdout


def test_every_bench_imports_against_the_current_code() -> None:
    """A bench that no longer imports is found here, not on the day someone measures."""
    for bench in sorted((REPO / "bench").glob("*.py")):
        result = subprocess.run(
            [sys.executable, "-c", f"import runpy; runpy.run_path({str(bench)!r}, run_name='bench')"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"{bench.name}: {result.stderr[-2000:]}"


def test_fleet_bench_runs_at_tiny_numbers() -> None:
    result = subprocess.run(
        [sys.executable, "bench/fleet.py", "--sites", "2", "--measure", "1", "--workers", "2",
         "--failover-sites", "2", "--kills", "1", "--ttl", "2", "--writes", "20"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "SQLite (single host, default)" in out
    if "need PostgreSQL: skipped" not in out:
        assert "2 sites (   10 msg/s): CPU" in out and "failover over 1 kill(s)" in out
        assert "PostgreSQL + site-lease fence" in out
