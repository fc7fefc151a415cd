"""The daemon as systemd runs it: a subprocess answering HTTP, reloading, stopping."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DaemonProcess, Mosquitto, base_config, wait_until


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


@pytest.fixture
def daemon(
    tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess]
) -> DaemonProcess:
    return daemon_factory(base_config(tmp_path, mqtt={"port": mosquitto.port}))


def test_healthz_readyz_and_unknown_paths(daemon: DaemonProcess) -> None:
    health = daemon.get("/healthz")
    assert health.status_code == 200 and health.text == "ok\n"
    ready = daemon.wait_http("/readyz")
    assert ready.json()["ready"] is True
    missing = daemon.get("/no/such/page")
    assert missing.status_code == 404
    assert "Traceback" not in missing.text
    page = daemon.get("/")
    assert page.status_code == 200 and "site blr1" in page.text


def test_metrics_parse_and_pass_promtool(daemon: DaemonProcess) -> None:
    response = daemon.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"ccwatch_build_info", "ccwatch_config_reload_failures", "process_resident_memory_bytes"} <= families
    assert metric_value(response.text, "ccwatch_config_info", {"site": "blr1"}) == 1.0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus); exposition parsed only")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=response.text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sigterm_stops_cleanly_within_5_seconds(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    daemon.signal(signal.SIGTERM)
    try:
        code = daemon.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 5 s after SIGTERM; its log:\n{daemon.log()}")
    assert code == 0
    assert "stopping" in daemon.log()


def test_sighup_with_broken_config_keeps_the_old_one(daemon: DaemonProcess) -> None:
    good = daemon.config
    daemon.config_path.write_text("site: blr1\nmqtt: {prot: 1883}\n")
    daemon.signal(signal.SIGHUP)

    def refused() -> bool:
        text = daemon.get("/metrics").text
        return metric_value(text, "ccwatch_config_reload_failures_total") == 1.0

    wait_until(refused)
    text = daemon.get("/metrics").text
    assert metric_value(text, "ccwatch_config_last_reload_successful") == 0.0
    assert daemon.get("/healthz").status_code == 200
    assert "config reload refused" in daemon.log() and "mqtt -> prot" in daemon.log()
    # A valid config afterwards is taken again.
    daemon.write_config(good)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: metric_value(daemon.get("/metrics").text, "ccwatch_config_last_reload_successful") == 1.0)


def test_sighup_with_valid_changed_config_takes_it(daemon: DaemonProcess) -> None:
    changed: dict[str, Any] = {**daemon.config, "site": "pune2"}
    daemon.write_config(changed)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: metric_value(daemon.get("/metrics").text, "ccwatch_config_info", {"site": "pune2"}) == 1.0)
    assert metric_value(daemon.get("/metrics").text, "ccwatch_config_info", {"site": "blr1"}) is None
    assert "site pune2" in daemon.get("/").text
    assert "config reloaded" in daemon.log()


def test_sighup_moving_http_listen_rebinds(daemon: DaemonProcess) -> None:
    from tests.conftest import free_port

    new_listen = f"127.0.0.1:{free_port()}"
    daemon.write_config({**daemon.config, "http": {"listen": new_listen}})
    daemon.signal(signal.SIGHUP)
    daemon.wait_http("/healthz")  # base_url follows the file, so this polls the new address


def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("site: blr1\nhttp: {listen: 'nope'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "run"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "http -> listen" in result.stderr


def test_unwritable_state_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = base_config(tmp_path, state={"path": str(blocker / "state.db")})
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(path), "run"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "cannot open state database" in result.stderr


def test_sd_notify_messages_arrive_in_order(
    tmp_path: Path, mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    socket_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(socket_path))
    receiver.settimeout(0.2)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except TimeoutError:
                return messages

    env = {"NOTIFY_SOCKET": str(socket_path), "WATCHDOG_USEC": "400000"}
    daemon = daemon_factory(base_config(tmp_path, mqtt={"port": mosquitto.port}), env=env)
    wait_until(lambda: any("READY=1" in m for m in drain()))
    wait_until(lambda: sum("WATCHDOG=1" in m for m in drain()) >= 3)  # pinged every 0.2 s
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: any("RELOADING=1" in m for m in drain()))
    wait_until(lambda: sum("READY=1" in m for m in drain()) >= 2)
    assert daemon.stop() == 0
    drain()
    receiver.close()

    kinds = [m.split("\n")[0] for m in messages if not m.startswith("WATCHDOG=1")]
    assert kinds[0] == "READY=1"
    reloading = kinds.index("RELOADING=1")
    assert "READY=1" in kinds[reloading + 1 :]
    assert kinds[-1] == "STOPPING=1"
    ready_message = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=watching site blr1" in ready_message


def test_no_notify_socket_means_no_notifications(daemon: DaemonProcess) -> None:
    # Run by hand: nothing to notify, and nothing breaks.
    time.sleep(0.2)
    assert daemon.get("/healthz").status_code == 200
    assert "cannot notify systemd" not in daemon.log()
