"""The CLI's one client of the running daemon's API.

An incident change made from the command line (acknowledge, RCA, exemption, maintenance
windows) goes through the running daemon's API, so the daemon's incident service — the
one door — makes it and its in-memory state hears of it; with no daemon listening the
verb falls back to a service of its own (docs/architecture.md, "One write path").
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click

from ccwatch.config import Config
from ccwatch.configbase import read_secret

if TYPE_CHECKING:
    from ccwatch.incidents.service import IncidentService

EXIT_FAILURE = 1
EXIT_NOT_FOUND = 3


class DaemonRefused(ValueError):
    """The daemon refused the request as invalid (400/409); the message says why."""


class DaemonNotFound(LookupError):
    """The daemon answered 404 for the thing named."""


def call_daemon(
    config: Config, method: str, path: str, payload: dict[str, Any] | None, what: str
) -> dict[str, Any] | None:
    """``method path`` on the daemon at ``http.listen`` with the configured token.

    Returns the JSON answer, or None when no daemon listens there. Raises
    ``DaemonNotFound`` (404), ``DaemonRefused`` (400/409) or a ``click.ClickException``
    naming ``what`` for the rest.
    """
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.http.port}{path}"
    token = read_secret(config.http.token_env, config.http.token_file)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our URL
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()[:300]
        if exc.code == 404:
            raise DaemonNotFound(detail) from None
        if exc.code in (400, 409):
            try:
                message = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                message = detail
            raise DaemonRefused(str(message)) from None
        if exc.code in (401, 403):
            raise click.ClickException(
                f"the daemon at {config.http.listen} refused {what} ({exc.code}): "
                "run this where http.token_env / http.token_file is readable"
            ) from None
        raise click.ClickException(f"the daemon answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError | FileNotFoundError):
            return None
        raise click.ClickException(
            f"cannot reach the daemon at {config.http.listen}: {reason}"
        ) from None


def change_incident(
    config: Config,
    incident_id: str,
    verb: str,
    payload: dict[str, Any],
    what: str,
    local: Callable[[IncidentService], Coroutine[Any, Any, Any]],
) -> dict[str, Any] | Any:
    """An incident change from the CLI: ``POST /api/incidents/<id>/<verb>`` of the running
    daemon, or ``local(service)`` on an incident service of our own when none listens.

    Returns the daemon's JSON answer or what ``local`` returned. An unknown incident exits
    3, a refused change or a failing store exits 1, each with one line on stderr.
    """
    from prometheus_client import CollectorRegistry

    from ccwatch.compose import build_incident_service, open_state
    from ccwatch.errors import StateStoreError
    from ccwatch.incidents.repository import UnknownIncidentError

    path = f"/api/incidents/{urllib.parse.quote(incident_id)}/{verb}"
    try:
        try:
            answer = call_daemon(config, "POST", path, payload, what)
        except DaemonNotFound:
            raise UnknownIncidentError(incident_id) from None
        if answer is not None:
            return answer
        if config.sites is not None:
            # Several workers: only the worker holding the incident's site may change it.
            raise click.ClickException(
                f"no ccwatch worker listens at {config.http.listen}; with sites: an incident "
                "changes through the API of the worker processing its site (GET /api/sites "
                "of any worker names it)"
            )
        store = open_state(config.state)
        try:
            service = build_incident_service(config, store, CollectorRegistry())
            return asyncio.run(local(service))
        finally:
            store.close()
    except UnknownIncidentError:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND) from None
    except (ValueError, StateStoreError) as exc:
        click.echo(f"ccwatch: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None
