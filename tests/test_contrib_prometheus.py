"""contrib/: the Prometheus rules and the Grafana dashboard, checked by promtool and run
against a real Prometheus scraping a real ccwatch.

- promtool checks the rules and runs their unit tests (contrib/prometheus/*.test.yml);
- every alert has fixtures that fire it and fixtures where it must stay quiet, and
  annotations that tell the on-call what to run;
- the dashboard is a Grafana JSON model whose panels all use the ``${datasource}``
  variable;
- a real Prometheus (Debian ``prometheus``), configured from README's snippet, scrapes a
  ccwatch daemon fed over MQTT, and every expression of the rules and of the dashboard
  is sent to its query API: each must parse, and the core ones return series for the
  components that sent metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    REPO_ROOT,
    DaemonProcess,
    Mosquitto,
    base_config,
    free_port,
    wait_until,
)
from tests.test_e2e_core import Publisher

CONTRIB = REPO_ROOT / "contrib"
RULES = CONTRIB / "prometheus" / "ccwatch-rules.yml"
RULE_TESTS = CONTRIB / "prometheus" / "ccwatch-rules.test.yml"
DASHBOARD = CONTRIB / "grafana" / "ccwatch.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of a collapsed row
    return panels


def dashboard_exprs() -> list[tuple[str, str]]:
    """("<panel title> <refId>", expr) of every query target of the dashboard."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


# --- promtool -----------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", RULES.name],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_fixtures_that_fire_it_and_that_do_not() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts no fixture fires"
    assert names - quiet == set(), "alerts with no fixture where they must stay quiet"
    # the brief's list of things to alert on, by the metric each one reads
    exprs = " ".join(rule["expr"] for rule in alerts())
    for needed in (
        "up{",
        "ccwatch_mqtt_connected",
        "ccwatch_ingest_messages_total",
        "ccwatch_outbox_oldest_age_seconds",
        'outcome="dead"',
        "ccwatch_checklist_check_status",
        "ccwatch_retention_last_failure_timestamp_seconds",
        "ccwatch_retention_last_success_timestamp_seconds",
        "ccwatch_state_store_ok",
    ):
        assert needed in exprs, needed


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_alert_tells_the_on_call_what_to_do(alert: str) -> None:
    (rule,) = [rule for rule in alerts() if rule["alert"] == alert]
    assert alert.startswith("Ccwatch")
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook"}
    assert all(len(text) > 20 for text in annotations.values())
    # the runbook names the ccwatch commands (or the service) to look at first
    assert re.search(r"\b(ccwatch [a-z-]+|systemctl \w+ ccwatch)", annotations["runbook"])


# --- the Grafana dashboard -----------------------------------------------------------


def test_dashboard_is_a_grafana_model_on_the_datasource_variable() -> None:
    model = dashboard()
    assert model["schemaVersion"] == 39
    assert model["uid"] == "ccwatch" and model["title"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "site"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert target["expr"].strip()


def test_dashboard_has_the_panels_an_operator_expects() -> None:
    by_title = {panel["title"]: panel for panel in dashboard_panels()}
    for title in (
        "Production loss per component",
        "Severity per component",
        "Incidents open by severity",
        "Ingest rate",
        "Rejections and drops by reason",
        "Outbox depth",
        "Outbox oldest event age",
        "Checklist results",
        "Retention rows deleted",
    ):
        assert title in by_title, title
    loss = by_title["Production loss per component"]["fieldConfig"]["defaults"]
    assert loss["unit"] == "percentunit"
    assert [step["value"] for step in loss["thresholds"]["steps"]] == [None, 0.02, 0.20]
    assert loss["custom"]["thresholdsStyle"]["mode"] == "line+area"
    severity = by_title["Severity per component"]
    assert severity["type"] == "state-timeline"
    texts = {
        option["text"]
        for mapping in severity["fieldConfig"]["defaults"]["mappings"]
        for option in mapping["options"].values()
    }
    assert texts == {"none", "minor", "major", "critical"}


# --- a real Prometheus ---------------------------------------------------------------

SEEDED = {
    # 23 of 100 agents cannot take calls: critical
    "acd": {"seats": 100, "agents_unable_to_take_calls": 23, "up": True},
    # 48 of 400 calls rejected: major
    "dialer": {"calls_offered": 400, "calls_rejected": 48, "up": True},
    "ivr": {"seats": 40, "agents_unable_to_take_calls": 0, "up": True},
}


def readme_prometheus_config() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    (config,) = [
        loaded
        for loaded in (yaml.safe_load(block) for block in blocks)
        # The one with the rules (the fleet section's shows only the scrape of N workers).
        if isinstance(loaded, dict) and "scrape_configs" in loaded and "rule_files" in loaded
    ]
    assert config["rule_files"][0].endswith("/ccwatch-rules.yml")
    assert config["scrape_configs"][0]["job_name"] == "ccwatch"  # what the rules select
    return config


class Prometheus:
    """``prometheus`` on a free port with its own storage, scraping one ccwatch."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        # README's snippet, pointed at this ccwatch and these rules, scraping every second
        config = readme_prometheus_config()
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(RULES)]
        (job,) = config["scrape_configs"]
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": [target]}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        (workdir / "data").mkdir()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, interval=0.1)

    def query(self, expr: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        response = self.query(expr)
        assert response.status_code == 200, f"{expr}: {response.text}"
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        workdir = tmp_path / f"prometheus{len(started)}"
        workdir.mkdir()
        server = Prometheus(workdir, target)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables in an expression, replaced by concrete values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown Grafana variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def daemon_messages(daemon: DaemonProcess) -> float:
    for line in daemon.get("/metrics").text.splitlines():
        if line.startswith("ccwatch_ingest_messages_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.slow
def test_every_rule_and_dashboard_expression_runs_on_a_real_prometheus(
    tmp_path: Path,
    mosquitto: Mosquitto,
    daemon_factory: Callable[..., DaemonProcess],
    prometheus_factory: Callable[[str], Prometheus],
) -> None:
    config = base_config(
        tmp_path,
        mqtt={"port": mosquitto.port},
        # One incident per seeded component (the panels count them by severity).
        classification={
            "open_after": "0s",
            "window": "5m",
            "stale_after": "10m",
            "group_by": "dependencies",
        },
    )
    daemon = daemon_factory(config)
    daemon.wait_http("/readyz")
    publisher = Publisher(mosquitto)
    try:
        for component, payload in SEEDED.items():
            publisher.send(component, payload)
        wait_until(lambda: daemon_messages(daemon) >= len(SEEDED), timeout=15)

        server = prometheus_factory(daemon.listen)

        def scraped_at_least(count: float) -> bool:
            found = server.vector(f'ccwatch_ingest_messages_total{{job="ccwatch"}} >= {count}')
            return bool(found)

        wait_until(lambda: scraped_at_least(len(SEEDED)), timeout=30, interval=0.2)
        # a second round of payloads, seen by a later scrape: rates have two points
        for component, payload in SEEDED.items():
            publisher.send(component, payload)
        wait_until(lambda: daemon_messages(daemon) >= 2 * len(SEEDED), timeout=15)
        wait_until(lambda: scraped_at_least(2 * len(SEEDED)), timeout=30, interval=0.2)
    finally:
        publisher.close()
    scrapes = server.vector('count_over_time(up{job="ccwatch"}[10m])')
    assert float(scrapes[0]["value"][1]) >= 2

    values = {
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "1h",
        "datasource": "prometheus",
        "job": "ccwatch",
        # a multi-value variable: Grafana escapes regex characters for PromQL's string
        "instance": re.escape(daemon.listen).replace("\\", "\\\\"),
        "site": "blr1",
    }
    expressions = [(f"rule {r.get('record') or r['alert']}", r["expr"]) for r in rules()]
    expressions += [
        (f"panel {title}", substitute(expr, values)) for title, expr in dashboard_exprs()
    ]
    failures = []
    results: dict[str, list[dict[str, Any]]] = {}
    for where, expr in expressions:
        response = server.query(expr)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            failures.append(f"{where}: {body.get('error', response.text)}")
        else:
            results[where] = body["data"]["result"]
    assert failures == [], "\n".join(failures)
    assert len(results) == len(expressions) >= 30

    # the core ones return series for the seeded components
    def by_component(where: str) -> dict[str, float]:
        return {s["metric"]["component"]: float(s["value"][1]) for s in results[where]}

    for where in (
        "panel Production loss per component A",
        "rule site_component:ccwatch_component_production_loss_ratio:max",
    ):
        loss = by_component(where)
        assert set(SEEDED) <= set(loss), where
        assert loss["acd"] == pytest.approx(0.23) and loss["ivr"] == 0.0
        assert loss["dialer"] == pytest.approx(0.12)
    for where in (
        "panel Severity per component A",
        "rule site_component:ccwatch_component_severity:max",
    ):
        severity = by_component(where)
        assert (severity["acd"], severity["dialer"], severity["ivr"]) == (3.0, 2.0, 0.0), where
    (rate,) = results["panel Ingest rate A"]
    assert float(rate["value"][1]) > 0
    (recorded_rate,) = results["rule instance:ccwatch_ingest_messages:rate5m"]
    assert float(recorded_rate["value"][1]) > 0
    open_by_severity = {
        s["metric"]["severity"]: float(s["value"][1])
        for s in results["panel Incidents open by severity A"]
    }
    assert open_by_severity["critical"] >= 1 and open_by_severity["major"] >= 1
    # a healthy daemon fires none of its alerts
    assert [
        where for where, found in results.items() if where.startswith("rule Ccwatch") and found
    ] == []

    # the dashboard's query variables resolve against this Prometheus
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert found, variable["definition"]
        selector, label = substitute(found.group(1), values), found.group(2)
        answer = httpx.get(
            f"{server.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
        ).json()
        assert answer["status"] == "success" and answer["data"], f"${variable['name']}: {answer}"

    # Prometheus loaded every rule of the file and evaluates the alerts without error
    # (the recording group runs once a minute; its expressions ran above)
    def alert_rules_evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{server.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert sum(len(group["rules"]) for group in groups) == len(rules())
        (alerting,) = [group for group in groups if group["name"] == "ccwatch.alerts"]
        evaluated = all(rule["health"] != "unknown" for rule in alerting["rules"])
        return alerting["rules"] if evaluated else None

    evaluated = wait_until(alert_rules_evaluated, timeout=30, interval=0.2)
    assert {rule["name"]: rule["health"] for rule in evaluated} == {
        rule["alert"]: "ok" for rule in alerts()
    }
    assert [rule["name"] for rule in evaluated if rule["state"] != "inactive"] == []
