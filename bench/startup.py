"""Start-up time to /readyz 200 and RSS after start, beside `python -c "import ccwatch"`.

Both measured here, in the same run, each repeated; medians printed. Targets (issue 2):
ready within 1.5 s, RSS under 60 MB.

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import Mosquitto, free_port


def baseline_import(runs: int) -> tuple[float, float]:
    """Wall time and RSS of a bare interpreter that has imported ccwatch.

    RSS is read from outside with psutil, exactly as for the daemon (a child's own
    ru_maxrss would include the parent's high-water mark, inherited across exec).
    """
    times, rss = [], []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", "import ccwatch, sys; print('imported', flush=True); "
             "sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert process.stdout is not None and process.stdin is not None
        process.stdout.readline()
        times.append(time.perf_counter() - started)
        rss.append(psutil.Process(process.pid).memory_info().rss / 2**20)
        process.stdin.close()
        process.wait(timeout=10)
    return statistics.median(times), statistics.median(rss)


def daemon_start(runs: int, workdir: Path, broker_port: int) -> tuple[float, float]:
    times, rss = [], []
    for run in range(runs):
        port = free_port()
        config = {
            "site": "bench",
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": f"bench-{run}"},
            "http": {"listen": f"127.0.0.1:{port}"},
            "state": {"path": str(workdir / f"state{run}.db")},
            "checklists": {"dir": str(workdir / "no-checklists")},
        }
        path = workdir / f"config{run}.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.perf_counter() - started > 30:
                    raise RuntimeError("ccwatch did not become ready")
                time.sleep(0.01)
            times.append(time.perf_counter() - started)
            time.sleep(0.5)  # let start-up work settle before reading RSS
            rss.append(psutil.Process(process.pid).memory_info().rss / 2**20)
        finally:
            process.terminate()
            process.wait(timeout=10)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "broker").mkdir()
        broker = Mosquitto(workdir / "broker")
        broker.start()
        try:
            base_time, base_rss = baseline_import(args.runs)
            ready_time, ready_rss = daemon_start(args.runs, workdir, broker.port)
        finally:
            broker.stop()
    print(f"startup benchmark, median of {args.runs} runs")
    print(f"{'':34}{'wall time':>12}{'RSS':>12}")
    print(f"{'baseline: python -c import ccwatch':34}{base_time:>10.3f} s{base_rss:>9.1f} MB")
    print(f"{'ccwatch run -> /readyz 200':34}{ready_time:>10.3f} s{ready_rss:>9.1f} MB")
    print(f"targets: ready <= 1.5 s ({'met' if ready_time <= 1.5 else 'MISSED'}), "
          f"RSS < 60 MB ({'met' if ready_rss < 60 else 'MISSED'})")


if __name__ == "__main__":
    main()
