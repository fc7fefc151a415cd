"""Expected staffing per shift, ``site_timezone``, and ``ccwatch classify`` with logins
(README "Classification" and the config table)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.cli import cli
from ccwatch.config import Config, load_config
from ccwatch.errors import ConfigError
from ccwatch.settings import ComponentConfig, StaffingShift, host_timezone

KOLKATA = ZoneInfo("Asia/Kolkata")
SHIFTS = [
    {"from": "00:00", "expected": 10},
    {"from": "08:00", "expected": 100},
    {"from": "20:00", "expected": 40},
]


def write_config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"site": "blr1", **data}))
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(config), *args])
    return result.exit_code, result.output


# --- the staffing table --------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "expected"),
    [("00:00", 10), ("03:00", 10), ("07:59", 10), ("08:00", 100), ("19:59", 100), ("23:00", 40)],
)
def test_each_shift_runs_until_the_next_one(local: str, expected: int) -> None:
    staffing = ComponentConfig.model_validate({"seats": 100, "staffing": SHIFTS}).staffing_table(
        KOLKATA
    )
    assert staffing is not None
    assert staffing.expected_at_local(time.fromisoformat(local)) == expected
    # The same through a timestamp: that local time in Kolkata, any day.
    moment = datetime.combine(date(2026, 12, 1), time.fromisoformat(local), KOLKATA)
    assert staffing.expected_at(moment.timestamp()) == expected


def test_before_the_first_shift_the_last_one_of_the_day_before_runs() -> None:
    shifts = [{"from": "20:00", "expected": 40}, {"from": "08:00", "expected": 100}]
    staffing = ComponentConfig.model_validate({"staffing": shifts}).staffing_table(KOLKATA)
    assert staffing is not None
    assert staffing.expected_at_local(time(3, 0)) == 40  # written out of order: sorted
    assert staffing.expected_at_local(time(9, 0)) == 100


def test_the_table_follows_the_site_zone_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    staffing = ComponentConfig.model_validate({"staffing": SHIFTS}).staffing_table(berlin)
    assert staffing is not None
    # 07:30 UTC is 08:30 in winter (day shift) and 09:30 in summer; 06:30 UTC is 07:30
    # local in winter (night) but 08:30 in summer (day).
    winter = datetime(2026, 1, 15, 6, 30, tzinfo=UTC).timestamp()
    summer = datetime(2026, 7, 15, 6, 30, tzinfo=UTC).timestamp()
    assert (staffing.expected_at(winter), staffing.expected_at(summer)) == (10, 100)


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_the_minute_cache_agrees_with_a_fresh_lookup(ts: int) -> None:
    staffing = ComponentConfig.model_validate({"staffing": SHIFTS}).staffing_table(KOLKATA)
    assert staffing is not None
    local = datetime.fromtimestamp(ts, KOLKATA).time()
    first = staffing.expected_at(ts)
    assert first == staffing.expected_at(ts) == staffing.expected_at_local(local)


def test_no_table_means_none() -> None:
    assert ComponentConfig().staffing_table(KOLKATA) is None


BROKEN_STAFFING = [
    (
        "unquoted time",
        "components:\n  acd:\n    staffing: [{from: 20:00, expected: 40}]\n",
        'components -> acd -> staffing -> 1 -> from: write the time of day in quotes, e.g. "20:00"',
    ),
    (
        "not a time",
        "components:\n  acd:\n    staffing: [{from: '8am', expected: 40}]\n",
        "components -> acd -> staffing -> 1 -> from:",
    ),
    (
        "negative",
        "components:\n  acd:\n    staffing: [{from: '08:00', expected: -1}]\n",
        "components -> acd -> staffing -> 1 -> expected: Input should be greater than or equal to 0",
    ),
    (
        "more than the seats",
        "components:\n  acd:\n    seats: 100\n    staffing:\n"
        "      - {from: '00:00', expected: 10}\n      - {from: '08:00', expected: 120}\n",
        "components -> acd: staffing -> 2 -> expected: 120 is more than the seats (100)",
    ),
    (
        "repeated time",
        "components:\n  ivr:\n    staffing:\n"
        "      - {from: '08:00', expected: 10}\n      - {from: '08:00', expected: 20}\n",
        "components -> ivr: staffing: each `from` time once; 08:00 repeats",
    ),
    (
        "unknown key",
        "components:\n  acd:\n    staffing: [{from: '08:00', agents: 10}]\n",
        "components -> acd -> staffing -> 1 -> agents: unknown key",
    ),
    (
        "bad site zone",
        "site_timezone: Mars/Olympus\n",
        "site_timezone: unknown time zone 'Mars/Olympus'",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "expected"), BROKEN_STAFFING, ids=[c[0] for c in BROKEN_STAFFING]
)
def test_broken_staffing_is_refused_with_its_key_path(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("site: blr1\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_staffing_shift_reads_from_as_written() -> None:
    shift = StaffingShift.model_validate({"from": "08:00", "expected": 5})
    assert shift.start == time(8, 0)
    assert shift.model_dump(by_alias=True, mode="json") == {"from": "08:00:00", "expected": 5}


# --- site_timezone -------------------------------------------------------------------


def test_calendars_without_a_zone_run_in_the_site_zone(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "site_timezone": "Asia/Kolkata",
            "sla": {
                "calendars": {
                    "default": {"hours": "24x5"},
                    "office": {"hours": "mon-fri 09:00-18:00", "timezone": "Europe/Berlin"},
                },
                "severities": {"minor": {"first_response": "8h", "calendar": "office"}},
            },
        },
    )
    config = load_config(path)
    assert config.site_timezone == KOLKATA
    assert config.sla.calendars["default"].timezone == KOLKATA
    assert config.sla.calendars["office"].timezone == ZoneInfo("Europe/Berlin"), "explicit kept"
    # The 24x5 week starts at Monday 00:00 in Kolkata, i.e. Sunday 18:30 UTC: an incident
    # opened Sunday 19:00 UTC is already on the clock (30 minutes by 19:30).
    calendar = config.sla.calendars["default"].calendar
    sunday = datetime(2026, 11, 29, 19, 0, tzinfo=UTC)
    assert calendar.business_time_between(sunday, sunday.replace(minute=30)).total_seconds() == 1800


def test_the_default_calendar_runs_in_the_site_zone(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {"site_timezone": "America/New_York"}))
    assert config.sla.calendars["default"].timezone == ZoneInfo("America/New_York")


def test_site_timezone_defaults_to_the_hosts(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {}))
    assert config.site_timezone == host_timezone()
    assert config.sla.calendars["default"].timezone == host_timezone()


def test_host_timezone_reads_tz_then_etc(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    assert host_timezone({}, etc) == ZoneInfo("UTC"), "nothing to go by: UTC"
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Kolkata")
    assert host_timezone({}, etc) == KOLKATA
    (etc / "timezone").write_text("Europe/Berlin\n")
    assert host_timezone({}, etc) == ZoneInfo("Europe/Berlin")
    assert host_timezone({"TZ": ":America/New_York"}, etc) == ZoneInfo("America/New_York")
    assert host_timezone({"TZ": "garbage/zone"}, etc) == ZoneInfo("Europe/Berlin")


# --- ccwatch classify ----------------------------------------------------------------


def test_classify_logins_against_the_seats_by_default() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "-c",
            "/nonexistent/config.yaml",
            "classify",
            "--seats",
            "100",
            "--agents-logged-in",
            "80",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "severity: critical (P1)" in result.output
    assert "expected: 100 agents (the seats)" in result.output


def test_classify_logins_against_the_staffing_table(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "site_timezone": "Asia/Kolkata",
            "components": {"acd": {"seats": 100, "staffing": SHIFTS}},
        },
    )
    # 3 a.m., 10 agents planned, 8 logged in: minor, not P1.
    code, out = run(config, "classify", "--agents-logged-in", "8", "--at", "03:00")
    assert code == 0, out
    assert "severity: minor (P3)" in out
    assert "expected: 10 agents (components.acd.staffing at 03:00 Asia/Kolkata)" in out
    # The day shift with the same 8 agents is critical.
    code, out = run(config, "classify", "--agents-logged-in", "8", "--at", "10:00")
    assert "severity: critical (P1)" in out
    # An ISO time is converted to the site zone: 21:30 UTC is 03:00 in Kolkata.
    code, out = run(
        config,
        "classify",
        "--agents-logged-in",
        "8",
        "--at",
        "2026-12-01T21:30:00+00:00",
        "--format",
        "json",
    )
    body = json.loads(out)
    assert (body["severity"], body["agents_expected"]) == ("minor", 10)
    # An explicit --agents-expected wins over the table.
    code, out = run(
        config, "classify", "--agents-logged-in", "8", "--agents-expected", "100", "--at", "03:00"
    )
    assert "severity: critical" in out


def test_classify_login_usage_errors(tmp_path: Path) -> None:
    missing = Path("/nonexistent/config.yaml")
    code, out = run(missing, "classify", "--agents-logged-in", "80")
    assert code == 2 and "--seats" in out
    code, out = run(missing, "classify", "--seats", "100", "--agents-expected", "90")
    assert code == 2 and "--agents-expected needs --agents-logged-in" in out
    code, out = run(
        missing, "classify", "--seats", "100", "--agents-logged-in", "80", "--at", "noon"
    )
    assert code == 2 and "is not HH:MM or an ISO 8601 time" in out


def test_classify_a_small_sample() -> None:
    code, out = run(
        Path("/nonexistent/config.yaml"),
        "classify",
        "--calls-offered",
        "15",
        "--calls-rejected",
        "15",
    )
    assert code == 0
    assert "severity: major (P2)" in out
    assert "15 of 15 calls rejected (100.0%), small sample: at least 79.6%" in out


def test_the_readme_staffing_example_validates() -> None:
    from tests.test_readme_examples import yaml_blocks

    [example] = yaml_blocks("site_timezone")
    config = Config.model_validate({"site": "blr1", **example})
    staffing = config.components["acd"].staffing_table(config.site_timezone)
    assert staffing is not None and staffing.expected_at_local(time(3, 0)) == 10


# --- the pipeline --------------------------------------------------------------------


def test_the_pipeline_expects_the_staffing_of_the_messages_own_time(tmp_path: Path) -> None:
    """A message without agents_expected is measured against the shift of its ``ts`` in
    the site zone (a replayed night-time backlog is judged by the night shift)."""
    from prometheus_client import CollectorRegistry

    from ccwatch.compose import build_incident_service, build_pipeline, open_state

    config = Config.model_validate(
        {
            "site": "blr1",
            "site_timezone": "Asia/Kolkata",
            "state": {"path": str(tmp_path / "state.db")},
            "components": {"acd": {"seats": 100, "staffing": SHIFTS}, "ivr": {"seats": 100}},
            "classification": {"open_after": "0s"},
        }
    )
    registry = CollectorRegistry()
    store = open_state(config.state.path)
    try:
        pipeline = build_pipeline(config, build_incident_service(config, store, registry), registry)

        def severity_at(component: str, local: datetime, **body: int) -> tuple[float, float]:
            """The component's severity and loss gauges after one message at ``local``."""
            ts = local.timestamp()
            topic = f"cc/blr1/{component}/metrics"
            pipeline.handle(topic, json.dumps({"ts": ts, **body}), ts)
            labels = {"site": "blr1", "component": component}
            severity = registry.get_sample_value("ccwatch_component_severity", labels)
            loss = registry.get_sample_value("ccwatch_component_production_loss_ratio", labels)
            assert severity is not None and loss is not None
            return severity, round(loss, 6)

        night = datetime(2026, 12, 1, 3, 0, tzinfo=KOLKATA)
        assert severity_at("acd", night, agents_logged_in=8) == (1, 0.02)  # minor
        day = datetime(2026, 12, 1, 10, 0, tzinfo=KOLKATA)
        assert severity_at("acd", day, agents_logged_in=8) == (3, 0.92)  # critical
        # No table: the seats are expected at any hour.
        assert severity_at("ivr", night, agents_logged_in=80) == (3, 0.2)
    finally:
        store.close()
