"""Where a heartbeat goes: a ping URL, or a ``Watchdog`` alert to an Alertmanager.

Both send through the ticket adapters' HTTP plumbing (``HttpPoster``, its outcome
mapping and redaction); the Watchdog goes through the Alertmanager adapter's own
``post_alerts``. A send returns when the target accepted it and raises an
``UpstreamError`` otherwise.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from ccwatch.heartbeat.config import shown_url
from ccwatch.redact import Redactor, Secret, redact_then_cut
from ccwatch.tickets.adapters.alertmanager import AlertmanagerAdapter, AlertmanagerUpstream
from ccwatch.tickets.adapters.base import AdapterContext, HttpPoster, iso

MAX_REASON_CHARS = 2000  # self-hosted Healthchecks keeps the first 10 kB of a ping body
WATCHDOG = "Watchdog"


class Target(Protocol):
    kind: str  # the metric label: "url" or "alertmanager"
    shown: str  # how logs name it (never a secret)

    async def alive(self, now: float) -> None:
        """Say that ccwatch is healthy."""

    async def failing(self, reason: str, now: float) -> bool:
        """Say that it is not, and why; False when this target has no failure signal."""

    async def aclose(self) -> None: ...


def fail_url(url: str) -> str:
    """healthchecks.io's failure signal: ``/fail`` appended to the path (query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


class PingUrl:
    """A healthchecks.io-style check: POST to the URL while healthy, to ``<url>/fail``
    with the reason as the body while not. The URL is a secret (its path is the check's
    id): errors and logs name it only as ``shown_url``."""

    kind = "url"

    def __init__(self, url: str, site: str, timeout: float, context: AdapterContext) -> None:
        self.url = url.strip()
        self.site = site
        self.shown = f"ping URL {shown_url(self.url)}"
        path = urlsplit(self.url).path
        # Whatever error text quotes the URL or its path (the check id) is masked.
        redactor = Redactor([Secret(self.url), Secret(path.strip("/"))])
        self._context = AdapterContext(site, redactor=redactor, clock=context.clock)
        self._http = HttpPoster(self.shown, timeout, True, self._context)

    async def alive(self, now: float) -> None:
        await self._post(self.url, f"ccwatch {self.site}: healthy")

    async def failing(self, reason: str, now: float) -> bool:
        await self._post(fail_url(self.url), f"ccwatch {self.site}: {reason}")
        return True

    async def _post(self, url: str, text: str) -> None:
        body = redact_then_cut(text, MAX_REASON_CHARS, self._context.redactor).encode()
        await self._http.post(url, body, {"Content-Type": "text/plain; charset=utf-8"})

    async def aclose(self) -> None:
        await self._http.aclose()


class WatchdogAlert:
    """An always-firing ``Watchdog`` alert (labels ``alertname=Watchdog``, ``site``,
    ``severity=none`` over the upstream's extra labels), re-sent each beat with
    ``endsAt`` three intervals ahead: when ccwatch stops sending, Alertmanager resolves it
    on its own. No failure signal: an unhealthy ccwatch just stops sending."""

    kind = "alertmanager"

    def __init__(
        self,
        upstream: AlertmanagerUpstream,
        site: str,
        interval: float,
        timeout: timedelta,
        context: AdapterContext,
    ) -> None:
        self.site = site
        self.shown = f"Watchdog alert via {upstream.upstream_name}"
        self.lifetime = 3 * interval
        self.labels = {**upstream.labels, "alertname": WATCHDOG, "site": site, "severity": "none"}
        # The heartbeat's timeout bounds this send, not the upstream's ticket timeout.
        bounded = upstream.model_copy(update={"timeout": timeout})
        self._adapter = AlertmanagerAdapter(bounded, context)
        self._starts_at: float | None = None
        self._ends_at = 0.0

    def alert(self, now: float) -> dict[str, Any]:
        if self._starts_at is None or now >= self._ends_at:
            self._starts_at = now  # the last one expired: this is a new alert
        return {
            "labels": self.labels,
            "annotations": {
                "summary": f"ccwatch at {self.site} is running and healthy",
                "description": "Always firing while ccwatch is healthy. Route it to a "
                "dead-man's switch receiver: its absence means ccwatch is down or unhealthy.",
            },
            "startsAt": iso(self._starts_at),
            "endsAt": iso(now + self.lifetime),
            "generatorURL": f"ccwatch://{self.site}/heartbeat",
        }

    async def alive(self, now: float) -> None:
        await self._adapter.post_alerts([self.alert(now)])
        self._ends_at = now + self.lifetime

    async def failing(self, reason: str, now: float) -> bool:
        return False

    async def aclose(self) -> None:
        await self._adapter.aclose()
