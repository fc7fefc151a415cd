"""parse → window → classify → lifecycle, for one message at a time.

``Pipeline.handle(topic, payload, received_at)`` is synchronous and never raises: a
rejected message is counted under ``ccwatch_ingest_rejected_total{reason}``, logged at
most once per reason per minute, and changes nothing. It returns the lifecycle
transitions the message caused; ``handle_message`` also writes them (awaiting the
store only when something changed, which is rare, so the hot path stays synchronous).

The lifecycle's clock is the receive time: holds measure how long ccwatch has seen a
condition, the way Prometheus' ``for:`` does, so a publisher's clock skew cannot open
or resolve anything early. The calls window uses the messages' own ``ts`` so a replayed
backlog adds up the same as the live stream did.

Counts are checked against the seats whichever way they arrive (in the message, from an
earlier message, or ``components.<name>.seats``): more agents than seats is rejected as
``inconsistent``. A sample already older than ``stale_after`` when it arrives (a retained
message from yesterday, a long-queued backlog) is recorded for the gauges but moves no
incident (``ccwatch_ingest_stale_samples_total``).

A message with ``agents_logged_in`` but no ``agents_expected`` is measured against the
component's ``staffing:`` table at the message's ``ts`` (site time zone), or against the
seats when there is no table.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ccwatch.classify import ComponentWindow
from ccwatch.configbase import UTC_ZONE
from ccwatch.durations import format_duration
from ccwatch.errors import PayloadError
from ccwatch.history import Reading
from ccwatch.incidents.lifecycle import Transition
from ccwatch.incidents.service import IncidentService
from ccwatch.ingest.payload import REJECT_REASONS, Measurement, PayloadParser, parse_topic
from ccwatch.metrics import shared_metrics
from ccwatch.settings import ClassificationConfig, ComponentConfig, MqttConfig, Staffing
from ccwatch.severity import Severity

logger = logging.getLogger(__name__)

REJECT_LOG_INTERVAL = 60.0
# Parsed topics are cached (a few per component); the bound keeps a publisher that
# invents component names from growing it without end.
TOPIC_CACHE_SIZE = 10_000


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Counted with a plain int read at scrape time: a prometheus Counter takes a
        # lock per increment, and this one moves with every message.
        self.received = 0
        registry.register(_ReceivedCollector(self))
        self.rejected = Counter(
            "ccwatch_ingest_rejected_total",
            "Messages rejected, by reason (they change no incident)",
            ["reason"],
            registry=registry,
        )
        self.lag = _LagHistogram()
        registry.register(self.lag)
        self.loss = Gauge(
            "ccwatch_component_production_loss_ratio",
            "Current production loss of a component (0..1)",
            ["site", "component"],
            registry=registry,
        )
        self.severity = Gauge(
            "ccwatch_component_severity",
            "Current classified severity of a component: 0 none, 1 minor, 2 major, 3 critical",
            ["site", "component"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.stale = Counter(
            "ccwatch_ingest_stale_samples_total",
            "Samples older than stale_after on arrival: shown, but they move no incident",
            ["component"],
            registry=registry,
        )


class _ReceivedCollector(Collector):
    """``ccwatch_ingest_messages_total`` from ``IngestMetrics.received``."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "ccwatch_ingest_messages",
            "MQTT messages received on the metrics and status topics (accepted or not)",
            value=self.metrics.received,
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class _LagHistogram(Collector):
    """``ccwatch_ingest_lag_seconds``: receive time minus the measurement's ``ts``.

    A plain list of bucket counts instead of prometheus_client's Histogram, whose
    observe() takes a lock and scans the buckets: this runs for every message, and both
    observe() and the /metrics handler run on the event loop's thread, so no lock is
    needed.
    """

    BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BUCKETS, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterable[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.BUCKETS, math.inf), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "ccwatch_ingest_lag_seconds",
            "Receive time minus the measurement's ts",
            buckets=buckets,
            sum_value=self.sum,
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


@dataclass(slots=True)
class _Component:
    window: ComponentWindow
    max_severity: Severity
    seats_fallback: float | None
    loss_gauge: Gauge
    severity_gauge: Gauge
    stale_counter: Counter
    staffing: Staffing | None
    # Last values set on the gauges: setting one takes a lock, so only changes are set.
    last_loss: float = -1.0
    last_severity: int = -1
    last_ts: float = 0.0  # the `ts` of the last accepted sample (its age, on the pages)


class Pipeline:
    """One site's ingestion pipeline; see the module docstring."""

    def __init__(
        self,
        site: str,
        mqtt: MqttConfig,
        components: Mapping[str, ComponentConfig],
        classification: ClassificationConfig,
        incidents: IncidentService,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        site_timezone: ZoneInfo = UTC_ZONE,
    ) -> None:
        self.site = site
        self.site_timezone = site_timezone
        self.topic_prefix = mqtt.topic_prefix
        self.components = components
        self.incidents = incidents
        self.clock = clock
        self.metrics = shared_metrics(IngestMetrics, registry)
        self.parser = PayloadParser(
            site,
            components,
            mqtt.max_payload_bytes,
            mqtt.topic_prefix,
            mqtt.max_clock_skew.total_seconds(),
        )
        self.thresholds = classification.thresholds
        self.window_seconds = classification.window.total_seconds()
        self.stale_after = classification.stale_after.total_seconds()
        self.window_label = format_duration(classification.window)
        self._components: dict[str, _Component] = {}
        # Receive time of the last message handled (accepted or not): the heartbeat's
        # "ingest stalled" input.
        self.last_message_at: float | None = None
        self._last_logged: dict[str, float] = {}
        self._topics: dict[str, tuple[str, str]] = {}
        # Looked up once: this runs for every message.
        self._observe_lag = self.metrics.lag.observe

    # --- the hot path ---------------------------------------------------------------

    def handle_message(
        self, topic: str, payload: bytes, received_at: float | None = None
    ) -> Awaitable[None] | None:
        """``handle`` plus writing the incident changes: returns the write to await, or
        None when the message changed nothing (nearly always)."""
        transitions = self.handle(
            topic, payload, self.clock() if received_at is None else received_at
        )
        if transitions:
            return self.incidents.apply(transitions)
        return None

    def handle(self, topic: str, payload: bytes | str, received_at: float) -> list[Transition]:
        self.metrics.received += 1
        self.last_message_at = received_at
        try:
            parsed = self._topics.get(topic)
            if parsed is None:
                parsed = parse_topic(topic, self.topic_prefix, self.site)
                if len(self._topics) < TOPIC_CACHE_SIZE:
                    self._topics[topic] = parsed
            component, kind = parsed
            if kind == "metrics":
                measurements = self.parser.parse_metrics(component, payload, received_at)
            else:
                measurements = [self.parser.parse_status(component, payload, received_at)]
        except PayloadError as exc:
            self._reject(exc, topic, received_at)
            return []
        transitions: list[Transition] = []
        for measurement in measurements:
            try:
                transitions.extend(self.classify(measurement))
            except PayloadError as exc:
                self._reject(exc, topic, received_at)
        return transitions

    def classify(self, m: Measurement) -> list[Transition]:
        """Window and classify one accepted measurement, then feed the lifecycle."""
        state = self._components.get(m.component)
        if state is None:
            state = self._component(m.component)
        lag = m.received_at - m.ts
        self._observe_lag(lag if lag > 0 else 0.0)
        window = state.window
        if m.seats is None:
            seats = window.seats if window.seats is not None else state.seats_fallback
            if seats is not None:
                _check_capacity(m, seats)  # raises PayloadError before anything is stored
        else:
            window.seats = m.seats
        if m.agents_unable_to_take_calls is not None:
            window.agents_unable_to_take_calls = m.agents_unable_to_take_calls
        if m.agents_unable_to_login is not None:
            window.agents_unable_to_login = m.agents_unable_to_login
        if m.agents_expected is not None:
            window.agents_expected = m.agents_expected
        elif state.staffing is not None and m.agents_logged_in is not None:
            window.agents_expected = state.staffing.expected_at(m.ts)
        if m.agents_logged_in is not None:
            window.agents_logged_in = m.agents_logged_in
        if m.up is not None:
            window.up = m.up
        if m.calls_offered is not None and m.calls_rejected is not None:
            window.add_calls(m.ts, m.calls_offered, m.calls_rejected)
        assessment = window.assess(
            m.component,
            self.thresholds,
            state.max_severity,
            state.seats_fallback,
            self.window_label,
        )
        if assessment.loss != state.last_loss:
            state.last_loss = assessment.loss
            state.loss_gauge.set(assessment.loss)
        if assessment.severity != state.last_severity:
            state.last_severity = assessment.severity
            state.severity_gauge.set(assessment.severity)
        state.last_ts = m.ts
        if lag > self.stale_after:
            state.stale_counter.inc()
            return []
        return self.incidents.observe(m.component, assessment, m.received_at)

    # --- read by the loss recorder (ccwatch.history), once a second -----------------

    def readings(self) -> dict[str, Reading]:
        """Each component's current loss and severity and its last sample's ts."""
        return {
            name: Reading(state.last_loss, Severity(state.last_severity), state.last_ts)
            for name, state in self._components.items()
            if state.last_severity >= 0
        }

    # --- helpers --------------------------------------------------------------------

    def _component(self, name: str) -> _Component:
        settings = self.components[name]
        site = self.site
        state = _Component(
            window=ComponentWindow(self.window_seconds),
            max_severity=settings.max_severity,
            seats_fallback=float(settings.seats) if settings.seats is not None else None,
            loss_gauge=self.metrics.loss.labels(site=site, component=name),
            severity_gauge=self.metrics.severity.labels(site=site, component=name),
            stale_counter=self.metrics.stale.labels(component=name),
            staffing=settings.staffing_table(self.site_timezone),
        )
        self._components[name] = state
        return state

    def _reject(self, exc: PayloadError, topic: str, now: float) -> None:
        self.metrics.rejected.labels(reason=exc.reason).inc()
        last = self._last_logged.get(exc.reason)
        if last is None or now - last >= REJECT_LOG_INTERVAL:
            self._last_logged[exc.reason] = now
            logger.warning(
                "rejected a message on %s (%s): %s; further %s rejections are only counted "
                "for a minute (ccwatch_ingest_rejected_total)",
                topic[:120],
                exc.reason,
                exc.detail,
                exc.reason,
            )


_SEAT_COUNTS = (
    "agents_logged_in",
    "agents_expected",
    "agents_unable_to_login",
    "agents_unable_to_take_calls",
)


def _check_capacity(m: Measurement, seats: float) -> None:
    """The payload parser's seat check, for a message that carries no ``seats``."""
    for name in _SEAT_COUNTS:
        value = getattr(m, name)
        if value is not None and value > seats:
            raise PayloadError("inconsistent", f"{name} ({value:g}) > seats ({seats:g})")
