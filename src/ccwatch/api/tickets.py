"""``POST /api/incidents/{id}/ack``: acknowledge an incident (bearer token required).

Body (optional JSON): ``{"by": "name"}``. Acknowledging stops the first-response clock
and sends an ``acknowledge`` event upstream. Answers the incident as
``GET /api/incidents/{id}`` does; 404 for an unknown id, 409 for a resolved incident.
"""

from __future__ import annotations

import json

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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/incidents/{incident_id}/ack", acknowledge)
