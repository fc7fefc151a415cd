"""What the SaaS desk fakes (Zendesk, Freshdesk, ClickUp) share.

Each fake is an aiohttp app on a free port of 127.0.0.1, started inside the test's own
event loop (``async with FakeX(...) as fake``) or, for the bench, in a process of its
own. It checks every request's credentials the way the vendor does, validates bodies
against the vendor's API reference and answers with the vendor's shapes. Tests act as
"the vendor" through the fake's Python methods (reply, set a status, assign).

``throttle(n, retry_after)`` makes the next ``n`` requests answer the vendor's 429.
``requests`` records ``(method, path)`` of every request that reached the fake.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeDesk:
    """Base of the fakes: start/stop, request log, auth hook, 429 injection."""

    def __init__(self) -> None:
        self.app = web.Application(middlewares=[self._middleware])
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self._throttle: list[float] = []
        self._ids = itertools.count(1001)
        self.clock: Callable[[], float] = time.time

    def next_id(self) -> int:
        return next(self._ids)

    # --- what each fake defines -----------------------------------------------------

    def unauthorized(self, request: web.Request) -> web.StreamResponse | None:
        """The vendor's 401 for a request whose credentials are wrong, else None."""
        raise NotImplementedError

    def too_many(self, retry_after: float) -> web.StreamResponse:
        """The vendor's 429."""
        raise NotImplementedError

    def extra_headers(self) -> dict[str, str]:
        """Headers on every answer (rate-limit counters)."""
        return {}

    # --- plumbing ---------------------------------------------------------------------

    def throttle(self, count: int, retry_after: float) -> None:
        self._throttle = [retry_after] * count

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        self.requests.append((request.method, request.path))
        refused = self.unauthorized(request)
        if refused is not None:
            return refused
        if self._throttle:
            return self.too_many(self._throttle.pop(0))
        response = await handler(request)
        for name, value in self.extra_headers().items():
            response.headers.setdefault(name, value)
        return response

    def count(self, method: str, prefix: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    async def start(self, port: int = 0) -> FakeDesk:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def json_body(request: web.Request) -> tuple[Any, str | None]:
    """The request's JSON and None, or None and why it is not JSON."""
    if request.content_type != "application/json":
        return None, f"Content-Type must be application/json, not {request.content_type!r}"
    try:
        return json.loads(await request.read()), None
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def open_critical(service: Any, now: float, upstream: str) -> tuple[Any, Any]:
    """A critical incident opened through the real incident service, and its ``open``
    event as the dispatcher would hand it to ``upstream``."""
    from ccwatch.incidents.events import event_body
    from ccwatch.incidents.vocabulary import Event
    from ccwatch.tickets.adapters.base import TicketEvent
    from tests.test_incidents_service import CRITICAL, observe

    await observe(service, CRITICAL, now)
    [incident] = await service.list_incidents()
    body = event_body(incident, Event.OPEN)
    key = f"{incident.dedup_key}:{incident.seq}"
    return incident, TicketEvent(upstream, incident.id, incident.seq, "open", key, body)
