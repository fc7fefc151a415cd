"""Wall time of the shipped daily checklist, beside the sum of its checks run one by one.

    .venv/bin/python bench/checklist.py [--config config.yaml] [--rounds 3]

Both are measured in the same process, alternating, after one warm-up run (imports,
first connections). Target: the concurrent run of the shipped daily.yaml under 2 s.
The mqtt_freshness check listens up to its ``listen`` (1 s) when no publisher retains
its metrics, so it bounds the concurrent run from below on a host without telemetry.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from ccwatch.checklists.checks import CheckEnv
from ccwatch.checklists.definition import Checklist
from ccwatch.checklists.result import CheckResult
from ccwatch.checklists.runner import run_check, run_checklist
from ccwatch.config import load_config

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 2.0


async def one_by_one(checklist: Checklist, env: CheckEnv) -> list[CheckResult]:
    default_timeout = checklist.timeout.total_seconds()
    return [await run_check(spec, env, default_timeout) for spec in checklist.enabled_checks()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--name", default="daily")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = load_config(args.config)
    (checklist,) = [c for c in config.checklists.definitions if c.name == args.name]
    env = CheckEnv(config=config.check_settings())
    asyncio.run(run_checklist(checklist, env))  # warm-up

    walls: list[float] = []
    sums: list[float] = []
    per_check: dict[str, list[float]] = {}
    statuses: dict[str, str] = {}
    for _ in range(args.rounds):
        started = time.perf_counter()
        asyncio.run(run_checklist(checklist, env))
        walls.append(time.perf_counter() - started)
        results = asyncio.run(one_by_one(checklist, env))
        sums.append(sum(r.duration_seconds for r in results))
        for result in results:
            per_check.setdefault(f"{result.id} ({result.type})", []).append(result.duration_seconds)
            statuses[f"{result.id} ({result.type})"] = result.status.value

    print(
        f"checklist {checklist.name}: {len(per_check)} checks, {args.rounds} rounds "
        f"(median of rounds)\n"
    )
    print(f"{'check':<44}{'status':<9}{'seconds':>9}")
    for name, seconds in sorted(per_check.items(), key=lambda item: -statistics.median(item[1])):
        print(f"{name:<44}{statuses[name]:<9}{statistics.median(seconds):>9.3f}")
    wall, total = statistics.median(walls), statistics.median(sums)
    print()
    print(f"{'one after another (sum of checks)':<44}{'':<9}{total:>9.3f}")
    print(f"{'concurrent run (wall time)':<44}{'':<9}{wall:>9.3f}")
    print(
        f"speed-up {total / wall:.1f}x; target: wall under {TARGET_SECONDS:.0f} s -> "
        f"{'met' if wall < TARGET_SECONDS else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
