"""Maintenance windows: the pure window logic (DST-aware), the config section, the
ad-hoc table, and what the incident service sends (or holds back) during a window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from ccwatch.compose import incident_settings
from ccwatch.incidents import repository
from ccwatch.incidents.lifecycle import DEFERRED_KEY
from ccwatch.incidents.service import IncidentService
from ccwatch.maintenance.config import MaintenanceWindowConfig, schedules
from ccwatch.maintenance.store import MaintenanceCalendar, add_window, end_window
from ccwatch.maintenance.windows import Recurring, Window, window_at
from ccwatch.severity import Severity
from ccwatch.sla import IncidentTimes, SlaConfig, clocks
from ccwatch.state import StateStore
from tests.test_incidents_service import CLEAN, CRITICAL, Clock, make_config, outbox

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-01-01 .. 2027-12-31: both DST changes of two years.
INSTANTS = st.floats(min_value=1_767_225_600.0, max_value=1_830_297_600.0)
DURATIONS = st.integers(min_value=1, max_value=6 * 60).map(lambda m: timedelta(minutes=m))


def _expected_nightly(at: float, duration: timedelta) -> bool:
    """Independent oracle: the window starts at 01:30 Berlin wall time every day."""
    local_day = datetime.fromtimestamp(at, BERLIN).date()
    for day in (local_day - timedelta(days=1), local_day):
        start = datetime.combine(day, time(1, 30), BERLIN).timestamp()
        if start <= at < start + duration.total_seconds():
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(at=INSTANTS, duration=DURATIONS)
def test_a_nightly_window_is_in_wall_time_across_dst(at: float, duration: timedelta) -> None:
    nightly = Recurring("n", ("acd",), "30 1 * * *", duration, BERLIN, "patch night")
    found = window_at([nightly], "acd", at)
    assert (found is not None) == _expected_nightly(at, duration)
    if found is not None:
        assert found.end - found.start == duration.total_seconds()
        assert datetime.fromtimestamp(found.start, BERLIN).time() == time(1, 30)
    # Another component is never in acd's window.
    assert window_at([nightly], "ivr", at) is None


@settings(max_examples=200, deadline=None)
@given(start=INSTANTS, length=st.floats(min_value=1.0, max_value=86_400.0), at=INSTANTS)
def test_a_one_off_window_is_half_open(start: float, length: float, at: float) -> None:
    window = Window("w", ("*",), start, start + length, "x", "ad-hoc")
    assert (window_at([window], "anything", at) is not None) == (start <= at < start + length)


def test_the_window_on_the_spring_forward_night_keeps_its_wall_time() -> None:
    # 2026-03-29: Berlin goes from +01:00 to +02:00 at 02:00.
    nightly = Recurring("n", ("*",), "30 1 * * *", timedelta(hours=2), BERLIN, "x")
    day = date(2026, 3, 29)
    start = datetime.combine(day, time(1, 30), BERLIN)
    found = window_at([nightly], "acd", start.timestamp() + 60)
    assert found is not None and found.start == start.timestamp()
    # Two hours of real time: it ends at 04:30 local (the clock jumped an hour).
    assert datetime.fromtimestamp(found.end, BERLIN).time() == time(4, 30)


def test_config_windows_validate_and_schedule() -> None:
    weekly = MaintenanceWindowConfig.model_validate(
        {
            "components": ["acd"],
            "cron": "0 2 * * 0",
            "duration": "2h",
            "timezone": "Asia/Kolkata",
            "reason": "weekly patching",
        }
    )
    once = MaintenanceWindowConfig.model_validate(
        {
            "start": "2026-12-05T22:00:00",
            "end": "2026-12-06T01:00:00",
            "timezone": "Asia/Kolkata",
            "reason": "PBX upgrade",
        }
    )
    scheduled = schedules([weekly, once])
    assert isinstance(scheduled[0], Recurring) and scheduled[0].id == "config-1"
    assert isinstance(scheduled[1], Window)
    ist = ZoneInfo("Asia/Kolkata")
    assert scheduled[1].start == datetime(2026, 12, 5, 22, tzinfo=ist).timestamp()
    assert scheduled[1].components == ("*",)
    for bad in (
        {"reason": "neither"},
        {"cron": "0 2 * * 0", "reason": "no duration"},
        {"cron": "0 2 * * 0", "duration": "1h", "start": "2026-01-01T00:00:00", "reason": "both"},
        {"start": "2026-01-02T00:00:00", "end": "2026-01-01T00:00:00", "reason": "backwards"},
        {"cron": "61 2 * * 0", "duration": "1h", "reason": "bad cron"},
    ):
        with pytest.raises(ValidationError):
            MaintenanceWindowConfig.model_validate(bad)


def test_adhoc_windows_are_stored_listed_and_ended(open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    try:
        now = 1_795_000_000.0
        added = store.run_sync(
            lambda c: add_window(c, ["acd"], now, now + 1800, "ACD patch", "ops", now)
        )
        calendar = MaintenanceCalendar()
        calendar.refresh_sync(store, now)
        assert calendar.window_for("acd", now + 60) == added
        assert calendar.window_for("ivr", now + 60) is None
        listing = calendar.listing(now + 60)
        assert [w.id for w in listing["active"]] == [added.id]
        ended = store.run_sync(lambda c: end_window(c, added.id, now + 600))
        assert ended.end == now + 600
        calendar.refresh_sync(store, now + 600)
        assert calendar.window_for("acd", now + 601) is None
        assert [w.id for w in calendar.listing(now + 601)["ended"]] == [added.id]
    finally:
        store.close()


# --- the incident service during a window ---------------------------------------------


def _service(
    open_store: Callable[..., StateStore],
    tmp_path: Path,
    clock: Clock,
    calendar: MaintenanceCalendar,
) -> tuple[StateStore, IncidentService]:
    store = open_store()
    config = make_config(tmp_path)
    service = IncidentService(
        store,
        incident_settings(config),
        CollectorRegistry(),
        clock=clock,
        monotonic=clock,
        maintenance=calendar.hook,
    )
    service.load_sync()
    return store, service


async def _feed(service: IncidentService, clock: Clock, reading: Any, at: float) -> None:
    clock.now = at
    await service.apply(service.observe("acd", reading, at))


def _events(store: StateStore) -> list[tuple[str, str]]:
    return [(r["upstream"], r["event"]) for r in outbox(store)]


def test_an_incident_that_ends_inside_a_window_sends_nothing(
    tmp_path: Path, open_store: Callable[..., StateStore]
) -> None:
    clock = Clock()
    t = clock.now
    calendar = MaintenanceCalendar((Window("w", ("acd",), t - 10, t + 600, "ACD patch"),))
    store, service = _service(open_store, tmp_path, clock, calendar)

    async def run() -> None:
        await _feed(service, clock, CRITICAL, t)
        await _feed(service, clock, CLEAN, t + 5)
        await _feed(service, clock, CLEAN, t + 70)
        await _feed(service, clock, CLEAN, t + 700)
        await service.tick(t + 700, t + 700)  # the window is over: nothing to release

    asyncio.run(run())
    [incident] = store.run_sync(lambda c: repository.list_incidents(c))
    assert incident.state == "resolved"
    assert incident.data["in_maintenance"] is True and incident.data[DEFERRED_KEY] is True
    assert incident.data["maintenance"]["reason"] == "ACD patch"
    assert _events(store) == []
    timeline = store.run_sync(lambda c: repository.load_timeline(c, incident.id))
    assert [e.change for e in timeline] == ["opened", "resolved"]
    assert "in maintenance" in timeline[0].detail
    store.close()


def test_an_incident_still_active_when_the_window_ends_opens_then(
    tmp_path: Path, open_store: Callable[..., StateStore]
) -> None:
    clock = Clock()
    t = clock.now
    calendar = MaintenanceCalendar((Window("w", ("*",), t - 10, t + 600, "PBX upgrade"),))
    store, service = _service(open_store, tmp_path, clock, calendar)

    async def run() -> None:
        await _feed(service, clock, CRITICAL, t)
        for at in (t + 30, t + 60, t + 300):  # still inside: held
            await _feed(service, clock, CRITICAL, at)
            await service.tick(at, at)
        assert _events(store) == []
        for at in (t + 600, t + 601):  # the window ended: released once
            await _feed(service, clock, CRITICAL, at)
            await service.tick(at, at)

    asyncio.run(run())
    assert _events(store) == [("all", "open"), ("p1", "open")]
    body = json.loads(outbox(store)[0]["body"])
    assert body["event"] == "open"
    assert body["opened_at"] == body["started_at"]
    assert datetime.fromisoformat(body["started_at"]).timestamp() == t
    assert body["opened_after_maintenance"]["reason"] == "PBX upgrade"
    [incident] = store.run_sync(lambda c: repository.list_incidents(c))
    assert incident.data[DEFERRED_KEY] is False and incident.data["sla_start"] == t + 600
    store.close()


def test_a_window_never_swallows_the_resolve_of_an_incident_opened_before(
    tmp_path: Path, open_store: Callable[..., StateStore]
) -> None:
    clock = Clock()
    t = clock.now
    calendar = MaintenanceCalendar((Window("w", ("acd",), t + 30, t + 600, "ACD patch"),))
    store, service = _service(open_store, tmp_path, clock, calendar)

    async def run() -> None:
        await _feed(service, clock, CRITICAL, t)  # before the window
        await _feed(service, clock, CLEAN, t + 40)
        await _feed(service, clock, CLEAN, t + 100)  # resolved inside the window

    asyncio.run(run())
    assert _events(store) == [
        ("all", "open"),
        ("p1", "open"),
        ("all", "resolve"),
        ("p1", "resolve"),
    ]
    store.close()


def test_sla_exemption_pauses_the_clocks_and_goes_upstream(
    tmp_path: Path, open_store: Callable[..., StateStore]
) -> None:
    clock = Clock()
    t = clock.now
    store, service = _service(open_store, tmp_path, clock, MaintenanceCalendar())

    async def run() -> str:
        await _feed(service, clock, CRITICAL, t)
        [incident] = await service.list_incidents()
        await service.exempt_sla(incident.id, "customer hardware", "ops", now=t + 60)
        await service.exempt_sla(incident.id, "again", "ops", now=t + 120)  # keeps the first
        return incident.id

    incident_id = asyncio.run(run())
    assert _events(store)[-2:] == [("all", "sla_exempt"), ("p1", "sla_exempt")]
    assert [e for _, e in _events(store)].count("sla_exempt") == 2  # once per upstream
    body = json.loads(outbox(store)[-1]["body"])
    assert body["event"] == "sla_exempt" and body["sla_exempt"]["reason"] == "customer hardware"
    incident = store.run_sync(lambda c: repository.load_incident(c, incident_id))
    assert incident is not None and incident.data["sla_exempt_at"] == t + 60
    store.close()


@settings(max_examples=100, deadline=None)
@given(
    exempt_after=st.integers(min_value=0, max_value=86_400),
    later=st.integers(min_value=0, max_value=30 * 86_400),
)
def test_an_exempt_incidents_clocks_stop_at_the_exemption(exempt_after: int, later: int) -> None:
    opened = datetime(2026, 6, 1, 9, tzinfo=UTC)
    exempt = opened + timedelta(seconds=exempt_after)
    times = IncidentTimes(Severity.CRITICAL, opened, exempt_at=exempt)
    now = exempt + timedelta(seconds=later)
    for clock in clocks(SlaConfig(), times, now):
        assert not clock.running
        assert (
            clock.elapsed == clocks(SlaConfig(), times, exempt)[0].elapsed
            or clock.kind != "first_response"
        )
    # Clocks of an incident opened in a window start when it was opened upstream.
    held = IncidentTimes(Severity.CRITICAL, opened, sla_start=exempt)
    assert all(c.started_at == exempt for c in clocks(SlaConfig(), held, now))


# --- the command line (no daemon listening: the state database directly) ------------


def test_maintenance_cli_add_list_end_without_a_daemon(
    tmp_path: Path, state_section: dict[str, Any]
) -> None:
    from click.testing import CliRunner

    from ccwatch.cli import cli

    config = tmp_path / "config.yaml"
    config.write_text(
        "site: blr1\n"
        f"state: {json.dumps(state_section)}\n"
        "http: {listen: '127.0.0.1:9'}\n"
        "maintenance:\n"
        "  - {components: [ivr], cron: '0 3 * * *', duration: 1h, reason: nightly IVR}\n"
    )

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["-c", str(config), *args])
        return result.exit_code, result.output

    code, out = run(
        "maintenance", "add", "--component", "acd", "--for", "30m", "--reason", "ACD patch"
    )
    assert code == 0, out
    assert "ACD patch" in out and "acd" in out
    window_id = out.split("added: ")[1].split()[0]
    code, out = run("maintenance", "list")
    assert code == 0, out
    active = out.split("active:")[1].split("upcoming:")[0]
    assert window_id in active and "ACD patch" in active
    assert "nightly IVR" in out  # the scheduled one, active or upcoming
    code, out = run("maintenance", "add", "--component", "nosuch", "--for", "5m", "--reason", "x")
    assert code == 2 and "unknown component" in out
    code, out = run("maintenance", "end", window_id)
    assert code == 0, out
    code, out = run("maintenance", "list")
    assert window_id in out.split("ended:")[1]
    code, out = run("maintenance", "end", "nosuch")
    assert code == 3
