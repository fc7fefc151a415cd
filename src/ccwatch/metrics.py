"""The daemon's Prometheus registry and the metrics of the daemon itself.

Every metric-emitting class in ccwatch takes ``registry=`` (as prometheus_client's own
classes do), so tests build a fresh ``CollectorRegistry()`` and read it back with
``get_sample_value``. Feature modules define their own small metrics classes.
"""

from __future__ import annotations

import weakref
from typing import TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from ccwatch import __version__


def build_registry() -> CollectorRegistry:
    """A fresh registry with the process and platform collectors the daemon exposes."""
    # `_created` series double every counter's exposition and nobody alerts on them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class DaemonMetrics:
    """Build info, config reloads and component readiness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.build_info = Info("ccwatch_build", "ccwatch version", registry=registry)
        self.build_info.info({"version": __version__})
        self.config_info = Gauge(
            "ccwatch_config_info",
            "The loaded configuration (value 1), labelled by site and content hash",
            ["site", "sha256"],
            registry=registry,
        )
        self.config_reload_failures = Counter(
            "ccwatch_config_reload_failures_total",
            "SIGHUP reloads refused because the new config was invalid",
            registry=registry,
        )
        self.config_last_reload_successful = Gauge(
            "ccwatch_config_last_reload_successful",
            "1 if the last reload attempt succeeded (or none was made), else 0",
            registry=registry,
        )
        self.config_last_reload_success = Gauge(
            "ccwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config (re)load",
            registry=registry,
        )
        self.ready = Gauge(
            "ccwatch_dependency_ready",
            "1 when a configured source/sink is connected, 0 when it is not",
            ["dependency"],
            registry=registry,
        )
        self.config_last_reload_successful.set(1)

    def set_config(self, site: str, digest: str) -> None:
        self.config_info.clear()
        self.config_info.labels(site=site, sha256=digest[:12]).set(1)


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


M = TypeVar("M")
# Keyed by the registry itself (weakly): an id() key is reused by the next registry
# once a test's registry is freed, which handed out metrics registered elsewhere.
_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, dict[type[object], object]] = (
    weakref.WeakKeyDictionary()
)


def shared_metrics(metrics_class: type[M], registry: CollectorRegistry) -> M:
    """One instance of a metrics class per registry.

    A config reload rebuilds the services but must not register the same metric names
    twice, so services get their metrics objects through this.
    """
    per_registry = _SHARED.setdefault(registry, {})
    if metrics_class not in per_registry:
        per_registry[metrics_class] = metrics_class(registry)  # type: ignore[call-arg]
    return cast(M, per_registry[metrics_class])
