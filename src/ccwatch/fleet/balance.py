"""Which sites a worker should take or give back (pure: values in, a plan out).

Each worker aims at ``target = ceil(sites / live workers)``. Below it, it takes free or
expired sites (in an order of its own, so workers starting together do not all reach
for the same rows first). Above it, it gives back one site, the one it took last, and
only when the caller says enough time passed since its last give-back
(``fleet.rebalance_every``): after a worker joins, sites move to it one at a time, and a
share that is only one over never moves (with the ceiling, a worker holding ``target``
is never over). A site the config no longer lists is given back at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ccwatch.fleet.leases import LeaseRow


def target(sites: int, live_workers: int) -> int:
    """Sites per worker: every site is held when each live worker holds its target."""
    if sites <= 0:
        return 0
    return math.ceil(sites / max(live_workers, 1))


@dataclass(frozen=True)
class Plan:
    target: int
    take: tuple[str, ...] = ()
    give_back: tuple[str, ...] = ()


def _order(worker: str, site: str) -> bytes:
    return hashlib.blake2b(f"{worker}/{site}".encode(), digest_size=8).digest()


def plan(
    worker: str,
    held: Mapping[str, float],
    wanted: Collection[str],
    leases: Mapping[str, LeaseRow],
    live_workers: int,
    now: float,
    may_give_back: bool,
    resting: Collection[str] = (),
) -> Plan:
    """``held``: this worker's sites by when it took them; ``wanted``: the sites of the
    fleet; ``leases``: the lease table by site at database time ``now``; ``resting``:
    sites this worker does not take for now (one failed here a moment ago)."""
    goal = target(len(wanted), live_workers)
    gone = tuple(sorted(site for site in held if site not in wanted))
    if gone:
        return Plan(goal, give_back=gone)
    if len(held) < goal:
        free = [
            site
            for site in wanted
            if site not in held
            and site not in resting
            and (site not in leases or not leases[site].held_at(now))
        ]
        free.sort(key=lambda site: _order(worker, site))
        return Plan(goal, take=tuple(free[: goal - len(held)]))
    if len(held) > goal and may_give_back:
        newest = max(held, key=lambda site: (held[site], site))
        return Plan(goal, give_back=(newest,))
    return Plan(goal)
