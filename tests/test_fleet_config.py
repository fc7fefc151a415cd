"""``sites:`` and ``fleet:``: what is refused, and what one site of a fleet sees
(``Config.for_site``). No ``sites:``: nothing of the fleet is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ccwatch.config import Config, load_config
from ccwatch.errors import ConfigError

PG_STATE = "state: {backend: postgresql, dsn_env: CCWATCH_TEST_FLEET_DSN}\n"


@pytest.fixture(autouse=True)
def _dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCWATCH_TEST_FLEET_DSN", "host=127.0.0.1 dbname=ccwatch")


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: a\nsites: {names: [a, b]}\n", "sites: needs state.backend postgresql"),
        ("site: a\nfleet: {lease_ttl: 10s}\n", "fleet: only with sites:"),
        (PG_STATE + "sites: {}\n", "name the sites (names:, per_site:) or set discover: true"),
        (PG_STATE + "sites: {names: [a, a]}\n", "names: a repeats"),
        (PG_STATE + "site: a\nsites: {names: [a, b]}\n", "site: a names the fleet"),
        (PG_STATE + "sites: {names: ['a/b']}\n", "sites -> names -> 1"),
        (PG_STATE + "sites: {names: [a]}\nmqtt: {client_id: x}\n", "mqtt -> client_id: not with sites:"),
        (
            PG_STATE + "sites: {names: [a]}\nfleet: {lease_ttl: 3s, renew_every: 2s, safety_margin: 1s}\n",
            "renew_every + safety_margin must be shorter than lease_ttl",
        ),
        (
            PG_STATE + "sites: {names: [a], per_site: {b: {components: {ivr: {depends_on: [nope]}}}}}\n",
            "sites -> b -> components:",
        ),
    ],
)
def test_refused_with_the_reason(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_each_site_sees_its_own_components_zone_calendars_and_session(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        PG_STATE
        + "site_timezone: Asia/Kolkata\n"
        + "components: {acd: {seats: 100}}\n"
        + "sla: {calendars: {default: {hours: 24x5}, berlin: {timezone: Europe/Berlin}}}\n"
        + "sites:\n"
        + "  names: [blr1, pune1]\n"
        + "  default: {components: {acd: {seats: 200}}}\n"
        + "  per_site: {nyc1: {site_timezone: America/New_York}}\n"
        + "fleet: {client_id_prefix: cc-fleet}\n",
    )
    assert config.site == "fleet", "site names the fleet when left out"
    assert config.sites is not None and config.sites.configured() == ["blr1", "pune1", "nyc1"]
    blr1, nyc1 = config.for_site("blr1"), config.for_site("nyc1")
    assert blr1.site == "blr1" and blr1.mqtt_client_id == "cc-fleet-blr1"
    assert blr1.components["acd"].seats == 200, "the default of sites without an entry"
    assert nyc1.components["acd"].seats == 100, "a site's own entry: the root's components"
    assert set(blr1.components) == set(config.components)
    assert blr1.site_timezone == ZoneInfo("Asia/Kolkata")
    assert nyc1.site_timezone == ZoneInfo("America/New_York")
    calendars = nyc1.sla.calendars
    assert calendars["default"].timezone == ZoneInfo("America/New_York"), "the site's zone"
    assert calendars["berlin"].timezone == ZoneInfo("Europe/Berlin"), "a named zone stays"
    assert config.sla.calendars["default"].timezone == ZoneInfo("Asia/Kolkata")
    assert nyc1.sla.calendars["default"].calendar.timezone == ZoneInfo("America/New_York")


def test_one_site_imports_nothing_of_the_fleet(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"site: blr1\nstate: {{path: {tmp_path / 'state.db'}}}\n")
    code = (
        "import sys; from pathlib import Path; from ccwatch.config import load_config;"
        "from ccwatch.app import Daemon;"
        f"d = Daemon(load_config({str(path)!r}), Path({str(path)!r}));"
        "from ccwatch.app import build_services;"
        "print(sorted(m for m in sys.modules if m.startswith(('ccwatch.sites', 'ccwatch.fleet.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['ccwatch.fleet.config']", result.stdout


def test_the_readme_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Several sites and workers", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    monkeypatch.setenv("CCWATCH_STATE_DSN", "host=127.0.0.1 dbname=ccwatch")
    config = load(tmp_path, PG_STATE.replace("CCWATCH_TEST_FLEET_DSN", "CCWATCH_STATE_DSN") + example.group(1))
    assert config.sites is not None and config.sites.configured() == ["blr1", "blr2", "pune1", "nyc1"]
    assert config.for_site("pune1").components["acd"].seats == 200


def test_discovery_finds_the_sites_publishing_under_the_prefix(
    tmp_path: Path, mosquitto: Any
) -> None:
    import asyncio

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from ccwatch.sites import discover_sites

    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    try:
        # Retained: the discovery pass gets them when it subscribes, whenever that is.
        for topic in ("cc/blr7/acd/metrics", "cc/pune3/ivr/status", "other/x1/acd/metrics"):
            publisher.publish(topic, b'{"up": true}', qos=1, retain=True).wait_for_publish(10)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    config = load(
        tmp_path,
        PG_STATE + f"mqtt: {{port: {mosquitto.port}}}\nsites: {{discover: true}}\n",
    )
    found = asyncio.run(discover_sites(config, "ccwatch-test-discovery", listen=1.0))
    assert found == {"blr7", "pune3"}


def test_the_readme_scrapes_every_worker_as_one_job() -> None:
    import re

    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Several sites and workers", 1)[1].split("\n## ", 1)[0]
    (scrape,) = [
        loaded
        for loaded in (yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S))
        if isinstance(loaded, dict) and "scrape_configs" in loaded
    ]
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "ccwatch", "what contrib/prometheus/ccwatch-rules.yml selects"
    (targets,) = job["static_configs"]
    assert len(targets["targets"]) == 3
