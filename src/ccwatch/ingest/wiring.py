"""How the core loop joins the daemon: called once per config generation by ``app.py``."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ccwatch.incidents.service import IncidentService
from ccwatch.ingest.mqtt import MqttSource
from ccwatch.ingest.pipeline import Pipeline
from ccwatch.runtime import Runtime

TICK_SECONDS = 1.0


def incident_service(runtime: Runtime) -> IncidentService:
    """The process's one incident service, created and loaded on first use.

    It outlives config generations (its open incidents and holds carry over a SIGHUP);
    a reload only gives it the new thresholds.
    """
    if runtime.incidents is None:
        service = IncidentService(runtime.store, runtime.config, runtime.registry, runtime.clock)
        service.load_sync()
        runtime.incidents = service
    else:
        runtime.incidents.reconfigure(runtime.config)
    return runtime.incidents


def core_services(runtime: Runtime) -> dict[str, Coroutine[Any, Any, None]]:
    """MQTT source feeding the pipeline, and the ticker for staleness and holds."""
    incidents = incident_service(runtime)
    pipeline = Pipeline(runtime.config, incidents, runtime.registry, runtime.clock)
    config = runtime.config
    source = MqttSource(
        config.mqtt,
        config.site,
        pipeline.handle_message,
        runtime.registry,
        runtime.readiness,
        runtime.clock,
        client_id=config.mqtt_client_id,
    )
    return {
        "mqtt": source.run(),
        "incident_ticker": incidents.run_ticker(TICK_SECONDS),
    }
