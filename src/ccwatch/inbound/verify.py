"""Signature checks and payload translation for inbound webhooks: pure functions.

- PagerDuty webhooks v3 sign the raw body: ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256>``,
  several comma-separated while a secret rotates; one match is enough (compared in
  constant time).
- ``signed`` (any desk or script that can sign): ``X-Ccwatch-Timestamp: <epoch seconds>``
  and ``X-Ccwatch-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``; the
  timestamp must be within the source's tolerance, so a captured request cannot be
  replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["acknowledge", "note", "waiting", "customer_replied", "ignore"]


@dataclass(frozen=True)
class InboundChange:
    """What an inbound request asks of an incident."""

    action: Action
    incident: str  # an incident id or a dedup key (``ccwatch:<site>:<component>:<id>``)
    by: str
    text: str = ""


class InboundError(ValueError):
    """The request is well signed but says nothing ccwatch can act on (400)."""


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def pagerduty_signature_ok(header: str | None, body: bytes, secret: str) -> bool:
    if not header:
        return False
    expected = "v1=" + _hex_hmac(secret, body)
    return any(
        hmac.compare_digest(candidate.strip().encode(), expected.encode())
        for candidate in header.split(",")
        if candidate.strip().isascii()
    )


def signed_ok(
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    secret: str,
    now: float,
    tolerance: float,
) -> bool:
    if not timestamp or not signature or not timestamp.isdigit() or not signature.isascii():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + _hex_hmac(secret, timestamp.encode() + b"." + body)
    return hmac.compare_digest(signature.strip().encode(), expected.encode())


def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of a ``signed`` request (for senders and tests)."""
    digest = _hex_hmac(secret, str(timestamp).encode() + b"." + body)
    return {"X-Ccwatch-Timestamp": str(timestamp), "X-Ccwatch-Signature": f"sha256={digest}"}


def _object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InboundError("the body must be JSON") from exc
    if not isinstance(payload, dict):
        raise InboundError("the body must be a JSON object")
    return payload


def from_pagerduty(body: bytes) -> InboundChange:
    """A PagerDuty v3 webhook → the change it means for the ccwatch incident it is about.

    ccwatch triggers PagerDuty incidents with the incident's dedup key, which PagerDuty
    keeps as the incident's ``incident_key``. ``incident.acknowledged`` acknowledges;
    ``incident.resolved`` is recorded as a note (ccwatch resolves from the telemetry,
    never because a pager was closed); annotations become notes; other events are
    acknowledged to PagerDuty and ignored.
    """
    payload = _object(body)
    event = payload.get("event")
    if not isinstance(event, dict):
        raise InboundError("not a PagerDuty v3 webhook: no 'event' object")
    event_type = str(event.get("event_type") or "")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    agent = event.get("agent") if isinstance(event.get("agent"), dict) else {}
    assert isinstance(agent, dict)
    who = str(agent.get("summary") or agent.get("id") or "pagerduty")[:100]
    if event_type == "pagey.ping":
        return InboundChange("ignore", "", who)
    incident = data.get("incident") if data.get("type") != "incident" else data
    key = ""
    if isinstance(incident, dict):
        key = str(incident.get("incident_key") or "")
    if not key.startswith("ccwatch:"):
        return InboundChange(
            "ignore", "", who, f"{event_type} of a PagerDuty incident ccwatch did not open"
        )
    url = str((incident or {}).get("html_url") or "")
    if event_type == "incident.acknowledged":
        return InboundChange("acknowledge", key, f"pagerduty:{who}")
    if event_type == "incident.resolved":
        return InboundChange(
            "note", key, f"pagerduty:{who}", f"resolved in PagerDuty by {who} {url}".strip()
        )
    if event_type == "incident.annotated":
        content = str(data.get("content") or "")[:2000]
        return InboundChange("note", key, f"pagerduty:{who}", f"PagerDuty note by {who}: {content}")
    return InboundChange("ignore", key, who, event_type)


_ACTIONS = {"acknowledge", "note", "waiting", "customer_replied"}


def from_signed(body: bytes) -> InboundChange:
    """``{"incident": "<id or dedup key>", "action": "acknowledge|note|waiting|customer_replied",
    "by": "…", "text": "…"}``."""
    payload = _object(body)
    action = payload.get("action")
    incident = payload.get("incident")
    if action not in _ACTIONS:
        raise InboundError(f"'action' must be one of {', '.join(sorted(_ACTIONS))}")
    if not isinstance(incident, str) or not incident.strip():
        raise InboundError("'incident' must name the incident (its id or dedup key)")
    by = str(payload.get("by") or "inbound")[:100]
    text = str(payload.get("text") or "")[:2000]
    if action == "note" and not text:
        raise InboundError("a note needs its 'text'")
    return InboundChange(action, incident.strip(), by, text)


def incident_id(reference: str) -> str:
    """The incident id in an id or a dedup key."""
    if reference.startswith("ccwatch:"):
        return reference.rsplit(":", 1)[-1]
    return reference
