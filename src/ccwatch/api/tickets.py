"""``POST /api/incidents/{id}/ack``: acknowledge an incident (bearer token required).

Body (optional JSON): ``{"by": "name"}``. Acknowledging stops the first-response clock
and sends an ``acknowledge`` event upstream. Answers the incident as
``GET /api/incidents/{id}`` does; 404 for an unknown id, 409 for a resolved incident.
"""

from __future__ import annotations

import json
from datetime import datetime

from aiohttp import web

from ccwatch.incidents.repository import UnknownIncidentError


async def acknowledge(request: web.Request) -> web.Response:
    from ccwatch.http import require_token, runtime_of  # http.py imports this module

    require_token(request)
    runtime = runtime_of(request)
    incident_id = request.match_info["incident_id"]
    by = "api"
    if request.body_exists:  # http.py has read (and checked) the body already
        try:
            payload = json.loads(await request.text() or "{}")
        except json.JSONDecodeError:
            return web.json_response(
                {"error": 'the body must be JSON, e.g. {"by": "asha"}'}, status=400
            )
        if isinstance(payload, dict) and payload.get("by"):
            by = str(payload["by"])[:100]
    try:
        incident = await runtime.incidents.acknowledge(incident_id, by)
    except UnknownIncidentError:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response(incident.to_api())


async def rca(request: web.Request) -> web.Response:
    """``POST /api/incidents/{id}/rca`` (token): ``{"delivered": "URL or text", "by": …}``
    stops the RCA clock; ``{"deferred": "reason", "until": "RFC 3339", "by": …}`` moves
    its due time. Answers the incident; 400 for a bad body, 404 for an unknown id."""
    from ccwatch.http import require_token, runtime_of  # http.py imports this module

    require_token(request)
    runtime = runtime_of(request)
    incident_id = request.match_info["incident_id"]
    try:
        payload = json.loads(await request.text() or "{}")
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        return web.json_response({"error": _RCA_USAGE}, status=400)
    by = str(payload.get("by") or "api")[:100]
    try:
        if payload.get("delivered"):
            incident = await runtime.incidents.rca_delivered(
                incident_id, str(payload["delivered"])[:2000], by
            )
        elif payload.get("deferred"):
            until = parse_instant(str(payload.get("until") or ""))
            incident = await runtime.incidents.rca_deferred(
                incident_id, str(payload["deferred"])[:2000], until, by
            )
        else:
            return web.json_response({"error": _RCA_USAGE}, status=400)
    except UnknownIncidentError:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(incident.to_api())


_RCA_USAGE = (
    'the body must be JSON: {"delivered": "URL or text"} or '
    '{"deferred": "reason", "until": "2026-11-25T10:00:00Z"}'
)


def parse_instant(text: str) -> float:
    """An RFC 3339 / ISO 8601 instant (a time zone is required) → epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"until: {text!r} is not a time like 2026-11-25T10:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"until: {text!r} needs a time zone (Z or +05:30)")
    return moment.timestamp()


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/incidents/{incident_id}/ack", acknowledge)
    app.router.add_post("/api/incidents/{incident_id}/rca", rca)
