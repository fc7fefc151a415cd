"""The HTTP surface: /metrics, /healthz, /readyz, the JSON API and the operator pages.

Bound to 127.0.0.1 by default. Responses never carry a traceback: an unexpected error is
logged and answered with a short JSON 500. State-changing calls need the bearer token
named by ``http.token_env`` / ``http.token_file`` (``Authorization: Bearer <token>``,
the scheme in any case; a bare token is refused).

Hostile or broken clients cannot take it down:

- a request must arrive whole within ``HEADER_TIMEOUT`` of connecting (aiohttp closes
  a connection that has not sent a complete request by then, and idle keep-alive ones),
  and its body within ``BODY_TIMEOUT`` (408);
- a body must be text in its declared charset (UTF-8 by default) and JSON in it may
  nest at most ``MAX_JSON_DEPTH`` levels (400), so no handler meets a decoding error or
  a RecursionError;
- at most ``MAX_CONNECTIONS`` connections are kept (plus one burst of accepts): a new
  one closes the oldest that is not being answered (slow or stuck clients go first,
  ``/healthz`` keeps answering), and one warning a minute at most says so.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST

from ccwatch.api import inbound as inbound_api
from ccwatch.api import incidents as incidents_api
from ccwatch.api import maintenance as maintenance_api
from ccwatch.api import tickets as tickets_api
from ccwatch.configbase import read_secret
from ccwatch.metrics import exposition
from ccwatch.pages import views as pages
from ccwatch.runtime import Runtime

logger = logging.getLogger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER_TIMEOUT = 15.0  # seconds from connecting to a complete request (and keep-alive idle)
BODY_TIMEOUT = 10.0  # seconds to read a request body (at most MAX_BODY bytes)
MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 32
MAX_CONNECTIONS = 256
CAP_LOG_INTERVAL = 60.0  # the "connection cap reached" warning, at most once a minute

_BUSY_KEY = web.AppKey("busy_connections", set[RequestHandler])


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        await _read_body(request)
        busy = request.app[_BUSY_KEY]
        busy.add(request.protocol)  # being answered: not closed to make room
        try:
            return await handler(request)
        finally:
            busy.discard(request.protocol)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("HTTP %s %s failed (a ccwatch bug)", request.method, request.path)
        return web.json_response({"error": "internal error, see the ccwatch log"}, status=500)


async def _read_body(request: web.Request) -> None:
    """Read the body now, within BODY_TIMEOUT, and refuse what no handler can decode."""
    if not request.can_read_body:
        return
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await request.read()  # cached: handlers read it again for free
    except TimeoutError:
        raise _json_error(web.HTTPRequestTimeout, "the body was not sent in time") from None
    except ConnectionError:  # the client went away (or was closed to make room)
        raise _json_error(web.HTTPBadRequest, "the connection was lost") from None
    except (HttpProcessingError, RequestPayloadError):  # bad chunking, bad gzip, …
        raise _json_error(web.HTTPBadRequest, "the body cannot be read") from None
    if not body:
        return
    try:
        text = body.decode(request.charset or "utf-8")
    except LookupError:
        raise _json_error(web.HTTPBadRequest, f"unknown charset {request.charset!r}") from None
    except UnicodeDecodeError:
        raise _json_error(web.HTTPBadRequest, "the body is not valid UTF-8 text") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise _json_error(web.HTTPBadRequest, f"JSON nested deeper than {MAX_JSON_DEPTH}")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep brackets nest in ``text`` outside JSON strings (without parsing it)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def _json_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=f'{{"error": "{message}"}}', content_type="application/json")


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME_KEY]


def require_token(request: web.Request) -> None:
    """Raise 401/403 unless the request carries the configured bearer token."""
    http_config = runtime_of(request).config.http
    require_bearer(request, read_secret(http_config.token_env, http_config.token_file))


def require_bearer(request: web.Request, token: str | None) -> None:
    """Raise 403 when no token is configured, 401 unless ``Authorization: Bearer <token>``.

    The scheme is matched in any case and is required: a bare token is refused. A header
    that is not ASCII is refused, never a 500.
    """
    if not token:
        raise web.HTTPForbidden(
            text="state-changing calls are disabled: set http.token_env or http.token_file\n"
        )
    scheme, _, supplied = request.headers.get("Authorization", "").strip().partition(" ")
    supplied = supplied.strip()
    if (
        scheme.lower() != "bearer"
        or not supplied
        or not supplied.isascii()
        or not hmac.compare_digest(supplied.encode("ascii"), token.encode("utf-8"))
    ):
        raise web.HTTPUnauthorized(
            text="missing or wrong bearer token (Authorization: Bearer <token>)\n",
            headers={"WWW-Authenticate": "Bearer"},
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


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_no_tracebacks], client_max_size=MAX_BODY)
    app[RUNTIME_KEY] = runtime
    app[_BUSY_KEY] = set()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    pages.add_routes(app)  # / /incidents[/id] /checklists /api/overview /api/checklists
    incidents_api.add_routes(app)
    tickets_api.add_routes(app)  # POST /api/incidents/<id>/ack
    maintenance_api.add_routes(app)  # /api/maintenance, POST /api/incidents/<id>/exempt
    inbound_api.add_routes(app)  # POST /api/inbound/<source>
    return app


def _outermost(app_handler: Handler) -> Handler:
    """What runs before aiohttp routes a request (and before the middlewares)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        # aiohttp answers an unknown Expect with its text quoted back, which fails (500)
        # when the header carries bytes that are not UTF-8.
        if not request.headers.get("Expect", "").isascii():
            raise _json_error(web.HTTPExpectationFailed, "unknown Expect header")
        return await app_handler(request)

    return handle


class _MalformedRequests(logging.Filter):
    """On aiohttp's server logger: a malformed request (aiohttp answers it 400 itself) is
    the client's fault, not worth a traceback each; one line a minute at most says so."""

    def __init__(self) -> None:
        super().__init__()
        self._said_at = -CAP_LOG_INTERVAL
        self.refused = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or (exc.code or 400) >= 500:
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._said_at >= CAP_LOG_INTERVAL:
            self._said_at = now
            logger.info(
                "HTTP: refused a malformed request (%s); %d so far. Said at most once a minute",
                " ".join(str(exc.message).split())[:200],
                self.refused,
            )
        return False


_MALFORMED = _MalformedRequests()


class _ConnectionCap:
    """The protocol factory behind the listening socket: at most ``limit`` connections.

    At the cap, a new connection closes the oldest one that is not being answered
    (a client still sending its request, or idle between requests); when every one is
    being answered, the new one is closed instead. Warns at most once a minute.
    """

    def __init__(self, runner: web.AppRunner, busy: set[RequestHandler], limit: int) -> None:
        self._runner = runner
        self._busy = busy
        self.limit = limit
        self._warned_at = -CAP_LOG_INTERVAL
        self.closed = 0  # connections closed to stay under the cap

    def __call__(self) -> RequestHandler | _Refused:
        server = self._runner.server
        assert server is not None
        # Connections register on connection_made, a loop turn after this call: within
        # one burst of accepts the count lags by at most the listen backlog.
        connections = server.connections
        if len(connections) < self.limit:
            return server()
        idle = [c for c in connections if c not in self._busy]
        for handler in idle[: len(connections) - self.limit + 1]:
            handler.force_close()  # oldest first: the server keeps them in order
            self.closed += 1
        self._warn(len(connections))
        if not idle:
            self.closed += 1
            return _Refused()
        return server()

    def _warn(self, count: int) -> None:
        now = time.monotonic()
        if now - self._warned_at < CAP_LOG_INTERVAL:
            return
        self._warned_at = now
        logger.warning(
            "HTTP: %d connections open, over the cap of %d: closing the oldest that are not "
            "being answered (slow or stuck clients?); %d closed so far. Said at most once "
            "a minute",
            count,
            self.limit,
            self.closed,
        )


class _Refused(asyncio.Protocol):
    """A connection over the cap while every other one is being answered: closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _CappedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a ``_ConnectionCap``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, cap: _ConnectionCap):
        super().__init__(runner, host, port, reuse_address=True)
        self._cap = cap

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._cap, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class HttpServer:
    """The aiohttp app on one listening address; rebinding on reload keeps the app."""

    def __init__(self, runtime: Runtime, max_connections: int = MAX_CONNECTIONS) -> None:
        app = build_app(runtime)
        logging.getLogger("aiohttp.server").addFilter(_MALFORMED)  # once: filters are a set
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=HEADER_TIMEOUT,  # also bounds a request's headers: see above
            # Every body is read whole by the middleware; one that could not be (too
            # large, undecodable) is not drained afterwards: the connection is closed.
            lingering_time=0,
        )
        self._cap = _ConnectionCap(self._runner, app[_BUSY_KEY], max_connections)
        self._site: web.TCPSite | None = None
        self.listen: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> None:
        if self._runner.server is None:
            await self._runner.setup()
            assert self._runner.server is not None
            self._runner.server.request_handler = _outermost(self._runner.server.request_handler)
        site = _CappedSite(self._runner, host, port, self._cap)
        await site.start()
        if self._site is not None:
            await self._site.stop()
        self._site = site
        self.listen = (host, port)
        logger.info("HTTP listening on http://%s:%d/", host, port)

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._site = None
