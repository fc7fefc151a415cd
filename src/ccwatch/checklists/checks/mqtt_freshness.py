"""``mqtt_freshness``: every component published metrics within ``max_age``.

The check connects to the broker of ``mqtt:`` in config.yaml with a clean session of its
own and subscribes to ``<prefix>/<site>/+/metrics`` and ``…/status`` for at most
``listen``. A component counts as fresh when

- a metrics message arrives live during the listen window, or
- its retained metrics message carries a ``ts`` (or Telegraf ``timestamp``) younger
  than ``max_age``.

Publishers that retain their last metrics message are judged in one round trip;
others must publish within ``listen``. The check stops listening as soon as every
component is fresh. A retained ``offline`` status fails the component outright. The
``ts`` is read by ingest's parser (``ccwatch.mqtt.parse_timestamp``): RFC 3339 with an
offset, or epoch s/ms/µs/ns; a ts without offset, or one more than ``mqtt.max_clock_skew``
in the future, does not count as fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import aiomqtt
from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, format_age
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration, format_duration
from ccwatch.errors import PayloadError
from ccwatch.mqtt import load_json, new_client, parse_timestamp, payload_bytes, subscribe

if TYPE_CHECKING:
    from ccwatch.settings import MqttConfig


class MqttFreshnessParams(StrictModel):
    components: list[str] | None = Field(None, description="default: every configured component")
    max_age: Duration = timedelta(minutes=5)
    listen: Duration = Field(timedelta(seconds=1), description="how long to wait for live messages")


def payload_time(payload: bytes) -> float | None:
    """The publish time a metrics payload carries (``ts`` or Telegraf's ``timestamp``),
    read as ingest reads it (``ccwatch.mqtt``); None when it has none or an unreadable one."""
    try:
        data = load_json(payload)
        if not isinstance(data, dict):
            return None
        stamp = data.get("ts", data.get("timestamp"))
        return None if stamp is None else parse_timestamp(stamp)
    except PayloadError:
        return None


async def run(params: MqttFreshnessParams, env: CheckEnv) -> Outcome:
    config = env.config
    return await freshness(
        params,
        config.mqtt,
        config.site,
        params.components or sorted(config.components),
        env.clock,
    )


async def freshness(
    params: MqttFreshnessParams,
    mqtt: MqttConfig,
    site: str,
    components: Sequence[str],
    clock: Callable[[], float],
) -> Outcome:
    """The check on the ``mqtt:`` config and this site's ``components``."""
    threshold = f"every component published within {format_duration(params.max_age)}"
    last_seen: dict[str, float] = {}
    offline: set[str] = set()
    ahead: set[str] = set()
    now = clock()
    max_ahead = mqtt.max_clock_skew.total_seconds()
    deadline = time.monotonic() + params.listen.total_seconds()
    client = new_client(
        mqtt,
        f"ccwatch-checklist-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        timeout=max(1.0, params.listen.total_seconds()),
    )

    def fresh(name: str) -> bool:
        return now - last_seen.get(name, float("-inf")) <= params.max_age.total_seconds()

    try:
        async with client:
            await subscribe(client, mqtt, site, qos=0)
            remaining = deadline - time.monotonic()
            if remaining > 0 and not all(fresh(c) for c in components):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        async for message in client.messages:
                            parts = str(message.topic).split("/")
                            component, kind = parts[-2], parts[-1]
                            payload = payload_bytes(message)
                            if kind == "status":
                                if payload.strip().lower() == b"offline":
                                    offline.add(component)
                                continue
                            offline.discard(component)
                            stamp = payload_time(payload) if message.retain else clock()
                            if stamp is not None and stamp - now > max_ahead:
                                ahead.add(component)  # a ts in the future proves nothing
                                continue
                            if stamp is not None:
                                last_seen[component] = max(last_seen.get(component, 0.0), stamp)
                            if all(fresh(c) for c in components):
                                break
    except aiomqtt.MqttError as exc:
        return Outcome(
            Status.FAIL,
            f"broker {mqtt.host}:{mqtt.port} unreachable: {exc}",
            threshold,
            "check that the MQTT broker runs and accepts ccwatch (the settings of `mqtt:`)",
        )
    stale = [c for c in components if not fresh(c) or c in offline]
    if not stale:
        return Outcome(Status.OK, f"{len(components)} components fresh", threshold)
    notes = []
    for name in stale:
        if name in offline:
            notes.append(f"{name}: reports offline")
        elif name in last_seen:
            notes.append(f"{name}: last published {format_age(now - last_seen[name])} ago")
        elif name in ahead:
            notes.append(
                f"{name}: retained ts is more than mqtt.max_clock_skew in the future "
                "(check the publisher's clock)"
            )
        else:
            notes.append(f"{name}: nothing heard (no retained message with a ts, none live)")
    return Outcome(
        Status.FAIL,
        f"{len(stale)} of {len(components)} components stale: {', '.join(stale)}",
        threshold,
        "check the publishers (Telegraf/agents) of these components and their broker connection",
        detail="\n".join(notes),
    )


CHECK = CheckType(
    "mqtt_freshness", MqttFreshnessParams, run, "every component published recently (MQTT)"
)
