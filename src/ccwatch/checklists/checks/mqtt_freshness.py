"""``mqtt_freshness``: every component published metrics within ``max_age``.

The check connects to the broker of ``mqtt:`` in config.yaml with a clean session of its
own and subscribes to ``<prefix>/<site>/+/metrics`` and ``…/status`` for at most
``listen``. A component counts as fresh when

- a metrics message arrives live during the listen window, or
- its retained metrics message carries a ``ts`` (or Telegraf ``timestamp``) younger
  than ``max_age``.

Publishers that retain their last metrics message are judged in one round trip;
others must publish within ``listen``. The check stops listening as soon as every
component is fresh. A retained ``offline`` status fails the component outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ccwatch.checklists.checks.base import CheckEnv, CheckType, format_age
from ccwatch.checklists.result import Outcome, Status
from ccwatch.configbase import StrictModel, read_secret
from ccwatch.durations import Duration, format_duration

if TYPE_CHECKING:
    from ccwatch.config import MqttConfig


class MqttFreshnessParams(StrictModel):
    components: list[str] | None = Field(None, description="default: every configured component")
    max_age: Duration = timedelta(minutes=5)
    listen: Duration = Field(timedelta(seconds=1), description="how long to wait for live messages")


def payload_time(payload: bytes) -> float | None:
    """The publish time a metrics payload carries (``ts`` or Telegraf's ``timestamp``)."""
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    stamp = data.get("ts", data.get("timestamp"))
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return float(stamp) / 1000 if stamp > 1e11 else float(stamp)  # Telegraf may send ms
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _tls_context(mqtt: MqttConfig) -> ssl.SSLContext | None:
    if mqtt.tls is None:
        return None
    context = ssl.create_default_context(cafile=str(mqtt.tls.ca_file) if mqtt.tls.ca_file else None)
    if mqtt.tls.cert_file:
        context.load_cert_chain(
            mqtt.tls.cert_file, str(mqtt.tls.key_file) if mqtt.tls.key_file else None
        )
    if mqtt.tls.insecure:
        context.check_hostname = False
    return context


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


async def run(params: MqttFreshnessParams, env: CheckEnv) -> Outcome:
    import aiomqtt

    config = env.config
    mqtt = config.mqtt
    components = params.components or sorted(config.components)
    threshold = f"every component published within {format_duration(params.max_age)}"
    prefix = f"{mqtt.topic_prefix}/{config.site}"
    last_seen: dict[str, float] = {}
    offline: set[str] = set()
    now = env.clock()
    deadline = time.monotonic() + params.listen.total_seconds()
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=f"ccwatch-checklist-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        username=mqtt.username,
        password=read_secret(mqtt.password_env, mqtt.password_file),
        tls_context=_tls_context(mqtt),
        timeout=max(1.0, params.listen.total_seconds()),
    )

    def fresh(name: str) -> bool:
        return now - last_seen.get(name, float("-inf")) <= params.max_age.total_seconds()

    try:
        async with client:
            await client.subscribe([(f"{prefix}/+/metrics", 0), (f"{prefix}/+/status", 0)])
            remaining = deadline - time.monotonic()
            if remaining > 0 and not all(fresh(c) for c in components):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        async for message in client.messages:
                            parts = str(message.topic).split("/")
                            component, kind = parts[-2], parts[-1]
                            payload = _payload_bytes(message.payload)
                            if kind == "status":
                                if payload.strip().lower() == b"offline":
                                    offline.add(component)
                                continue
                            offline.discard(component)
                            stamp = payload_time(payload) if message.retain else env.clock()
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
