"""The MQTT source's pieces that need no broker: backoff, topics, TLS context."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ccwatch.config import Config
from ccwatch.ingest.mqtt import backoff_delays, subscriptions, tls_context


@given(st.floats(min_value=0.5, max_value=300), st.integers(min_value=1, max_value=40))
def test_backoff_doubles_with_jitter_and_never_exceeds_the_cap(cap: float, attempts: int) -> None:
    next_delay = backoff_delays(cap)
    delays = [next_delay() for _ in range(attempts)]
    assert all(0 < delay <= cap for delay in delays)
    # Each delay lies in the upper half of its step, so the sequence keeps growing
    # until it reaches the cap, whatever the jitter.
    steps = [min(cap, 2**i) for i in range(attempts)]
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps, strict=True))


def test_subscriptions_cover_metrics_and_status_of_this_site_only() -> None:
    config = Config.model_validate({"site": "blr1", "mqtt": {"topic_prefix": "contact/center"}})
    assert subscriptions(config) == [
        "contact/center/blr1/+/metrics",
        "contact/center/blr1/+/status",
    ]


def test_tls_context_only_when_configured(tmp_path: Path) -> None:
    assert tls_context(Config.model_validate({"site": "blr1"})) is None
    insecure = Config.model_validate({"site": "blr1", "mqtt": {"tls": {"insecure": True}}})
    context = tls_context(insecure)
    assert context is not None and context.check_hostname is False
