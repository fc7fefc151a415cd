"""The config: the shipped file validates; broken ones name the key path and exit 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import available_timezones

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.config import load_config, parse_listen, resolve_config_path
from ccwatch.durations import format_duration, parse_duration
from ccwatch.errors import ConfigError
from ccwatch.severity import Severity

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"


def run_check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_shipped_config_validates() -> None:
    result = run_check_config(SHIPPED)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "site blr1" in result.stdout


def test_shipped_config_defaults_follow_seed_004() -> None:
    config = load_config(SHIPPED)
    assert config.classification.critical_at == pytest.approx(0.20)
    assert config.classification.major_above == pytest.approx(0.02)
    assert config.components["reports"].max_severity is Severity.MAJOR
    assert config.components["acd"].max_severity is Severity.CRITICAL
    assert set(config.components) >= {"acd", "ivr", "dialer", "voice_logger", "reports"}
    assert config.mqtt.qos == 1 and config.mqtt.clean_session is False


MINIMAL = "site: blr1\n"

# (name, YAML text, expected substring of one error line)
BROKEN_CONFIGS = [
    ("unknown top-level key", MINIMAL + "mqqt: {host: x}\n", "mqqt: unknown key; did you mean 'mqtt'?"),
    ("unknown nested key", MINIMAL + "mqtt: {prot: 1883}\n", "mqtt -> prot: unknown key; did you mean 'port'?"),
    ("wrong type", MINIMAL + "mqtt: {port: eighteen}\n", "mqtt -> port: Input should be a valid integer"),
    ("port out of range", MINIMAL + "mqtt: {port: 70000}\n", "mqtt -> port: Input should be less than or equal to 65535"),
    ("negative duration", MINIMAL + "classification: {open_after: -30s}\n", "classification -> open_after: duration '-30s' is negative"),
    ("bad duration unit", MINIMAL + "classification: {window: 5 minutes}\n", "classification -> window: invalid duration '5 minutes'"),
    ("bad YAML", MINIMAL + "mqtt: {host: [unclosed\n", "YAML syntax error at line"),
    ("missing required key", "mqtt: {host: x}\n", "site: required key is missing"),
    ("missing secret env", MINIMAL + "tickets:\n  - {type: webhook, url: 'https://h.example/x', secret_env: CCWATCH_TEST_UNSET_SECRET}\n", "tickets -> 1 -> secret_env: environment variable CCWATCH_TEST_UNSET_SECRET is not set"),
    ("second list item bad url", MINIMAL + "tickets:\n  - {type: webhook, url: 'https://h.example/x'}\n  - {type: webhook, name: b, url: 'not a url'}\n", "tickets -> 2 -> url:"),
    ("inline secret", MINIMAL + "mqtt: {password: hunter2hunter2}\n", "mqtt -> password: unknown key; secrets are never written inline"),
    ("thresholds out of order", MINIMAL + "classification: {critical_at: 0.1, major_above: 0.3}\n", "major_above (0.3) must be below critical_at (0.1)"),
    ("unknown severity", MINIMAL + "components: {reports: {max_severity: catastrophic}}\n", "components -> reports -> max_severity: unknown severity 'catastrophic'"),
    ("bad listen address", MINIMAL + "http: {listen: 'localhost'}\n", "http -> listen: 'localhost' is not host:port"),
    ("not a mapping", "- just\n- a list\n", "the config must be a YAML mapping"),
    ("unknown ticket type", MINIMAL + "tickets: [{type: carrier_pigeon}]\n", "tickets -> 1: Input tag 'carrier_pigeon'"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN_CONFIGS, ids=[c[0] for c in BROKEN_CONFIGS])
def test_broken_config_is_refused_with_its_path(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_check_config_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "mqtt: {prot: 1, qos: 7}\nhttp: {listen: nope}\n")
    result = run_check_config(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("mqtt -> prot" in line for line in lines)
    assert any("mqtt -> qos" in line for line in lines)
    assert any("http -> listen" in line for line in lines)


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("site: blr1\nmqtt:\n  host: 127.0.0.1\n   port: 1883\n")
    result = run_check_config(path)
    assert result.returncode == 2
    assert "line 4" in result.stderr


def test_secret_env_set_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        MINIMAL + "tickets:\n  - {type: webhook, url: 'https://h.example/x', secret_env: CCWATCH_T_SECRET}\n"
    )
    assert run_check_config(path, env={"CCWATCH_T_SECRET": "s3cr3t-value"}).returncode == 0


def test_secret_file_must_be_readable(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + f"mqtt: {{password_file: {tmp_path / 'missing'}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(p.startswith("mqtt -> password_file: cannot read secret file") for p in caught.value.problems)


def test_disabled_upstream_may_name_an_unset_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        MINIMAL
        + "tickets:\n  - {enabled: false, type: webhook, url: 'https://h.example/x', secret_env: CCWATCH_NOPE}\n"
    )
    assert load_config(path).tickets[0].enabled is False


def test_components_merge_with_the_standard_five(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "components: {acd: {seats: 250}, chat: {seats: 10}}\n")
    config = load_config(path)
    assert config.components["acd"].seats == 250
    assert config.components["chat"].seats == 10
    assert config.components["reports"].max_severity is Severity.MAJOR


def test_config_is_frozen() -> None:
    config = load_config(SHIPPED)
    with pytest.raises(ValueError, match="frozen"):
        config.site = "other"  # type: ignore[misc]


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CCWATCH_CONFIG", raising=False)
    # The system-wide path, as an installed package would have it (and this machine may).
    etc = tmp_path / "etc" / "ccwatch" / "config.yaml"
    monkeypatch.setattr("ccwatch.config.DEFAULT_CONFIG_PATHS", (Path("config.yaml"), etc))
    assert resolve_config_path("explicit.yaml") == Path("explicit.yaml")
    assert resolve_config_path(None) == Path("config.yaml")  # neither exists: the local one
    etc.parent.mkdir(parents=True)
    etc.write_text("site: blr1\n")
    assert resolve_config_path(None) == etc
    Path("config.yaml").write_text("site: blr1\n")
    assert resolve_config_path(None) == Path("config.yaml")
    monkeypatch.setenv("CCWATCH_CONFIG", "/srv/cc.yaml")
    assert resolve_config_path(None) == Path("/srv/cc.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("30s", 30), ("5m", 300), ("6h", 21600), ("2d", 172800), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trips(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "-1s", "1y", "1h-5m"])
def test_bad_durations_say_why(text: str) -> None:
    if text == "5":  # a bare number in a string is not a duration; as a YAML int it is seconds
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(text)
        return
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:9817") == ("127.0.0.1", 9817)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("localhost:80") == ("localhost", 80)
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1:99999")


def test_sample_config_dumps_and_reloads(tmp_path: Path) -> None:
    """The validated model can be written back and read again (what `--format json` relies on)."""
    config = load_config(SHIPPED)
    dumped = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    path = tmp_path / "roundtrip.yaml"
    path.write_text(yaml.safe_dump(dumped))
    assert load_config(path) == config


def test_load_config_holds_the_validated_checklists(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "daily.yaml").write_text(
        "schedule: {cron: '30 6 * * *', timezone: Asia/Kolkata}\nchecks:\n  - {id: m, type: memory}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "checklists: {dir: lists}\n")
    config = load_config(path)
    assert config.checklists.dir == lists  # resolved against the config file's folder
    (daily,) = config.checklists.definitions
    assert (daily.name, daily.checks[0].id) == ("daily", "m")
    assert daily.schedule is not None and str(daily.schedule.timezone) == "Asia/Kolkata"
    # Read once: what was loaded stays what the daemon runs until the next load.
    (lists / "daily.yaml").write_text("checks: []\n")
    assert config.checklists.definitions == (daily,)
    result = run_check_config(path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{lists / 'daily.yaml'}: checks: List should have at least 1 item after validation, not 0"
    )


def test_checklists_are_not_written_inline(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "checklists: {definitions: [{name: x}]}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        "checklists: definitions: checklists are written as files in the `dir` folder, "
        "not in config.yaml"
    ]


def test_check_config_counts_the_checklists() -> None:
    result = run_check_config(SHIPPED)
    assert result.returncode == 0, result.stderr
    assert " 1 checklist(s), " in result.stdout


UNKNOWN_ZONE = "unknown time zone 'Mars/Olympus'; use an IANA name such as 'Asia/Kolkata' or 'UTC'"


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("retention: {schedule: {timezone: Mars/Olympus}}", "retention -> schedule -> timezone"),
        (
            "retention: {window: {start: '01:00', end: '05:00', timezone: Mars/Olympus}}",
            "retention -> window -> timezone",
        ),
        ("sla: {calendars: {default: {timezone: Mars/Olympus}}}", "sla -> calendars -> default -> timezone"),
    ],
)
def test_every_time_zone_is_refused_with_the_same_words(tmp_path: Path, section: str, path: str) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(MINIMAL + section + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert caught.value.problems == [f"{path}: {UNKNOWN_ZONE}"]


def test_classification_thresholds_are_built_from_the_config(tmp_path: Path) -> None:
    from ccwatch.classify import Thresholds, severity_for

    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "classification: {critical_at: 0.1, major_above: 0.01, min_calls_offered: 5}\n")
    classification = load_config(path).classification
    assert classification.thresholds == Thresholds(critical_at=0.1, major_above=0.01, min_calls_offered=5)
    assert severity_for(0.15, classification.thresholds) is Severity.CRITICAL  # default would say major
    assert load_config(SHIPPED).classification.thresholds == Thresholds()  # seed 004's


def test_features_do_not_import_the_root_config() -> None:
    """Each feature gets its own section; only the CLI and the daemon's root see Config."""
    modules = [
        "ccwatch.commands.checklists",
        "ccwatch.checklists.config",
        "ccwatch.checklists.service",
        "ccwatch.notify.email",
        "ccwatch.commands.retention",
        "ccwatch.retention.job",
        "ccwatch.scheduler",
        "ccwatch.sla",
        "ccwatch.heartbeat.service",
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('ccwatch.config' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


@given(st.sampled_from(sorted(available_timezones())))
def test_every_iana_zone_is_one_time_zone_type_that_round_trips(name: str) -> None:
    from ccwatch.cron import CronSchedule

    schedule = CronSchedule.model_validate({"cron": "30 6 * * *", "timezone": name})
    assert str(schedule.timezone) == name
    assert schedule.model_dump(mode="json")["timezone"] == name
    assert CronSchedule.model_validate(schedule.model_dump(mode="json")) == schedule
    fire = schedule.trigger().get_next_fire_time(None, datetime.now(UTC))
    assert fire is not None and fire.tzinfo == schedule.timezone
