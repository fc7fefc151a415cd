"""``/api/maintenance`` (windows) and ``POST /api/incidents/{id}/exempt`` (SLA exemption).

- ``GET /api/maintenance``: active and upcoming (7 days) windows, scheduled (config) and
  ad-hoc, and the ad-hoc ones ended in the last 8 days (the ``/maintenance`` page's JSON).
- ``POST /api/maintenance`` (token): ``{"components": ["acd"], "for": "30m" | "until":
  RFC 3339, "start": RFC 3339 (default now), "reason": "…", "by": "…"}`` adds an ad-hoc
  window; 201 with the window.
- ``DELETE /api/maintenance/{id}`` (token): ends an ad-hoc window now; 404 if unknown.
- ``POST /api/incidents/{id}/exempt`` (token): ``{"reason": "…", "by": "…"}`` pauses the
  incident's SLA clocks and sends ``sla_exempt`` upstream; ``{"lift": true, "by": "…",
  "reason": optional}`` lifts the exemption (clocks resume, the exempt span not counted;
  ``sla_exempt_lifted``). Lifting an incident that is not exempt changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ccwatch.api.tickets import parse_instant
from ccwatch.durations import parse_duration
from ccwatch.incidents.repository import UnknownIncidentError
from ccwatch.maintenance.store import UnknownWindowError, add_window, end_window
from ccwatch.maintenance.windows import Window
from ccwatch.runtime import Runtime


def _runtime(request: web.Request) -> Runtime:
    from ccwatch.http import runtime_of  # http.py imports this module's add_routes

    return runtime_of(request)


def _guard(request: web.Request) -> None:
    from ccwatch.http import require_token

    require_token(request)


def window_json(window: Window) -> dict[str, Any]:
    from ccwatch.incidents.model import rfc3339

    return {**window.as_dict(), "start": rfc3339(window.start), "end": rfc3339(window.end)}


def listing_json(runtime: Runtime, now: float) -> dict[str, Any]:
    listing = runtime.maintenance.listing(now)
    return {name: [window_json(w) for w in windows] for name, windows in listing.items()}


async def list_windows(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    return web.json_response(listing_json(runtime, runtime.clock()))


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        payload = json.loads(await request.text() or "{}")
    except json.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


_ADD_USAGE = (
    'the body must be JSON: {"components": ["acd"], "for": "30m", "reason": "ACD patch"} '
    '(or "until": "2026-12-01T18:00:00Z" instead of "for")'
)


def window_span(payload: dict[str, Any], now: float) -> tuple[float, float]:
    """``start`` (default now) and ``for`` or ``until`` of an add request."""
    start = parse_instant(str(payload["start"])) if payload.get("start") else now
    if payload.get("for"):
        length = parse_duration(str(payload["for"])).total_seconds()
        if length <= 0:
            raise ValueError("for: must be longer than 0")
        return start, start + length
    if payload.get("until"):
        return start, parse_instant(str(payload["until"]))
    raise ValueError('give "for" (e.g. "30m") or "until"')


async def add(request: web.Request) -> web.Response:
    _guard(request)
    runtime = _runtime(request)
    payload = await _json(request)
    if payload is None or not payload.get("reason"):
        return web.json_response({"error": _ADD_USAGE}, status=400)
    components = payload.get("components") or ["*"]
    if isinstance(components, str):
        components = [components]
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        return web.json_response({"error": _ADD_USAGE}, status=400)
    known = set(runtime.config.components)
    unknown = [c for c in components if c != "*" and c not in known]
    if unknown:
        return web.json_response(
            {"error": f"unknown component(s) {unknown}; known: {sorted(known)}"}, status=400
        )
    now = runtime.clock()
    by = str(payload.get("by") or "api")[:100]
    reason = str(payload["reason"])[:500]
    try:
        start, end = window_span(payload, now)
        window = await runtime.store.run(
            lambda conn: add_window(conn, components, start, end, reason, by, now)
        )
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    await runtime.maintenance.refresh(runtime.store, now)
    return web.json_response(window_json(window), status=201)


async def end(request: web.Request) -> web.Response:
    _guard(request)
    runtime = _runtime(request)
    ident = request.match_info["window_id"]
    now = runtime.clock()
    try:
        window = await runtime.store.run(lambda conn: end_window(conn, ident, now))
    except UnknownWindowError:
        return web.json_response({"error": f"no ad-hoc window with id {ident!r}"}, status=404)
    await runtime.maintenance.refresh(runtime.store, now)
    return web.json_response(window_json(window))


async def exempt(request: web.Request) -> web.Response:
    _guard(request)
    runtime = _runtime(request)
    incident_id = request.match_info["incident_id"]
    payload = await _json(request)
    lift = payload is not None and payload.get("lift") is True
    if payload is None or not (lift or payload.get("reason")):
        return web.json_response(
            {"error": 'the body must be JSON: {"reason": "customer hardware"} or {"lift": true}'},
            status=400,
        )
    by = str(payload.get("by") or "api")[:100]
    reason = str(payload.get("reason") or "")[:2000]
    try:
        if lift:
            incident = await runtime.incidents.lift_sla_exemption(incident_id, by, reason)
        else:
            incident = await runtime.incidents.exempt_sla(incident_id, reason, by)
    except UnknownIncidentError:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(incident.to_api())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/maintenance", list_windows)
    app.router.add_post("/api/maintenance", add)
    app.router.add_delete("/api/maintenance/{window_id}", end)
    app.router.add_post("/api/incidents/{incident_id}/exempt", exempt)
