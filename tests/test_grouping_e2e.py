"""One ticket per fault end to end: the real broker, ``ccwatch run`` and a webhook receiver.

ivr and dialer depend on acd. ACD goes critical; once its ticket is open, IVR and dialer go
critical too: they join ACD's incident (one upstream ``open``, ``update`` events naming
them). Then dialer recovers and ACD resolves while IVR is still down: IVR opens its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccwatch.incidents.lifecycle import SITE_WIDE
from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import Publisher, agents, metric
from tests.test_tickets_faults import TOKEN, publisher, receiver, ticket_config  # noqa: F401
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow


def upstream_events(peer: Receiver) -> list[tuple[str, str]]:
    """(event, component) of every request the receiver accepted, in order."""
    return [(r.json["event"], r.json["component"]) for r in peer.accepted]


def test_dependants_failing_after_acd_give_one_ticket(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd", "ivr", "dialer"])
    config["components"]["ivr"]["depends_on"] = ["acd"]
    config["components"]["dialer"]["depends_on"] = ["acd"]
    config["classification"]["group_window"] = "2m"
    config["incidents"] = {"reopen_window": "0s"}
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")

    def incidents() -> list[dict[str, Any]]:
        return list(daemon.get("/api/incidents").json()["incidents"])

    publisher.send("acd", agents(30))
    wait_until(lambda: ("open", "acd") in upstream_events(receiver), timeout=20)
    acd = next(i for i in incidents() if i["component"] == "acd")

    publisher.send("ivr", agents(40))
    publisher.send("dialer", agents(40))

    def grouped() -> dict[str, Any] | None:
        body = daemon.get(f"/api/incidents/{acd['id']}").json()
        return body if len(body["affected_components"]) == 2 else None

    body = wait_until(grouped, timeout=20)
    assert sorted(body["affected_components"]) == ["dialer", "ivr"]
    # acd, ivr and dialer are every component heard from: the impact says site-wide too.
    assert body["impact"].endswith(
        "also affected: " + ", ".join(body["affected_components"]) + SITE_WIDE
    )
    assert [e["change"] for e in body["timeline"]].count("affected") == 2
    wait_until(
        lambda: (
            [e for e in upstream_events(receiver) if e[0] == "update"]
            == [("update", "acd"), ("update", "acd")]
        ),
        timeout=20,
    )
    assert [i["component"] for i in incidents()] == ["acd"]
    assert [e for e in upstream_events(receiver) if e[0] == "open"] == [("open", "acd")]

    command = [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path)]
    shown = subprocess.run(
        [*command, "incidents", "show", str(acd["id"])],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=daemon.config_path.parent,
        env={**os.environ, "CCWATCH_TEST_HTTP_TOKEN": TOKEN},
    )
    assert shown.returncode == 0, shown.stderr
    shown = shown.stdout
    assert "also affected:" in shown and "ivr" in shown and "dialer" in shown

    # dialer recovers; acd resolves while ivr is still down: ivr opens its own ticket.
    publisher.send("dialer", agents(0))
    publisher.send("acd", agents(0))
    wait_until(lambda: ("resolve", "acd") in upstream_events(receiver), timeout=20)
    wait_until(lambda: ("open", "ivr") in upstream_events(receiver), timeout=20)
    opens = [e for e in upstream_events(receiver) if e[0] == "open"]
    assert opens == [("open", "acd"), ("open", "ivr")]


def test_a_site_wide_fault_of_independent_components_is_one_ticket(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """acd, ivr and dialer (no depends_on) go critical within 20 s: one ``open`` at the
    receiver; ivr and dialer join acd's incident (``update``), the last update says
    site-wide. acd and ivr fail in the same instant (their holds end together), dialer
    once the ticket is open."""
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd", "ivr", "dialer"])
    config["classification"] = {**config["classification"], "group_window": "2m"}
    config["incidents"] = {"reopen_window": "0s"}
    assert config["classification"].get("group_by", "site") == "site"  # the default
    daemon = daemon_factory(config, env={"CCWATCH_TEST_HTTP_TOKEN": TOKEN})
    daemon.wait_http("/readyz")

    # The site's three components report healthy first (site-wide = all of them).
    for component in ("acd", "ivr", "dialer"):
        publisher.send(component, agents(0))
    for component in ("acd", "ivr", "dialer"):
        wait_until(
            lambda c=component: metric(daemon, "ccwatch_component_severity", {"component": c})
            is not None,
            timeout=20,
        )
    publisher.send("acd", agents(30))
    publisher.send("ivr", agents(40))
    wait_until(lambda: [e for e in upstream_events(receiver) if e[0] == "open"], timeout=20)
    publisher.send("dialer", agents(50))

    def site_wide() -> dict[str, Any] | None:
        for request in receiver.accepted:
            body = request.json
            if body["event"] == "update" and body.get("site_wide"):
                return dict(body)
        return None

    update = wait_until(site_wide, timeout=20)
    assert update["component"] == "acd"
    assert sorted(update["affected_components"]) == ["dialer", "ivr"]
    assert update["impact"].endswith(SITE_WIDE)
    assert "site-wide" in update["summary"]
    [incident] = daemon.get("/api/incidents").json()["incidents"]
    assert incident["site_wide"] is True
    assert sorted(incident["affected_components"]) == ["dialer", "ivr"]
    assert [e for e in upstream_events(receiver) if e[0] == "open"] == [("open", "acd")]
    assert [e[0] for e in upstream_events(receiver)].count("update") == 2

    # The SLA exemption of that incident, through the API, lifted from the CLI (which goes
    # through the running daemon): both events reach the receiver, the clocks resume.
    url = f"{daemon.base_url}/api/incidents/{incident['id']}/exempt"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, json={"lift": True}, timeout=5).status_code == 401
    exempt = httpx.post(url, json={"reason": "site power (customer)"}, headers=auth, timeout=5)
    assert exempt.status_code == 200 and exempt.json()["sla_exempt"]["reason"]
    wait_until(  # the SLA watcher rewrites the due times after the change: held, none
        lambda: daemon.get(f"/api/incidents/{incident['id']}").json()["sla"]["resolution_due"]
        is None,
        timeout=20,
    )
    lifted = subprocess.run(
        [sys.executable, "-m", "ccwatch.cli", "-c", str(daemon.config_path),
         "incidents", "exempt", incident["id"], "--lift", "--reason", "our UPS after all"],
        capture_output=True, text=True, timeout=30, env=daemon.env,
    )  # fmt: skip
    assert lifted.returncode == 0, lifted.stderr
    wait_until(
        lambda: [e for e, _ in upstream_events(receiver) if e.startswith("sla_exempt")]
        == ["sla_exempt", "sla_exempt_lifted"],
        timeout=20,
    )
    shown = daemon.get(f"/api/incidents/{incident['id']}").json()
    assert shown["sla_exempt"] is None
    assert [e["change"] for e in shown["timeline"]][-2:] == ["sla_exempt", "sla_exempt_lifted"]
    assert wait_until(
        lambda: daemon.get(f"/api/incidents/{incident['id']}").json()["sla"]["resolution_due"],
        timeout=20,
    )
