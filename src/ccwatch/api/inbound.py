"""``POST /api/inbound/{name}``: what a pager or service desk pushes back, signed.

``name`` is an ``inbound:`` source (``inbound/config.py``). Unsigned or wrongly signed
requests are refused with 401 (and an unknown source with 404) before the body is
parsed, and counted in ``ccwatch_inbound_requests_total{source,outcome}``. A verified
request changes its incident only through the incident service (acknowledge, a timeline
note, waiting on the customer / customer replied), so it is recorded like any change.
Answers: 200 ``{"incident": id, "action": …}``, 202 for an event ccwatch ignores, 400
for a body it cannot act on, 404 for an unknown incident, 409 for one that is over.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ccwatch.configbase import read_secret
from ccwatch.inbound.verify import (
    InboundChange,
    InboundError,
    from_pagerduty,
    from_signed,
    incident_id,
    pagerduty_signature_ok,
    signed_ok,
)
from ccwatch.incidents.repository import UnknownIncidentError
from ccwatch.metrics import shared_metrics
from ccwatch.redact import process_redactor
from ccwatch.runtime import Runtime


class InboundMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ccwatch_inbound_requests",
            "Inbound webhook requests by source and outcome (applied, ignored, unsigned, "
            "bad_signature, bad_request, unknown_incident, closed)",
            ["source", "outcome"],
            registry=registry,
        )


def _runtime(request: web.Request) -> Runtime:
    from ccwatch.http import runtime_of  # http.py imports this module's add_routes

    return runtime_of(request)


def _answer(
    metrics: InboundMetrics, source: str, outcome: str, status: int, body: dict[str, object]
) -> web.Response:
    metrics.requests.labels(source=source, outcome=outcome).inc()
    return web.json_response(body, status=status)


async def inbound(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    metrics = shared_metrics(InboundMetrics, runtime.registry)
    name = request.match_info["name"]
    source = next((s for s in runtime.config.inbound if s.name == name), None)
    if source is None:
        return web.json_response({"error": f"no inbound source {name!r}"}, status=404)
    body = await request.read()
    secret = read_secret(source.secret_env, source.secret_file) or ""
    if source.type == "pagerduty":
        header = request.headers.get("X-PagerDuty-Signature")
        verified = bool(secret) and pagerduty_signature_ok(header, body, secret)
    else:
        header = request.headers.get("X-Ccwatch-Signature")
        verified = bool(secret) and signed_ok(
            request.headers.get("X-Ccwatch-Timestamp"),
            header,
            body,
            secret,
            runtime.clock(),
            source.tolerance.total_seconds(),
        )
    if not verified:
        outcome = "unsigned" if not header else "bad_signature"
        return _answer(metrics, name, outcome, 401, {"error": "missing or wrong signature"})
    try:
        change = from_pagerduty(body) if source.type == "pagerduty" else from_signed(body)
    except InboundError as exc:
        return _answer(metrics, name, "bad_request", 400, {"error": str(exc)})
    if change.action == "ignore":
        return _answer(metrics, name, "ignored", 202, {"ignored": change.text or "nothing to do"})
    try:
        await apply(runtime, change)
    except UnknownIncidentError:
        return _answer(
            metrics, name, "unknown_incident", 404, {"error": f"no incident {change.incident!r}"}
        )
    except ValueError as exc:
        return _answer(metrics, name, "closed", 409, {"error": str(exc)})
    ident = incident_id(change.incident)
    return _answer(metrics, name, "applied", 200, {"incident": ident, "action": change.action})


async def apply(runtime: Runtime, change: InboundChange) -> None:
    """One verified change, through the incident service."""
    incidents = runtime.incidents
    ident = incident_id(change.incident)
    if change.action == "acknowledge":
        await incidents.acknowledge(ident, change.by)
    elif change.action == "note":  # an unknown id raises UnknownIncidentError (404)
        # What a vendor writes is kept in the timeline: redacted like every outgoing body.
        detail = process_redactor().text(f"{change.by}: {change.text}")
        await incidents.note(ident, "upstream_note", detail=detail)
    else:
        waiting = change.action == "waiting"
        await incidents.waiting_on_customer(ident, waiting, change.by)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/inbound/{name}", inbound)
