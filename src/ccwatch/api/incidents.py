"""``GET /api/incidents`` and ``GET /api/incidents/{id}``, and the status page's table.

Both read the state database through the store (they work whether or not the MQTT
side is connected). Unknown ids and bad filters answer JSON errors, never HTML.
"""

from __future__ import annotations

import html
import sqlite3

from aiohttp import web

from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident, TimelineEntry, rfc3339
from ccwatch.runtime import Runtime
from ccwatch.tickets.service import load_rca_draft


def _runtime(request: web.Request) -> Runtime:
    from ccwatch.http import runtime_of  # http.py imports this module's add_routes

    return runtime_of(request)


async def list_incidents(request: web.Request) -> web.Response:
    runtime = _runtime(request)
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
    runtime = _runtime(request)
    incident_id = request.match_info["incident_id"]

    def load(
        conn: sqlite3.Connection,
    ) -> tuple[Incident | None, list[TimelineEntry]]:
        incident = repository.load_incident(conn, incident_id)
        return incident, repository.load_timeline(conn, incident_id) if incident else []

    incident, timeline = await runtime.store.run(load)
    if incident is None:
        return web.json_response({"error": f"no incident with id {incident_id!r}"}, status=404)
    return web.json_response(incident.to_api(timeline))


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


async def status_section(runtime: Runtime) -> str:
    """HTML table of the unresolved incidents, for the status page."""
    incidents = await runtime.store.run(
        lambda conn: repository.list_incidents(conn, state=repository.ACTIVE, limit=200)
    )
    if not incidents:
        return "<h2>Open incidents</h2><p>None.</p>"
    rows = "".join(
        f'<tr><td><a href="/api/incidents/{html.escape(i.id)}">{html.escape(i.id[:8])}</a></td>'
        f"<td>{html.escape(i.priority)} {html.escape(i.severity.label)}</td>"
        f"<td>{html.escape(i.component)}</td><td>{html.escape(i.state)}</td>"
        f"<td>{i.production_loss * 100:.1f}%</td><td>{html.escape(i.impact)}</td>"
        f"<td>{html.escape(rfc3339(i.opened_at) or '')}</td></tr>"
        for i in incidents
    )
    return (
        f"<h2>Open incidents ({len(incidents)})</h2><table><tr><th>id</th><th>severity</th>"
        "<th>component</th><th>state</th><th>loss</th><th>impact</th><th>opened</th></tr>"
        f"{rows}</table>"
    )
