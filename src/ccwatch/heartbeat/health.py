"""Is ccwatch healthy enough to say so? A pure function of what the daemon reports.

Healthy means: connected to the MQTT broker, the state database takes writes, and the
pipeline processed an MQTT message within ``max_stall`` (measured from when watching
began while none has come yet). Values in, a value out; the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from ccwatch.durations import format_duration


@dataclass(frozen=True)
class HealthInputs:
    """What the daemon reports at one instant."""

    mqtt_connected: bool
    mqtt_detail: str  # the MQTT source's own words (why it is not connected)
    state_problem: str | None  # None: the state database takes writes
    last_message_at: float | None  # receive time of the last processed message (None: none yet)


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str  # what is wrong, "" when healthy


def assess(
    inputs: HealthInputs, watching_since: float, now: float, max_stall: float | None
) -> Health:
    """Healthy or not at ``now``, with every reason why not joined by "; "."""
    problems: list[str] = []
    if not inputs.mqtt_connected:
        problems.append(f"MQTT broker not connected ({inputs.mqtt_detail or 'no detail'})")
    if inputs.state_problem is not None:
        problems.append(f"state database: {inputs.state_problem}")
    if max_stall is not None:
        last = inputs.last_message_at if inputs.last_message_at is not None else watching_since
        age = now - last  # a clock stepped back gives a negative age: not a stall
        if age > max_stall:
            after = "" if inputs.last_message_at is not None else " since the start"
            problems.append(
                f"ingest stalled: no MQTT message processed{after} for "
                f"{format_duration(timedelta(seconds=int(age)))} "
                f"(heartbeat.max_stall {format_duration(timedelta(seconds=max_stall))})"
            )
    return Health(not problems, "; ".join(problems))


def fleet_health(
    sites: Sequence[tuple[str, bool, str, float | None]],
    state_problem: str | None,
    now: float,
) -> HealthInputs:
    """A fleet worker's inputs from its held sites, each ``(site, subscribed, problem,
    last_message_at)``: MQTT is connected when every held site's session is; the last
    message is the newest of any site. A worker holding no site is a standby, ready to
    take sites over: nothing to be connected to, and not stalled."""
    down = [f"{site}: {problem}" for site, subscribed, problem, _ in sites if not subscribed]
    lasts = [last for *_, last in sites if last is not None]
    last = max(lasts) if lasts else (now if not sites else None)
    return HealthInputs(not down, "; ".join(down), state_problem, last)
