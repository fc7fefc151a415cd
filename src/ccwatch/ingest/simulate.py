"""``ccwatch simulate``: publish a realistic contact-center day to the configured broker.

For a new user to watch incidents open and resolve with the shipped config. The
``day`` scenario: normal traffic; an ACD outage where 23 of 100 agents cannot take calls
(critical, P1); recovery (resolves after ``resolve_after``); the dialer rejecting 12 %
of its calls (major, P2); recovery. ccwatch's holds run on its own clock, so each phase
lasts longer than the shipped holds (open_after 30 s, resolve_after 5 min, and the
dialer's rejections stay in the 5 min window): the day takes about 22 minutes.
``fast`` runs the same story in about 25 s for a config with short holds and window
(``open_after: 0s``, ``resolve_after: 1s``, ``window: 3s``), which the tests use.
``--speed`` divides the phase lengths (holds must then be shortened to match).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
import click

from ccwatch.mqtt import new_client
from ccwatch.settings import MqttConfig


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    acd_unable_to_take_calls: int = 0
    dialer_reject_ratio: float = 0.0


@dataclass(frozen=True)
class Scenario:
    description: str
    interval: float  # seconds between reports of each component
    phases: tuple[Phase, ...]


SCENARIOS: dict[str, Scenario] = {
    "day": Scenario(
        "a day in about 22 minutes, for the shipped config's holds and window",
        interval=5.0,
        phases=(
            Phase("normal traffic", 60),
            Phase("ACD outage: 23 of 100 agents cannot take calls", 120, 23),
            Phase("ACD recovered", 330),
            Phase("dialer rejecting 12% of calls", 120, 0, 0.12),
            # Rejections stay in the 5 min window, then clean data must hold 5 min.
            Phase("dialer recovered", 660),
        ),
    ),
    "fast": Scenario(
        "the same story in about 25 s, for a config with open_after 0s, resolve_after 1s"
        " and window 3s",
        interval=0.25,
        phases=(
            Phase("normal traffic", 2),
            Phase("ACD outage: 23 of 100 agents cannot take calls", 4, 23),
            Phase("ACD recovered", 5),
            Phase("dialer rejecting 12% of calls", 4, 0, 0.12),
            Phase("dialer recovered", 8),
        ),
    ),
}


def payloads(phase: Phase, interval: float, rng: random.Random) -> dict[str, dict[str, object]]:
    """One round of reports, as each component's publisher would send them."""
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Healthy: everyone expected is logged in and nothing is rejected (no incident).
    logged_in = 98
    acd_offered = max(1, round(rng.gauss(8, 1.5) * interval))
    dialer_offered = max(1, round(rng.gauss(12, 2) * interval))
    # Each call is rejected with the phase's probability, so small rounds still add up
    # to the right share over the window.
    dialer_rejected = sum(rng.random() < phase.dialer_reject_ratio for _ in range(dialer_offered))
    return {
        "acd": {
            "ts": ts,
            "interval_s": interval,
            "seats": 100,
            "agents_expected": 98,
            "agents_logged_in": logged_in,
            "agents_unable_to_login": 0,
            "agents_unable_to_take_calls": phase.acd_unable_to_take_calls,
            "calls_offered": acd_offered,
            "calls_rejected": 0,
            "up": True,
        },
        "ivr": {
            "ts": ts,
            "interval_s": interval,
            "calls_offered": acd_offered,
            "calls_rejected": 0,
        },
        "dialer": {
            "ts": ts,
            "interval_s": interval,
            "seats": 100,
            "calls_offered": dialer_offered,
            "calls_rejected": dialer_rejected,
            "up": True,
        },
        "voice_logger": {"ts": ts, "up": True},
        "reports": {"ts": ts, "up": True},
    }


async def publish_scenario(
    mqtt: MqttConfig,
    site: str,
    scenario: Scenario,
    speed: float = 1.0,
    duration: float | None = None,
    say: Callable[[str], None] = print,
    seed: int = 4,
) -> int:
    """Publish the scenario to the broker of ``mqtt``; returns the number of messages sent.

    Each publish waits for the broker's acknowledgement (QoS ``mqtt.qos``), as a careful
    exporter would; a ``click.ClickException`` names the broker when it cannot be reached.
    """
    rng = random.Random(seed)
    prefix = f"{mqtt.topic_prefix}/{site}"
    sent = 0
    client = new_client(mqtt, f"ccwatch-simulate-{site}", clean_session=True)
    try:
        async with client:
            started = time.monotonic()
            for component in ("acd", "ivr", "dialer", "voice_logger", "reports"):
                await client.publish(f"{prefix}/{component}/status", "online", qos=1, retain=True)
            for phase in scenario.phases:
                phase_end = time.monotonic() + phase.seconds / speed
                say(f"{time.monotonic() - started:6.1f}s  {phase.name}")
                while time.monotonic() < phase_end:
                    if duration is not None and time.monotonic() - started >= duration:
                        return sent
                    for component, body in payloads(phase, scenario.interval, rng).items():
                        await client.publish(
                            f"{prefix}/{component}/metrics", json.dumps(body), qos=mqtt.qos
                        )
                        sent += 1
                    await asyncio.sleep(scenario.interval / speed)
            say(f"{time.monotonic() - started:6.1f}s  done, {sent} messages published")
            return sent
    except aiomqtt.MqttError as exc:
        raise click.ClickException(
            f"cannot publish to the MQTT broker at {mqtt.host}:{mqtt.port}: {exc}"
        ) from None


def run_scenario(
    mqtt: MqttConfig,
    site: str,
    scenario: Scenario,
    speed: float = 1.0,
    duration: float | None = None,
    say: Callable[[str], None] = print,
    seed: int = 4,
) -> int:
    """``publish_scenario`` from synchronous code (the CLI)."""
    return asyncio.run(publish_scenario(mqtt, site, scenario, speed, duration, say, seed))


@click.command()
@click.option(
    "--scenario",
    type=click.Choice(sorted(SCENARIOS)),
    default="day",
    show_default=True,
    help="; ".join(f"{name}: {s.description}" for name, s in SCENARIOS.items()),
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Divide phase lengths by this (holds are not: shorten them to match).",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
def simulate(scenario: str, speed: float, duration: float | None) -> None:
    """Publish a realistic contact-center day to the configured MQTT broker.

    Normal traffic, an ACD outage (23 of 100 agents cannot take calls: critical), the
    recovery, the dialer rejecting 12% of calls (major), the recovery. Run `ccwatch run`
    beside it and watch `ccwatch incidents list` or http://127.0.0.1:9817/.
    """
    config = click.get_current_context().find_root().obj.load()
    chosen = SCENARIOS[scenario]
    total = sum(p.seconds for p in chosen.phases) / speed
    click.echo(
        f"publishing scenario {scenario!r} to {config.mqtt.host}:{config.mqtt.port} "
        f"({config.mqtt.topic_prefix}/{config.site}/…), about {total:.0f} s"
    )
    run_scenario(config.mqtt, config.site, chosen, speed, duration, click.echo)
