"""Real peers for the ticket tests (no tests here): an HTTP receiver on its own thread,
and helpers to write outbox rows as the incident service does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ccwatch.state import StateStore, transaction
from tests.conftest import free_port


@dataclass
class Reply:
    status: int = 200
    body: str = '{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Validator = Callable[["Received"], Reply | None]


class Receiver:
    """An aiohttp server on a thread of its own, like a ticket system on another host.

    ``script`` replies are used first (one per request), then ``validator`` (a function
    that may refuse a request), then ``default``. ``stop()`` closes the port (upstream
    down); ``start()`` opens it again on the same port.
    """

    def __init__(
        self,
        port: int | None = None,
        validator: Validator | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        self.validator = validator
        self.tls = tls
        self.requests: list[Received] = []
        self.accepted: list[Received] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(
            request.method,
            request.path_qs,
            dict(request.headers),
            await request.read(),
            time.time(),
        )
        with self._lock:
            self.requests.append(received)
            reply = self.script.pop(0) if self.script else None
        if reply is None and self.validator is not None:
            reply = self.validator(received)
        reply = reply or self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if 200 <= reply.status < 300:
            with self._lock:
                self.accepted.append(received)
        return web.Response(
            status=reply.status,
            text=reply.body,
            headers=reply.headers,
            content_type="application/json",
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.tls, reuse_address=True
        )
        await site.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> Receiver:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def keys(self) -> list[str]:
        """Idempotency keys of the accepted requests, in arrival order."""
        with self._lock:
            return [r.headers.get("Idempotency-Key", "") for r in self.accepted]


def self_signed_tls(workdir: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate (openssl CLI)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def generic_body(
    incident_id: str,
    seq: int,
    event: str,
    *,
    site: str = "blr1",
    component: str = "acd",
    severity: str = "critical",
    **extra: Any,
) -> dict[str, Any]:
    """The generic webhook body, as the incident service writes it."""
    priority = {"critical": "P1", "major": "P2", "minor": "P3"}[severity]
    body: dict[str, Any] = {
        "event": event,
        "seq": seq,
        "dedup_key": f"ccwatch:{site}:{component}:{incident_id}",
        "incident_id": incident_id,
        "site": site,
        "component": component,
        "severity": severity,
        "priority": priority,
        "state": "resolved" if event == "resolve" else "open",
        "production_loss": 0.23,
        "impact": "23 of 100 agents cannot take calls (23.0%)",
        "summary": f"{severity} production loss on {component} at {site}: 23.0%",
        "opened_at": "2026-11-23T10:00:00Z",
        "sla": {
            "first_response_due": "2026-11-23T11:30:00Z",
            "resolution_due": "2026-11-23T16:00:00Z",
            "rca_due": None,
        },
        "diagnostics": {},
    }
    body.update(extra)
    return body


def enqueue(
    store: StateStore,
    upstream: str,
    incident_id: str,
    seq: int,
    event: str,
    now: float | None = None,
    **body_extra: Any,
) -> None:
    """Write one outbox row the way the incident service does (its own transaction)."""
    body = generic_body(incident_id, seq, event, **body_extra)
    created = time.time() if now is None else now

    def write(connection: Any) -> None:
        with transaction(connection):
            connection.execute(
                "INSERT INTO outbox (upstream, incident_id, seq, event, idempotency_key, body, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upstream,
                    incident_id,
                    seq,
                    event,
                    f"{body['dedup_key']}:{seq}",
                    json.dumps(body),
                    created,
                    created,
                ),
            )

    store.run_sync(write)


def outbox_statuses(store: StateStore) -> list[tuple[str, str, str, int, str | None]]:
    """(upstream, idempotency_key, status, attempts, last_error) by row id."""
    return store.run_sync(
        lambda c: [
            tuple(row)
            for row in c.execute(
                "SELECT upstream, idempotency_key, status, attempts, last_error FROM outbox "
                "ORDER BY id"
            )
        ]
    )


class FakeClock:
    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
