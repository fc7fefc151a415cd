"""Inbound webhooks end to end: the real broker, ``ccwatch run`` and a webhook receiver.

A PagerDuty v3 webhook signed with the shared secret acknowledges the incident whose
dedup key it carries; unsigned or wrongly signed requests are refused (401) and counted;
the signed form puts the incident on "waiting on the customer" and back, and each change
is in the incident's timeline and reaches the other upstreams.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccwatch.inbound.verify import sign
from tests.conftest import DaemonProcess, Mosquitto, wait_until
from tests.test_e2e_core import Publisher, agents
from tests.test_tickets_faults import TOKEN, publisher, receiver, ticket_config  # noqa: F401
from tests.test_tickets_support import Receiver

pytestmark = pytest.mark.slow

PD_SECRET = "pd-webhook-secret-for-tests"
DESK_SECRET = "desk-webhook-secret-for-tests"


def pd_webhook(event_type: str, dedup_key: str) -> bytes:
    return json.dumps(
        {
            "event": {
                "id": "01DEN4HPBQAAAG05V5QQYBRZMF",
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-12-01T10:00:00.000Z",
                "agent": {"id": "PLH1HKV", "summary": "Asha Rao", "type": "user_reference"},
                "data": {
                    "id": "PGR0VU2",
                    "type": "incident",
                    "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                    "number": 2,
                    "status": "acknowledged",
                    "incident_key": dedup_key,
                    "title": "P1 critical: acd at blr1",
                },
            }
        }
    ).encode()


def test_pushed_acknowledgement_and_waiting_on_the_customer(
    tmp_path: Path,
    mosquitto: Mosquitto,
    publisher: Publisher,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    config = ticket_config(tmp_path, mosquitto, receiver, ["acd"])
    config["inbound"] = [
        {"name": "pagerduty", "type": "pagerduty", "secret_env": "CCWATCH_TEST_PD_SECRET"},
        {"name": "desk", "type": "signed", "secret_env": "CCWATCH_TEST_DESK_SECRET"},
    ]
    daemon = daemon_factory(
        config,
        env={
            "CCWATCH_TEST_HTTP_TOKEN": TOKEN,
            "CCWATCH_TEST_PD_SECRET": PD_SECRET,
            "CCWATCH_TEST_DESK_SECRET": DESK_SECRET,
        },
    )
    daemon.wait_http("/readyz")
    publisher.send("acd", agents(25))
    incident = wait_until(
        lambda: next(iter(daemon.get("/api/incidents").json()["incidents"]), None), timeout=20
    )
    dedup_key = f"ccwatch:blr1:acd:{incident['id']}"
    pd_url = f"{daemon.base_url}/api/inbound/pagerduty"
    body = pd_webhook("incident.acknowledged", dedup_key)

    def post(url: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=data, headers=headers, timeout=5)

    # Refused before anything is parsed: no signature, a wrong one, an unknown source.
    assert post(pd_url, body, {}).status_code == 401
    wrong = "v1=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert post(pd_url, body, {"X-PagerDuty-Signature": wrong}).status_code == 401
    assert post(f"{daemon.base_url}/api/inbound/nobody", body, {}).status_code == 404
    assert daemon.get(f"/api/incidents/{incident['id']}").json()["acknowledged_at"] is None

    good = "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = post(pd_url, body, {"X-PagerDuty-Signature": f"v1=00,{good}"})  # a rotation
    assert answer.status_code == 200, answer.text
    acked = daemon.get(f"/api/incidents/{incident['id']}").json()
    assert acked["acknowledged_by"] == "pagerduty:Asha Rao"
    # A PagerDuty incident ccwatch did not open is answered and ignored.
    other = pd_webhook("incident.acknowledged", "somebody-else")
    signature = "v1=" + hmac.new(PD_SECRET.encode(), other, hashlib.sha256).hexdigest()
    assert post(pd_url, other, {"X-PagerDuty-Signature": signature}).status_code == 202

    # The signed form: waiting on the customer, then the customer replied.
    desk_url = f"{daemon.base_url}/api/inbound/desk"

    def signed(payload: dict[str, Any], at: float | None = None) -> httpx.Response:
        data = json.dumps(payload).encode()
        return post(desk_url, data, sign(DESK_SECRET, data, int(at or time.time())))

    waiting = {"incident": dedup_key, "action": "waiting", "by": "vendor-l1"}
    assert signed(waiting, at=time.time() - 3600).status_code == 401  # a replay
    assert signed(waiting).status_code == 200
    state = daemon.get(f"/api/incidents/{incident['id']}").json()["state"]
    assert state == "waiting_on_customer"
    replied = {"incident": incident["id"], "action": "customer_replied", "by": "ops"}
    assert signed(replied).status_code == 200
    assert signed({"incident": "nope", "action": "waiting"}).status_code == 404

    shown = daemon.get(f"/api/incidents/{incident['id']}").json()
    changes = [entry["change"] for entry in shown["timeline"]]
    assert "acknowledged" in changes
    assert changes.index("waiting_on_customer") < changes.index("customer_replied")
    wait_until(
        lambda: (
            {r.json["event"] for r in receiver.accepted if r.json["incident_id"] == incident["id"]}
            >= {"open", "acknowledge", "waiting_on_customer", "customer_replied"}
        ),
        timeout=20,
    )
    counted = {
        row.rsplit(" ", 1)[0]: float(row.rsplit(" ", 1)[1])
        for row in daemon.get("/metrics").text.splitlines()
        if row.startswith("ccwatch_inbound_requests_total{")
    }
    assert counted == {
        'ccwatch_inbound_requests_total{outcome="unsigned",source="pagerduty"}': 1.0,
        'ccwatch_inbound_requests_total{outcome="bad_signature",source="pagerduty"}': 1.0,
        'ccwatch_inbound_requests_total{outcome="applied",source="pagerduty"}': 1.0,
        'ccwatch_inbound_requests_total{outcome="ignored",source="pagerduty"}': 1.0,
        'ccwatch_inbound_requests_total{outcome="bad_signature",source="desk"}': 1.0,
        'ccwatch_inbound_requests_total{outcome="applied",source="desk"}': 2.0,
        'ccwatch_inbound_requests_total{outcome="unknown_incident",source="desk"}': 1.0,
    }

    # A vendor's note is kept in the timeline, and what it should not have said is
    # redacted there as in every outgoing body.
    note = {
        "incident": incident["id"],
        "action": "note",
        "by": "vendor",
        "text": "password=Hunter2x",
    }
    assert signed(note).status_code == 200
    timeline = daemon.get(f"/api/incidents/{incident['id']}").json()["timeline"]
    (noted,) = [e["detail"] for e in timeline if e["change"] == "upstream_note"]
    assert noted == "vendor: password=****"
