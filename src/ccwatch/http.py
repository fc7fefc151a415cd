"""The HTTP surface: /metrics, /healthz, /readyz, the JSON API and the status page.

Bound to 127.0.0.1 by default. Responses never carry a traceback: an unexpected error is
logged and answered with a short JSON 500. State-changing calls need the bearer token
named by ``http.token_env`` / ``http.token_file``.
"""

from __future__ import annotations

import hmac
import html
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ccwatch import __version__
from ccwatch.configbase import read_secret
from ccwatch.incidents import api as incidents_api
from ccwatch.metrics import exposition
from ccwatch.runtime import Runtime
from ccwatch.tickets import api as tickets_api

logger = logging.getLogger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("HTTP %s %s failed (a ccwatch bug)", request.method, request.path)
        return web.json_response({"error": "internal error, see the ccwatch log"}, status=500)


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME_KEY]


def require_token(request: web.Request) -> None:
    """Raise 401/403 unless the request carries the configured bearer token."""
    http_config = runtime_of(request).config.http
    token = read_secret(http_config.token_env, http_config.token_file)
    if not token:
        raise web.HTTPForbidden(
            text="state-changing calls are disabled: set http.token_env or http.token_file\n"
        )
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text="missing or wrong bearer token\n", headers={"WWW-Authenticate": "Bearer"}
        )


async def metrics(request: web.Request) -> web.Response:
    body = exposition(runtime_of(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop is alive.
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    readiness = runtime_of(request).readiness
    waiting = readiness.not_ready()
    body = {"ready": not waiting, "dependencies": readiness.snapshot()}
    return web.json_response(body, status=503 if waiting else 200)


async def status_page(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'ready' if state['ready'] else 'NOT READY'}"
        f"</td><td>{html.escape(str(state['detail']))}</td></tr>"
        for name, state in runtime.readiness.snapshot().items()
    )
    uptime = int(time.time() - runtime.started_at)
    incidents_html = await incidents_api.status_section(runtime)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>ccwatch {html.escape(runtime.config.site)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>ccwatch &mdash; site {html.escape(runtime.config.site)}</h1>
<p>version {html.escape(__version__)}, up {uptime} s.
<a href="/metrics">metrics</a> &middot; <a href="/api/incidents">incidents (JSON)</a></p>
{incidents_html}
<h2>Dependencies</h2><table><tr><th>name</th><th>state</th><th>detail</th></tr>{rows}</table>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_no_tracebacks], client_max_size=64 * 1024)
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", status_page)
    incidents_api.add_routes(app)
    tickets_api.add_routes(app)  # POST /api/incidents/<id>/ack
    return app


class HttpServer:
    """The aiohttp app on one listening address; rebinding on reload keeps the app."""

    def __init__(self, runtime: Runtime) -> None:
        self._runner = web.AppRunner(build_app(runtime), access_log=None, handle_signals=False)
        self._site: web.TCPSite | None = None
        self.listen: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> None:
        if self._runner.server is None:
            await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        if self._site is not None:
            await self._site.stop()
        self._site = site
        self.listen = (host, port)
        logger.info("HTTP listening on http://%s:%d/", host, port)

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._site = None
