"""The support process end to end: the real broker, ``ccwatch run`` and a webhook receiver.
A critical incident opens, resolves, comes back (reopen: one ticket), and its RCA draft
and RCA record go through the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
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


def test_reopen_rca_draft_and_rca_record(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd"])
    config["incidents"] = {"reopen_window": "10m"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")

    def incident() -> dict[str, Any] | None:
        found = daemon.get("/api/incidents").json()["incidents"]
        return found[0] if found else None

    publisher.send("acd", agents(25))
    opened = wait_until(lambda: (i := incident()) and i["state"] == "open" and i, timeout=20)
    iid = opened["id"]
    publisher.send("acd", agents(0))
    wait_until(lambda: (i := incident()) and i["state"] == "resolved", timeout=20)
    publisher.send("acd", agents(30))  # back within the reopen window
    wait_until(lambda: (i := incident()) and i["state"] == "open", timeout=20)
    assert len(daemon.get("/api/incidents").json()["incidents"]) == 1  # the same incident
    wait_until(lambda: "reopen" in events_of(receiver, iid), timeout=20)
    assert events_of(receiver, iid)[:3] == ["open", "resolve", "reopen"]
    assert sum(1 for r in receiver.accepted if r.json["event"] == "open") == 1  # one ticket

    publisher.send("acd", agents(0))
    wait_until(lambda: (i := incident()) and i["state"] == "resolved", timeout=20)
    draft = wait_until(
        lambda: (r := daemon.get(f"/api/incidents/{iid}/rca-draft")).status_code == 200 and r,
        timeout=20,
    )
    assert draft.text.startswith("# RCA draft: acd at blr1, critical (P1)")
    cli = [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path)]
    printed = subprocess.run(
        [*cli, "incidents", "rca-draft", iid[:8]],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert "## Timeline" in printed.stdout and "reopened" in printed.stdout

    page = daemon.get(f"/incidents/{iid}").text
    assert '<pre class="rca-draft"># RCA draft: acd at blr1' in page
    assert 'id="rca-delivered"' in page  # the RCA-delivered form (the token is typed)
    assert daemon.get(f"/api/incidents/{iid}").json()["rca_draft"].startswith("# RCA draft")

    url = f"{daemon.base_url}/api/incidents/{iid}/rca"
    assert httpx.post(url, json={"delivered": "x"}, timeout=5).status_code == 401
    recorded = subprocess.run(
        [*cli, "incidents", "rca", iid, "--delivered", "https://wiki.example/rca/42"],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    shown = daemon.get(f"/api/incidents/{iid}").json()
    changes = [entry["change"] for entry in shown["timeline"]]
    assert "rca_delivered" in changes
    wait_until(lambda: "rca_delivered" in events_of(receiver, iid), timeout=20)
    page = daemon.get(f"/incidents/{iid}").text
    assert 'class="rca-done"' in page and "https://wiki.example/rca/42" in page
    assert 'id="rca-delivered"' not in page


def test_reminders_until_acknowledged_then_auto_close_after_silence(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """An unacknowledged critical incident is re-sent every ``repeat_interval`` until it is
    acknowledged; when its component then falls silent it goes ``nodata`` and, after
    ``auto_close_after``, is closed ``expired`` with an event upstream."""
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd"])
    config["classification"] = {**config["classification"], "stale_after": "2s"}
    config["incidents"] = {"auto_close_after": "3s"}
    config["escalation"] = {"repeat_interval": "2s"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")

    def incident() -> dict[str, Any] | None:
        found = daemon.get("/api/incidents").json()["incidents"]
        return found[0] if found else None

    def reminded_twice() -> bool:
        publisher.send("acd", agents(25))  # the fault goes on, reported every poll
        found = incident()
        return bool(found) and events_of(receiver, found["id"]).count("reminder") >= 2

    wait_until(reminded_twice, timeout=30, interval=0.3)
    iid = incident()["id"]  # type: ignore[index]
    acked = httpx.post(
        f"{daemon.base_url}/api/incidents/{iid}/ack",
        json={"by": "asha"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert acked.status_code == 200, acked.text
    # Silence: nodata after stale_after, expired auto_close_after later (at least 5 s, in
    # which two more reminders would have gone out had the ack not stopped them).
    wait_until(lambda: "expire" in events_of(receiver, iid), timeout=30)
    events = events_of(receiver, iid)
    assert events[0] == "open"
    after_ack = events[events.index("acknowledge") + 1 :]
    assert "reminder" not in after_ack
    assert after_ack[-2:] == ["nodata", "expire"]
    shown = daemon.get(f"/api/incidents/{iid}").json()
    assert shown["state"] == "expired"
    changes = [entry["change"] for entry in shown["timeline"]]
    assert changes.count("reminder") >= 2 and "expired" in changes
