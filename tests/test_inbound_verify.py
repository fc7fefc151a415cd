"""Inbound webhook signatures and payloads (pure): PagerDuty v3 and ccwatch's signed form."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccwatch.inbound.verify import (
    InboundError,
    from_pagerduty,
    from_signed,
    incident_id,
    pagerduty_signature_ok,
    sign,
    signed_ok,
)

SECRET = "whsec-test-0123456789"


def pd_header(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pd_event(event_type: str, key: str = "ccwatch:blr1:acd:0a1b2c3d", **data: object) -> bytes:
    return json.dumps(
        {
            "event": {
                "id": "01DEN4HPBQAAAG05V5QQYBRZMF",
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-12-01T10:00:00.000Z",
                "agent": {"id": "PLH1HKV", "summary": "Tenex Engineer", "type": "user_reference"},
                "data": {
                    "id": "PGR0VU2",
                    "type": "incident",
                    "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                    "number": 2,
                    "status": "acknowledged",
                    "incident_key": key,
                    "title": "P1 critical: acd at blr1",
                    **data,
                },
            }
        }
    ).encode()


def test_a_pagerduty_signature_matches_any_of_the_rotating_ones() -> None:
    body = pd_event("incident.acknowledged")
    good = pd_header(SECRET, body)
    assert pagerduty_signature_ok(good, body, SECRET)
    assert pagerduty_signature_ok(f"{pd_header('old-secret', body)},{good}", body, SECRET)
    assert not pagerduty_signature_ok(pd_header("other", body), body, SECRET)
    assert not pagerduty_signature_ok(good, body + b" ", SECRET)
    assert not pagerduty_signature_ok(None, body, SECRET)
    assert not pagerduty_signature_ok("v1=é", body, SECRET)


@given(st.binary(max_size=200), st.text(min_size=1, max_size=40))
def test_only_the_exact_body_and_secret_verify(body: bytes, secret: str) -> None:
    assert pagerduty_signature_ok(pd_header(secret, body), body, secret)
    assert not pagerduty_signature_ok(pd_header(secret, body), body + b"x", secret)
    headers = sign(secret, body, 1_800_000_000)
    ts, sig = headers["X-Ccwatch-Timestamp"], headers["X-Ccwatch-Signature"]
    assert signed_ok(ts, sig, body, secret, 1_800_000_000, 300)
    assert not signed_ok(ts, sig, body + b"x", secret, 1_800_000_000, 300)


def test_a_signed_request_is_refused_outside_the_tolerance() -> None:
    body = b'{"incident": "x", "action": "acknowledge"}'
    headers = sign(SECRET, body, 1_800_000_000)
    ts, sig = headers["X-Ccwatch-Timestamp"], headers["X-Ccwatch-Signature"]
    assert signed_ok(ts, sig, body, SECRET, 1_800_000_299, 300)
    assert not signed_ok(ts, sig, body, SECRET, 1_800_000_301, 300)  # a replay
    assert not signed_ok("-5", sig, body, SECRET, 1_800_000_000, 300)
    assert not signed_ok(ts, None, body, SECRET, 1_800_000_000, 300)


def test_pagerduty_events_map_onto_ccwatch_changes() -> None:
    ack = from_pagerduty(pd_event("incident.acknowledged"))
    assert (ack.action, ack.incident, ack.by) == (
        "acknowledge",
        "ccwatch:blr1:acd:0a1b2c3d",
        "pagerduty:Tenex Engineer",
    )
    resolved = from_pagerduty(pd_event("incident.resolved"))
    assert resolved.action == "note" and "resolved in PagerDuty" in resolved.text
    assert from_pagerduty(pd_event("incident.acknowledged", key="someone-else")).action == "ignore"
    assert from_pagerduty(pd_event("incident.reassigned")).action == "ignore"
    assert incident_id(ack.incident) == "0a1b2c3d"
    with pytest.raises(InboundError):
        from_pagerduty(b"[]")
    with pytest.raises(InboundError):
        from_pagerduty(b'{"messages": []}')  # a v2 webhook


def test_the_signed_form_names_incident_and_action() -> None:
    change = from_signed(b'{"incident": "0a1b", "action": "waiting", "by": "vendor-l1"}')
    assert (change.action, change.incident, change.by) == ("waiting", "0a1b", "vendor-l1")
    for bad in (b'{"incident": "0a1b", "action": "resolve"}', b'{"action": "note"}', b"nope"):
        with pytest.raises(InboundError):
            from_signed(bad)
    with pytest.raises(InboundError, match="text"):
        from_signed(b'{"incident": "0a1b", "action": "note"}')
