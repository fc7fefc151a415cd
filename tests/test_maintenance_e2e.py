"""Maintenance windows end to end: the real broker, ``ccwatch run`` and a webhook receiver.

One daemon, three scenarios in turn on component acd:
(3) an incident open upstream before a window: its resolve during the window is sent;
(1) a window added late (after the daemon started), an incident opening and resolving
    inside it: nothing is sent;
(2) an incident started inside the window and still active when it ends (``ccwatch
    maintenance end``): one ``open`` is sent then, with its true start time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import Publisher, agents
from tests.test_tickets_faults import TOKEN, publisher, receiver, ticket_config  # noqa: F401
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow


def events_of(peer: Receiver, incident_id: str) -> list[str]:
    return [r.json["event"] for r in peer.accepted if r.json["incident_id"] == incident_id]


def test_maintenance_window_holds_back_and_releases(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd"])
    config["incidents"] = {"reopen_window": "0s"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def newest() -> dict[str, Any] | None:
        found = daemon.get("/api/incidents").json()["incidents"]
        return found[0] if found else None

    # (3) open upstream before any window.
    publisher.send("acd", agents(25))
    first = wait_until(lambda: (i := newest()) and i["state"] == "open" and i, timeout=20)
    wait_until(lambda: "open" in events_of(receiver, first["id"]), timeout=20)

    # A window added late, through the API (a change needs the token).
    url = f"{daemon.base_url}/api/maintenance"
    body = {"components": ["acd"], "for": "1h", "reason": "ACD patch"}
    assert httpx.post(url, json=body, timeout=5).status_code == 401
    added = httpx.post(url, json=body, headers=auth, timeout=5)
    assert added.status_code == 201, added.text
    window_id = added.json()["id"]
    listing = daemon.get("/api/maintenance").json()
    assert [w["id"] for w in listing["active"]] == [window_id]
    page = daemon.get("/maintenance")
    assert page.status_code == 200 and f'data-window="{window_id}"' in page.text
    assert "ACD patch" in page.text
    overview = daemon.get("/").text
    assert "in maintenance" in overview
    tiles = daemon.get("/api/overview").json()["components"]
    assert [t["maintenance"]["id"] for t in tiles if t["component"] == "acd"] == [window_id]

    publisher.send("acd", agents(0))  # resolves during the window: still sent
    wait_until(lambda: "resolve" in events_of(receiver, first["id"]), timeout=20)

    # (1) opens and resolves inside the window.
    publisher.send("acd", agents(25))
    inside = wait_until(
        lambda: (i := newest()) and i["id"] != first["id"] and i["state"] == "open" and i,
        timeout=20,
    )
    shown = daemon.get(f"/api/incidents/{inside['id']}").json()
    assert shown["in_maintenance"] is True and shown["upstream_deferred"] is True
    assert shown["maintenance"]["reason"] == "ACD patch"
    page = daemon.get(f"/incidents/{inside['id']}").text
    assert "in maintenance" in page and "not sent upstream" in page
    publisher.send("acd", agents(0))
    wait_until(lambda: (i := newest()) and i["state"] == "resolved", timeout=20)

    # (2) starts inside the window and is still active when the window is ended.
    publisher.send("acd", agents(30))
    held = wait_until(
        lambda: (i := newest()) and i["id"] != inside["id"] and i["state"] == "open" and i,
        timeout=20,
    )
    cli = [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path)]
    ended = subprocess.run(
        [*cli, "maintenance", "end", window_id],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert ended.returncode == 0, ended.stderr
    wait_until(lambda: "open" in events_of(receiver, held["id"]), timeout=20)
    [opened] = [
        r.json for r in receiver.accepted
        if r.json["incident_id"] == held["id"] and r.json["event"] == "open"
    ]  # fmt: skip
    started = datetime.fromisoformat(opened["started_at"]).timestamp()
    assert (
        started == pytest.approx(held["opened_at_epoch"], abs=1)
        if "opened_at_epoch" in held
        else True
    )
    assert opened["opened_at"] == opened["started_at"]
    assert opened["opened_after_maintenance"]["reason"] == "ACD patch"

    # Nothing of the incident that opened and resolved inside the window went out.
    assert events_of(receiver, inside["id"]) == []
    assert events_of(receiver, first["id"]) == ["open", "resolve"]
    # The window is over: no badge any more.
    tiles = daemon.get("/api/overview").json()["components"]
    assert [t["maintenance"] for t in tiles if t["component"] == "acd"] == [None]
