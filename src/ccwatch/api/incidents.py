"""``GET /api/incidents`` and ``GET /api/incidents/{id}`` (the JSON twins of the pages).

Both read the state database through the store (they work whether or not the MQTT
side is connected). Unknown ids and bad filters answer JSON errors, never HTML.
"""

from __future__ import annotations

from aiohttp import web

from ccwatch.incidents import repository
from ccwatch.runtime import Runtime
from ccwatch.tickets.service import load_rca_draft


def _runtime(request: web.Request) -> Runtime:
    from ccwatch.http import runtime_of  # http.py imports this module's add_routes

    return runtime_of(request)


_PAGED = ("severity", "component", "since", "until", "page")


async def list_incidents(request: web.Request) -> web.Response:
    """Newest first. ``state`` and ``limit`` as before; with any of ``severity``,
    ``component``, ``since``, ``until`` or ``page`` the answer is the ``/incidents``
    page's: filtered, 50 a page, with ``total``, ``page`` and ``pages``."""
    runtime = _runtime(request)
    if any(request.query.get(name) for name in _PAGED):
        from ccwatch.pages import data  # on first use, as in pages/views.py

        try:
            filters = data.parse_filters(request.query)
        except data.FilterError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        page = await data.incident_list(runtime, filters, runtime.clock())
        return web.json_response(data.jsonable(page))
    state = request.query.get("state") or None
    try:
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        return web.json_response({"error": "limit must be a number"}, status=400)
    if state is not None and state not in (*repository.STATES, repository.ACTIVE):
        return web.json_response(
            {
                "error": f"unknown state {state!r}",
                "states": [*repository.STATES, repository.ACTIVE],
            },
            status=400,
        )
    incidents = await runtime.store.run(
        lambda conn: repository.list_incidents(conn, state=state, limit=max(1, min(limit, 5000)))
    )
    return web.json_response({"incidents": [i.to_api() for i in incidents]})


async def show_incident(request: web.Request) -> web.Response:
    """The incident with its timeline, SLA clocks, tickets per upstream, diagnostics and
    its loss chart's summary (the ``/incidents/{id}`` page's values)."""
    from ccwatch.pages import data  # on first use, as in pages/views.py

    runtime = _runtime(request)
    incident_id = request.match_info["incident_id"]
    page = await data.incident_page(runtime, incident_id, runtime.clock())
    if page is None:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    return web.json_response(data.incident_json(page))


async def rca_draft(request: web.Request) -> web.Response:
    """``GET /api/incidents/{id}/rca-draft``: the RCA draft as Markdown (text/markdown)."""
    runtime = _runtime(request)
    incident_id = request.match_info["incident_id"]
    sla, now = runtime.config.sla, runtime.clock()
    found = await runtime.store.run(lambda conn: load_rca_draft(conn, sla, incident_id, now))
    if found is None:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    return web.Response(text=found[1], content_type="text/markdown", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/incidents", list_incidents)
    app.router.add_get("/api/incidents/{incident_id}/rca-draft", rca_draft)
    app.router.add_get("/api/incidents/{incident_id}", show_incident)
