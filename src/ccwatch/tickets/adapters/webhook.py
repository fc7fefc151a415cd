"""``webhook``: POST the generic JSON event body (README, "Tickets") to a URL.

Every event is sent, named in ``X-Ccwatch-Event`` and the body's ``event``.

Headers: ``Content-Type: application/json``, ``Idempotency-Key: <dedup_key>:<seq>`` (a
receiver that saw the key already can answer 2xx without acting twice),
``X-Ccwatch-Event``, ``X-Ccwatch-Signature: sha256=<hex HMAC-SHA256 of the exact body
bytes>`` when a secret is set, ``Authorization: Bearer …`` when a token is set, and the
configured custom headers.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field

from ccwatch.configbase import SecretEnv, SecretFile, read_secret
from ccwatch.incidents.vocabulary import Event
from ccwatch.tickets.adapters.base import (
    Adapter,
    AdapterContext,
    HttpPoster,
    TicketEvent,
    UpstreamBase,
    UpstreamType,
)


class WebhookUpstream(UpstreamBase):
    type: Literal["webhook"]
    url: AnyHttpUrl
    secret_env: SecretEnv = None
    secret_file: SecretFile = None
    bearer_token_env: SecretEnv = Field(None, description="sent as Authorization: Bearer")
    bearer_token_file: SecretFile = None
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    ca_file: Path | None = None


SIGNATURE_HEADER = "X-Ccwatch-Signature"


def signature(secret: str, body: bytes) -> str:
    """The value of ``X-Ccwatch-Signature`` for ``body``; receivers compare it in constant time."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookAdapter(Adapter):
    EVENTS = {
        Event.OPEN: "post",
        Event.ESCALATE: "post",
        Event.DEESCALATE: "post",
        Event.UPDATE: "post",
        Event.ACKNOWLEDGE: "post",
        Event.NODATA: "post",
        Event.DATA_RESUMED: "post",
        Event.SLA_WARNING: "post",
        Event.SLA_BREACH: "post",
        Event.ESCALATION_LEVEL: "post",
        Event.RCA_DUE: "post",
        Event.RESOLVE: "post",
        Event.REOPEN: "post",
        Event.EXPIRE: "post",
        Event.REMINDER: "post",
        Event.RCA_DELIVERED: "post",
        Event.RCA_DEFERRED: "post",
        Event.SLA_EXEMPT: "post",
        Event.SLA_EXEMPT_LIFTED: "post",
        Event.WAITING_ON_CUSTOMER: "post",
        Event.CUSTOMER_REPLIED: "post",
    }

    def __init__(self, config: WebhookUpstream, context: AdapterContext) -> None:
        self.name = config.upstream_name
        self.config = config
        self.context = context
        self._secret = read_secret(config.secret_env, config.secret_file)
        self._token = read_secret(config.bearer_token_env, config.bearer_token_file)
        self._http = HttpPoster(
            self.name, config.timeout.total_seconds(), config.verify_tls, context, config.ca_file
        )

    def request_headers(self, event: TicketEvent, body: bytes) -> dict[str, str]:
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": event.idempotency_key,
            "X-Ccwatch-Event": event.event,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def deliver(self, event: TicketEvent) -> None:
        body = event.body_bytes()
        await self._http.post(str(self.config.url), body, self.request_headers(event, body))

    async def aclose(self) -> None:
        await self._http.aclose()


UPSTREAM = UpstreamType("webhook", WebhookUpstream, WebhookAdapter)
