"""The dead-man's switch: the health decision (properties), the ``heartbeat:`` config, and
the loop pinging a local healthchecks.io-style receiver.

The receiver validates requests as healthchecks.io's Pinging API documents them
(https://healthchecks.io/docs/http_api/): ``HEAD``/``GET``/``POST`` to ``/<uuid>``
(success) or ``/<uuid>/fail`` (failure), a body of at most 100 kB, ``200 OK`` with the
text ``OK``; an unknown check answers ``404 not found``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ccwatch.config import Config, load_config, validate_data
from ccwatch.errors import ConfigError
from ccwatch.heartbeat.config import HeartbeatConfig, shown_url
from ccwatch.heartbeat.health import HealthInputs, assess, fleet_health
from ccwatch.heartbeat.service import Heartbeat
from ccwatch.heartbeat.targets import PingUrl, fail_url
from ccwatch.tickets.adapters.base import AdapterContext
from tests.test_readme_examples import README, yaml_blocks
from tests.test_tickets_support import FakeClock, Received, Receiver, Reply

CHECK = str(uuid.uuid4())
MAX_BODY = 100_000
_PING_PATH = re.compile(r"^/(?P<check>[0-9a-f-]{36})(?P<fail>/fail)?$")

# --- the health decision (pure) ------------------------------------------------------

times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
stalls = st.one_of(st.none(), st.floats(min_value=1, max_value=1e6, allow_nan=False))
inputs = st.builds(
    HealthInputs,
    mqtt_connected=st.booleans(),
    mqtt_detail=st.sampled_from(["connecting to 127.0.0.1:1883", "connection refused", ""]),
    state_problem=st.one_of(st.none(), st.sampled_from(["disk I/O error", "file replaced"])),
    last_message_at=st.one_of(st.none(), times),
)


@given(inputs, times, times, stalls)
def test_healthy_exactly_when_connected_writable_and_not_stalled(
    given_inputs: HealthInputs, since: float, now: float, max_stall: float | None
) -> None:
    health = assess(given_inputs, since, now, max_stall)
    last = given_inputs.last_message_at if given_inputs.last_message_at is not None else since
    stalled = max_stall is not None and now - last > max_stall
    expected = given_inputs.mqtt_connected and given_inputs.state_problem is None and not stalled
    assert health.healthy is expected
    assert (health.reason == "") is health.healthy
    assert ("MQTT broker not connected" in health.reason) is not given_inputs.mqtt_connected
    assert ("state database" in health.reason) is (given_inputs.state_problem is not None)
    assert ("ingest stalled" in health.reason) is stalled


@given(inputs, times, times, st.floats(min_value=0, max_value=1e6), stalls)
def test_waiting_longer_never_makes_it_healthy(
    given_inputs: HealthInputs, since: float, now: float, later: float, max_stall: float | None
) -> None:
    if not assess(given_inputs, since, now, max_stall).healthy:
        assert not assess(given_inputs, since, now + later, max_stall).healthy


def test_the_stall_reason_says_how_long() -> None:
    quiet = HealthInputs(True, "connected", None, last_message_at=1000.0)
    health = assess(quiet, watching_since=0.0, now=1000.0 + 372, max_stall=300.0)
    assert health.reason == (
        "ingest stalled: no MQTT message processed for 6m12s (heartbeat.max_stall 5m)"
    )
    never = HealthInputs(True, "connected", None, last_message_at=None)
    assert assess(never, 0.0, 301.0, 300.0).reason.startswith(
        "ingest stalled: no MQTT message processed since the start for 5m1s"
    )
    assert assess(never, 0.0, 301.0, None).healthy  # max_stall: null switches it off


def test_a_fleet_worker_is_healthy_when_every_held_site_is_and_as_a_standby() -> None:
    now = 5000.0
    standby = fleet_health([], None, now)
    assert assess(standby, watching_since=0.0, now=now, max_stall=300.0).healthy
    sites = [("blr1", True, "", 4990.0), ("del2", True, "", None)]
    assert assess(fleet_health(sites, None, now), 0.0, now, 300.0).healthy
    one_down = [("blr1", True, "", 4990.0), ("del2", False, "connection refused", 4000.0)]
    health = assess(fleet_health(one_down, None, now), 0.0, now, 300.0)
    assert not health.healthy and "del2: connection refused" in health.reason
    quiet = [("blr1", True, "", 4000.0), ("del2", True, "", 4100.0)]  # newest 900 s ago
    assert "ingest stalled" in assess(fleet_health(quiet, None, now), 0.0, now, 300.0).reason
    broken_store = assess(fleet_health([], "disk full", now), 0.0, now, 300.0)
    assert not broken_store.healthy and "disk full" in broken_store.reason


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=5),
            st.booleans(),
            st.text(max_size=10),
            st.none() | st.floats(min_value=0, max_value=1e6),
        ),
        max_size=6,
    )
)
def test_a_fleet_worker_is_connected_only_when_every_held_site_is(
    sites: list[tuple[str, bool, str, float | None]],
) -> None:
    inputs = fleet_health(sites, None, 1e6)
    assert inputs.mqtt_connected is all(subscribed for _, subscribed, _, _ in sites)
    lasts = [last for *_, last in sites if last is not None]
    assert inputs.last_message_at == (max(lasts) if lasts else (1e6 if not sites else None))


# --- the config ----------------------------------------------------------------------


def problems(tmp_path: Path, section: str, extra: str = "") -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(f"site: blr1\n{extra}heartbeat: {section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_literal_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    found = problems(tmp_path, f"{{url: 'https://hc-ping.com/{CHECK}'}}")
    assert found == [
        "heartbeat -> url: a ping URL carries its check's secret id and is never written "
        "inline: put it in an environment variable (url_env) or in a file whose first line "
        "is the URL (url_file)"
    ]


def test_url_env_must_be_set_and_hold_an_http_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert problems(tmp_path, "{url_env: CCWATCH_TEST_HB_URL}") == [
        "heartbeat -> url_env: environment variable CCWATCH_TEST_HB_URL is not set (or is empty)"
    ]
    monkeypatch.setenv("CCWATCH_TEST_HB_URL", f"hc-ping.com/{CHECK}")
    found = problems(tmp_path, "{url_env: CCWATCH_TEST_HB_URL}")
    assert found == [
        "heartbeat -> url_env: environment variable CCWATCH_TEST_HB_URL is not an http(s) "
        "URL with a host (value not shown)"
    ]
    secret_file = tmp_path / "hb-url"
    secret_file.write_text("ftp://example.com/x\n")
    assert problems(tmp_path, f"{{url_file: {secret_file}}}") == [
        f"heartbeat -> url_file: the first line of '{secret_file}' is not an http(s) URL "
        "with a host (value not shown)"
    ]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{enabled: true}", "heartbeat: enabled, but there is nothing to ping"),
        ("{alertmanager: am, interval: 500ms}", "heartbeat -> interval: must be at least 1s"),
        (
            "{alertmanager: am, interval: 30s, timeout: 1m}",
            "heartbeat -> timeout: must be greater than 0 and at most the interval",
        ),
        ("{alertmanager: am, max_stall: 0}", "heartbeat -> max_stall: must be greater than 0"),
        ("{alertmanager: am, intervall: 1m}", "heartbeat -> intervall: unknown key; did you mean 'interval'?"),
    ],
)
def test_config_errors_name_the_key_path(tmp_path: Path, section: str, expected: str) -> None:
    (line,) = problems(tmp_path, section)
    assert line.startswith(expected), line


def test_the_alertmanager_must_be_an_enabled_upstream(tmp_path: Path) -> None:
    tickets = (
        "tickets:\n"
        "  - {type: alertmanager, name: am, url: 'http://127.0.0.1:9093'}\n"
        "  - {type: alertmanager, name: spare, url: 'http://127.0.0.1:9094', enabled: false}\n"
    )
    assert problems(tmp_path, "{alertmanager: spare}", tickets) == [
        "heartbeat -> alertmanager: 'spare' is not an enabled alertmanager upstream of tickets: "
        "(alertmanager upstreams: am, spare)"
    ]
    path = tmp_path / "config.yaml"
    path.write_text(f"site: blr1\n{tickets}heartbeat: {{alertmanager: am}}\n")
    config = load_config(path)
    assert config.heartbeat.enabled  # a target switches it on
    assert config.heartbeat_upstream() is not None
    assert config.heartbeat_upstream().upstream_name == "am"  # type: ignore[union-attr]


def test_off_by_default_and_on_with_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not HeartbeatConfig().enabled
    monkeypatch.setenv("CCWATCH_TEST_HB_URL", f"https://hc-ping.com/{CHECK}")
    section = HeartbeatConfig.model_validate({"url_env": "CCWATCH_TEST_HB_URL"})
    assert section.enabled and section.ping_url() == f"https://hc-ping.com/{CHECK}"
    off = HeartbeatConfig.model_validate({"enabled": False, "url_env": "CCWATCH_UNSET_HB"})
    assert off.ping_url() is None  # a disabled example may name an unset variable


def test_the_url_is_shown_as_host_and_last_four() -> None:
    assert shown_url(f"https://hc-ping.com/{CHECK}") == f"https://hc-ping.com/…{CHECK[-4:]}"
    assert shown_url("https://user:pw@hc.example.com:8443/ab/c") == "https://hc.example.com/…"
    assert fail_url(f"https://hc-ping.com/{CHECK}") == f"https://hc-ping.com/{CHECK}/fail"
    assert fail_url("https://hc-ping.com/KEY/db-backup/?create=1") == (
        "https://hc-ping.com/KEY/db-backup/fail?create=1"
    )


# --- the loop against a local healthchecks.io-style receiver ---------------------------


def healthchecks(request: Received) -> Reply:
    match = _PING_PATH.match(request.path)
    if request.method not in ("HEAD", "GET", "POST") or len(request.body) > MAX_BODY:
        return Reply(400, "bad request")
    if match is None or match["check"] != CHECK:
        return Reply(404, "not found")
    return Reply(200, "OK")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(validator=healthchecks).start()
    yield server
    server.close()


class Probe:
    def __init__(self) -> None:
        self.inputs = HealthInputs(True, "connected to 127.0.0.1:1883", None, None)

    def __call__(self) -> HealthInputs:
        return self.inputs


def heartbeat(
    url: str, clock: FakeClock, probe: Probe, registry: CollectorRegistry, **section: object
) -> Heartbeat:
    config = HeartbeatConfig.model_validate({"enabled": True, "alertmanager": "x", **section})
    target = PingUrl(url, "blr1", 2.0, AdapterContext("blr1", clock=clock))
    return Heartbeat(config, [target], probe, registry, clock)


def sent(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value(
        "ccwatch_heartbeat_sends_total", {"target": "url", "outcome": outcome}
    )


def test_pings_while_healthy_and_signals_a_lasting_failure(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock, probe, registry = FakeClock(), Probe(), CollectorRegistry()
    beats = heartbeat(f"{receiver.url}/{CHECK}", clock, probe, registry)
    caplog.set_level(logging.INFO, logger="ccwatch.heartbeat")

    async def scenario() -> None:
        try:
            await beats.beat()
            assert [(r.method, r.path) for r in receiver.accepted] == [("POST", f"/{CHECK}")]
            assert receiver.accepted[0].body == b"ccwatch blr1: healthy"
            assert registry.get_sample_value(
                "ccwatch_heartbeat_last_success_timestamp_seconds", {"target": "url"}
            ) == clock.now

            probe.inputs = HealthInputs(False, "connection refused", None, clock.now)
            clock.advance(60)
            await beats.beat()  # the first unhealthy beat: no ping, no /fail yet
            assert len(receiver.requests) == 1
            for _ in range(2):
                clock.advance(60)
                await beats.beat()
            fails = receiver.accepted[1:]
            assert [r.path for r in fails] == [f"/{CHECK}/fail"] * 2
            assert fails[0].body == b"ccwatch blr1: MQTT broker not connected (connection refused)"

            probe.inputs = HealthInputs(True, "connected", None, clock.now)
            clock.advance(60)
            await beats.beat()
            assert receiver.accepted[-1].path == f"/{CHECK}"
        finally:
            await beats.targets[0].aclose()

    asyncio.run(scenario())
    assert (sent(registry, "ok"), sent(registry, "fail"), sent(registry, "error")) == (2, 2, 0)
    changes = [r.getMessage() for r in caplog.records if r.name == "ccwatch.heartbeat.service"]
    assert changes == [
        "heartbeat: ccwatch is unhealthy, not pinging (signalling the failure): "
        "MQTT broker not connected (connection refused)",
        "heartbeat: ccwatch is healthy again, pinging",
    ]


def test_without_signal_failure_an_unhealthy_ccwatch_sends_nothing(receiver: Receiver) -> None:
    clock, probe, registry = FakeClock(), Probe(), CollectorRegistry()
    beats = heartbeat(f"{receiver.url}/{CHECK}", clock, probe, registry, signal_failure=False)
    probe.inputs = HealthInputs(True, "connected", "disk I/O error", None)

    async def scenario() -> None:
        try:
            for _ in range(3):
                health = await beats.beat()
                clock.advance(60)
            assert health.reason == "state database: disk I/O error"
        finally:
            await beats.targets[0].aclose()

    asyncio.run(scenario())
    assert receiver.requests == []


def test_a_failing_target_is_counted_logged_once_and_never_raises(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock, probe, registry = FakeClock(), Probe(), CollectorRegistry()
    beats = heartbeat(f"{receiver.url}/{CHECK}", clock, probe, registry)
    caplog.set_level(logging.INFO, logger="ccwatch.heartbeat")
    receiver.default = Reply(503, "maintenance")
    receiver.validator = None

    async def scenario() -> None:
        try:
            for _ in range(3):
                await beats.beat()
                clock.advance(60)
            receiver.stop()  # the check's host is gone: connection refused
            await beats.beat()
            receiver.start()
            receiver.validator = healthchecks
            await beats.beat()
        finally:
            await beats.targets[0].aclose()

    asyncio.run(scenario())
    assert (sent(registry, "ok"), sent(registry, "error")) == (1, 4)
    lines = [r.getMessage() for r in caplog.records if r.name == "ccwatch.heartbeat.service"]
    shown = f"ping URL {shown_url(receiver.url + '/' + CHECK)}"
    assert lines == [
        f"heartbeat: sending to url failed, retrying every beat: {shown}: HTTP 503: maintenance",
        f"heartbeat: {shown} takes the heartbeat again",
    ]
    assert CHECK not in caplog.text  # the check id is a secret


def test_the_loop_runs_as_a_service_until_cancelled(receiver: Receiver) -> None:
    """``run()``: the first beat one interval after the start, then every interval."""
    probe, registry = Probe(), CollectorRegistry()
    config = HeartbeatConfig.model_validate(
        {"enabled": True, "alertmanager": "x", "interval": "1s", "timeout": "1s"}
    )
    target = PingUrl(f"{receiver.url}/{CHECK}", "blr1", 1.0, AdapterContext("blr1"))
    beats = Heartbeat(config, [target], probe, registry)

    async def scenario() -> None:
        task = asyncio.create_task(beats.run())
        while len(receiver.accepted) < 2:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert {r.path for r in receiver.accepted} == {f"/{CHECK}"}


# --- the README's examples -----------------------------------------------------------


def test_the_readme_examples_are_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_HEARTBEAT_URL", f"https://hc-ping.com/{CHECK}")
    examples = yaml_blocks("heartbeat")
    assert len(examples) == 2
    for example in examples:
        config: Config = validate_data(Config, {"site": "blr1", **example}, "README heartbeat")
        assert config.heartbeat.enabled


def test_the_readme_alertmanager_route_passes_amtool(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (apt-get install prometheus-alertmanager)")
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    (route,) = [block for block in blocks if block.startswith("# alertmanager.yml")]
    path = tmp_path / "alertmanager.yml"
    path.write_text(route)
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
