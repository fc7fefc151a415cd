"""``agent_capacity``: enough agents can log in, against the seats, from the latest metrics.

Where the figures come from: the components' own metrics on MQTT, read as
``mqtt_freshness`` reads them (``ccwatch.mqtt``: a clean session of the check's own,
``<prefix>/<site>/+/metrics``, the retained message plus what arrives within ``listen``).
That is the newest word there is, and the same message ingest classifies. The state
database is not used: it keeps incidents (a loss figure, only while something is wrong),
not the last seats and agent counts, and checks are not given it.

Per component, from its newest metrics message no older than ``max_age`` (Telegraf JSON
too; ``seats`` falls back to ``components.<name>.seats``):

- ``agents_unable_to_login`` and seats: able = seats - unable, against seats;
- else ``agents_logged_in`` and ``agents_expected``: logged in against the expected
  staffing of the hour;
- else, only with ``logged_in_vs_seats: true``, ``agents_logged_in`` against seats (off
  by default: before the first shift few agents are logged in, which says nothing about
  whether they could).

Capacity below ``warn_below_percent`` warns, below ``fail_below_percent`` fails (seed
004: in a 100-seat setup, 80 or fewer able to log in is critical, 3 to 19 unable is
major). A component with configured seats (or listed in ``components:``) but no recent
figures warns; components that publish no agent figures (IVR, reports) are listed and
not graded. One line per component in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiomqtt
from pydantic import Field, model_validator

from ccwatch.checklists.checks.base import CheckEnv, CheckType, format_age, grade_low, thresholds
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration
from ccwatch.errors import PayloadError
from ccwatch.mqtt import load_json, new_client, parse_timestamp, payload_bytes, subscribe

FIGURES = ("seats", "agents_logged_in", "agents_expected", "agents_unable_to_login")


class AgentCapacityParams(StrictModel):
    components: list[str] | None = Field(
        None, description="default: every configured component that publishes agent figures"
    )
    warn_below_percent: float = Field(98, ge=0, le=100)
    fail_below_percent: float | None = Field(80, ge=0, le=100)
    max_age: Duration = Field(timedelta(minutes=10), description="older metrics are not used")
    listen: Duration = Field(timedelta(seconds=1), description="how long to wait for live messages")
    logged_in_vs_seats: bool = Field(
        False, description="grade agents_logged_in against seats when nothing better is sent"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AgentCapacityParams:
        fail = self.fail_below_percent
        if fail is not None and fail > self.warn_below_percent:
            raise ValueError("fail_below_percent is above warn_below_percent")
        return self


@dataclass(frozen=True)
class Sample:
    """The agent figures of one metrics message and its publish time (None: unknown)."""

    stamp: float | None
    figures: dict[str, float]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < 1e12 else None


def read_sample(payload: bytes) -> Sample | None:
    """The agent figures in a metrics payload (native or Telegraf JSON, the last item of a
    Telegraf batch that has any); None when it is unreadable or carries none."""
    try:
        document = load_json(payload)
    except PayloadError:
        return None
    if not isinstance(document, dict):
        return None
    items: list[dict[str, Any]] = [document]
    if isinstance(document.get("metrics"), list):
        items = [m for m in document["metrics"] if isinstance(m, dict)]
    for item in reversed(items):
        fields = item.get("fields", item)
        if not isinstance(fields, dict):
            continue
        figures = {
            name: number for name in FIGURES if (number := _number(fields.get(name))) is not None
        }
        if set(figures) - {"seats"}:
            raw = item.get("ts", item.get("timestamp", fields.get("ts")))
            try:
                stamp = parse_timestamp(raw) if raw is not None else None
            except PayloadError:
                stamp = None
            return Sample(stamp, figures)
    return None


def capacity(
    figures: dict[str, float], seats: float | None, logged_in_vs_seats: bool
) -> tuple[float, float, str] | str:
    """(able, basis, what was compared), or why the figures cannot tell."""
    seats = figures.get("seats", seats)
    unable = figures.get("agents_unable_to_login")
    logged_in = figures.get("agents_logged_in")
    expected = figures.get("agents_expected")
    if unable is not None and seats:
        return max(0.0, seats - unable), seats, f"{seats - unable:g} of {seats:g} seats can log in"
    if logged_in is not None and expected:
        return logged_in, expected, f"{logged_in:g} logged in of {expected:g} expected"
    if logged_in is not None and seats and logged_in_vs_seats:
        return logged_in, seats, f"{logged_in:g} logged in of {seats:g} seats"
    if unable is not None or (logged_in is not None and logged_in_vs_seats):
        return "no seats in the metrics or components.<name>.seats"
    return "metrics carry neither agents_unable_to_login nor agents_expected"


async def latest_samples(
    env: CheckEnv, components: list[str], params: AgentCapacityParams
) -> dict[str, Sample]:
    """The newest agent figures each component published (retained or within ``listen``)."""
    mqtt, now = env.config.mqtt, env.clock()
    samples: dict[str, Sample] = {}
    max_age = params.max_age.total_seconds()
    max_ahead = mqtt.max_clock_skew.total_seconds()

    def recent(name: str) -> bool:
        stamp = samples[name].stamp if name in samples else None
        return stamp is not None and now - stamp <= max_age

    client = new_client(
        mqtt,
        f"ccwatch-checklist-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        timeout=max(1.0, params.listen.total_seconds()),
    )
    deadline = time.monotonic() + params.listen.total_seconds()
    async with client:
        await subscribe(client, mqtt, env.config.site, qos=0)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return samples
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                async for message in client.messages:
                    parts = str(message.topic).split("/")
                    component, kind = parts[-2], parts[-1]
                    if kind != "metrics" or component not in components:
                        continue
                    sample = read_sample(payload_bytes(message))
                    if sample is None:
                        continue
                    if not message.retain and sample.stamp is None:
                        sample = Sample(env.clock(), sample.figures)  # live: received now
                    if sample.stamp is not None and sample.stamp - now > max_ahead:
                        continue  # dated in the future: proves nothing
                    old = samples.get(component)
                    if old is None or (sample.stamp or 0.0) >= (old.stamp or 0.0):
                        samples[component] = sample
                    if all(recent(name) for name in components):
                        break
    return samples


async def run(params: AgentCapacityParams, env: CheckEnv) -> Outcome:
    settings = env.config.component_settings
    components = params.components or sorted(settings or env.config.components)
    with_seats = [name for name in components if name in settings and settings[name].seats]
    required = set(params.components or with_seats)
    threshold = "capacity " + thresholds(
        "%", params.warn_below_percent, params.fail_below_percent, "below"
    )
    mqtt = env.config.mqtt
    try:
        samples = await latest_samples(env, components, params)
    except aiomqtt.MqttError as exc:
        return Outcome(
            Status.FAIL,
            f"broker {mqtt.host}:{mqtt.port} unreachable: {exc}",
            threshold,
            "check that the MQTT broker runs and accepts ccwatch (the settings of `mqtt:`)",
        )
    now = env.clock()
    lines: list[str] = []
    grades: dict[str, Status] = {}
    for name in components:
        sample = samples.get(name)
        seats = settings[name].seats if name in settings else None
        if sample is None:
            lines.append(f"{name}: no agent figures heard (no retained metrics, none live)")
            if name in required:
                grades[name] = Status.WARN
            continue
        if sample.stamp is None or now - sample.stamp > params.max_age.total_seconds():
            age = "no ts" if sample.stamp is None else f"{format_age(now - sample.stamp)} old"
            lines.append(f"{name}: newest agent figures too old to use ({age})")
            grades[name] = Status.WARN
            continue
        found = capacity(sample.figures, seats, params.logged_in_vs_seats)
        if isinstance(found, str):
            lines.append(f"{name}: not graded: {found}")
            continue
        able, basis, words = found
        percent = min(100.0, able / basis * 100)
        grade = grade_low(percent, params.warn_below_percent, params.fail_below_percent)
        grades[name] = grade
        lines.append(f"{name}: {percent:.0f}% ({words})")
    detail = "\n".join(lines)
    if not grades:
        return Outcome.skipped("no component publishes agent figures: " + "; ".join(lines))
    worst = min(grades.values(), key=lambda status: status.report_rank)
    short = {line.split(":", 1)[0]: line.split(": ", 1)[1] for line in lines}
    if worst is Status.OK:
        value = "; ".join(f"{name}: {short[name]}" for name in grades)
        return Outcome(Status.OK, value, threshold, detail=detail)
    problems = [name for name, grade in grades.items() if grade is not Status.OK]
    return Outcome(
        worst,
        "; ".join(f"{name}: {short[name]}" for name in problems),
        threshold,
        "agents cannot log in: check the ACD login service, licences and the agents' "
        "network; no figures: check the publisher of the component's metrics",
        detail,
    )


CHECK = CheckType(
    "agent_capacity",
    AgentCapacityParams,
    run,
    "enough agents can log in for the seats (latest MQTT metrics)",
)
