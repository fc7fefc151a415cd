"""The operator pages' handlers: ``/``, ``/incidents``, ``/incidents/{id}``, ``/checklists``
and their JSON twins ``/api/overview`` and ``/api/checklists`` (the incident twins are
``/api/incidents`` and ``/api/incidents/{id}``, in ``ccwatch.api.incidents``).

Server-rendered with Jinja2, autoescaped (component names, impact texts and check details
come from the network). Pages load nothing from elsewhere: styles and the few lines of
script are inline, charts are inline SVG; a Content-Security-Policy says so to the
browser. The acknowledge button sends the token the user types; no page carries one.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ccwatch.runtime import Runtime

if TYPE_CHECKING:
    import jinja2

# ``ccwatch.pages.data`` (what each page shows) is imported by the handlers, on the first
# page or API call: a daemon whose pages nobody opens does not load it.

# Inline styles and scripts only, nothing from elsewhere; fetch only to this daemon.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
OVERVIEW_REFRESH_SECONDS = 30



@functools.cache
def _environment() -> jinja2.Environment:
    """The template environment, built on the first page asked for: a daemon whose pages
    nobody opens does not load Jinja2 (bench/startup.py measures the RSS at start)."""
    import jinja2

    from ccwatch.pages import data

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("ccwatch.pages", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = data.when
    environment.filters["span"] = data.span
    environment.filters["pct"] = data.pct
    return environment


def _runtime(request: web.Request) -> Runtime:
    from ccwatch.http import runtime_of  # http.py imports this module's add_routes

    return runtime_of(request)


def render(template: str, **values: Any) -> str:
    text: str = _environment().get_template(template).render(**values)
    return text


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
    )


def _error_page(runtime: Runtime, status: int, message: str) -> web.Response:
    return html_response(
        render("error.html", site=runtime.config.site, title=str(status), message=message),
        status,
    )


async def overview_page(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    runtime = _runtime(request)
    try:
        values = await data.overview(runtime, runtime.clock(), request.query.get("site"))
    except data.UnknownSiteError as exc:
        return _error_page(runtime, 404, str(exc))
    return html_response(render("overview.html", refresh=OVERVIEW_REFRESH_SECONDS, **values))


async def overview_api(request: web.Request) -> web.Response:
    """``GET /api/overview`` (with ``sites:``, ``?site=`` for a site's components)."""
    from ccwatch.pages import data

    runtime = _runtime(request)
    try:
        values = await data.overview(runtime, runtime.clock(), request.query.get("site"))
    except data.UnknownSiteError as exc:
        return web.json_response({"error": str(exc)}, status=404)
    return web.json_response(data.jsonable(values))


async def sites_api(request: web.Request) -> web.Response:
    """``GET /api/sites``: every site, the worker holding it and its lease (``sites:``)."""
    from ccwatch.pages import data

    runtime = _runtime(request)
    return web.json_response(data.jsonable(await data.sites_view(runtime, runtime.clock())))


async def incidents_page(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    runtime = _runtime(request)
    try:
        filters = data.parse_filters(request.query)
    except data.FilterError as exc:
        return _error_page(runtime, 400, str(exc))
    values = await data.incident_list(runtime, filters, runtime.clock())
    return html_response(render("incidents.html", site=runtime.config.site, **values))


async def incident_page(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    runtime = _runtime(request)
    incident_id = request.match_info["incident_id"]
    values = await data.incident_page(runtime, incident_id, runtime.clock())
    if values is None:
        return _error_page(runtime, 404, f"No incident with id {incident_id[:80]!r}.")
    return html_response(render("incident.html", site=runtime.config.site, **values))


async def checklists_page(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    runtime = _runtime(request)
    values = await data.checklists_page(runtime)
    return html_response(
        render("checklists.html", site=runtime.config.site, now=runtime.clock(), **values)
    )


async def checklists_api(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    return web.json_response(data.jsonable(await data.checklists_page(_runtime(request))))


async def maintenance_page(request: web.Request) -> web.Response:
    from ccwatch.pages import data

    runtime = _runtime(request)
    values = data.maintenance_page(runtime, runtime.clock())
    return html_response(render("maintenance.html", site=runtime.config.site, **values))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview_page)
    app.router.add_get("/api/overview", overview_api)
    app.router.add_get("/api/sites", sites_api)
    app.router.add_get("/incidents", incidents_page)
    app.router.add_get("/incidents/{incident_id}", incident_page)
    app.router.add_get("/checklists", checklists_page)
    app.router.add_get("/api/checklists", checklists_api)
    app.router.add_get("/maintenance", maintenance_page)  # JSON twin: api/maintenance.py
