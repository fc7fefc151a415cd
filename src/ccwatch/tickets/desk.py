"""Service desks: upstreams whose role is ``ticket`` (docs/architecture.md, "Service desks").

A desk adapter (Request Tracker, Jira, ServiceNow, Zendesk, Freshdesk, ClickUp; one
module each under ``tickets/adapters/``) is a ``DeskAdapter``: it implements five calls
of its desk's API and this base turns outbox events into them:

- the first event of an incident routed to the desk (normally ``open``) **creates one
  ticket** — or finds the one a previous run created before it crashed (``find``: the
  desk's idempotency mechanism or a search by the incident's dedup key) — and records it
  in ``desk_tickets`` (``tickets/links.py``) before the outbox row counts as delivered;
- later events become **comments** (escalation, de-escalation, reminders, SLA warnings,
  the RCA draft…); ``resolve``/``expire`` **resolve** the ticket with the summary;
  ``reopen`` reopens it. Events that came *from* the desk (its acknowledgement, waiting
  on the customer) are not echoed back.

The reconciler (``tickets/reconciler.py``) calls ``poll`` for every open ticket and maps
what the desk says (``DeskView``) onto the incident through the incident service.

Each desk has one ``DeskHttp``: JSON requests over one aiohttp session with the shared
error mapping (``check_status``: 408/429/5xx temporary with ``Retry-After``, others
permanent) and a sliding-window ``RateLimiter`` shared by delivery and polling (ClickUp
allows 100 requests a minute per token; every desk answers 429 with ``Retry-After``).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ccwatch.durations import Duration
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.incidents.vocabulary import Event
from ccwatch.severity import SeverityName
from ccwatch.tickets.adapters.base import (
    IGNORE,
    Adapter,
    AdapterContext,
    TicketEvent,
    UpstreamBase,
    check_status,
)
from ccwatch.tickets.links import TicketLink, TicketLinks


class Phase(StrEnum):
    """Where a desk's ticket is, whatever the desk calls it."""

    NEW = "new"  # nobody has touched it
    IN_PROGRESS = "in_progress"  # assigned / open / being worked on
    WAITING = "waiting"  # pending, waiting on the customer (us), stalled, on hold
    SOLVED = "solved"  # solved, resolved, closed, done


@dataclass(frozen=True)
class TicketRef:
    """A desk's ticket: its id (or key) and a link a human can open."""

    id: str
    url: str | None = None


@dataclass(frozen=True)
class DeskView:
    """What one poll of a ticket saw."""

    status: str  # the desk's own word ("stalled", "Waiting for customer", "pending" …)
    phase: Phase
    first_response_at: float | None = None  # the vendor's first real (public) reply
    responder: str | None = None  # who gave it
    assignee: str | None = None


CREATE = "create"
COMMENT = "comment"
RESOLVE = "resolve"
REOPEN = "reopen"

DESK_EVENTS: Mapping[Event, str] = {
    Event.OPEN: CREATE,
    Event.ESCALATE: COMMENT,
    Event.DEESCALATE: COMMENT,
    Event.UPDATE: COMMENT,
    # The desk's own acknowledgement comes back from it; an operator's ack in ccwatch is
    # worth a line in the ticket.
    Event.ACKNOWLEDGE: COMMENT,
    Event.NODATA: COMMENT,
    Event.DATA_RESUMED: COMMENT,
    Event.SLA_WARNING: COMMENT,
    Event.SLA_BREACH: COMMENT,
    Event.ESCALATION_LEVEL: COMMENT,
    Event.RCA_DUE: COMMENT,
    Event.RESOLVE: RESOLVE,
    Event.REOPEN: REOPEN,
    Event.EXPIRE: RESOLVE,
    Event.REMINDER: COMMENT,
    Event.RCA_DELIVERED: COMMENT,
    Event.RCA_DEFERRED: COMMENT,
    Event.SLA_EXEMPT: COMMENT,
    Event.SLA_EXEMPT_LIFTED: COMMENT,
    # These come from a desk (its pending/stalled status) or an inbound webhook: the desk
    # that said so knows; telling it again would only add noise to the ticket.
    Event.WAITING_ON_CUSTOMER: IGNORE,
    Event.CUSTOMER_REPLIED: IGNORE,
}
"""What a desk does with each event; adapters start from it (``EVENTS = DESK_EVENTS``)
and override where their desk differs."""

_DEFAULT_AUTO_REPLY = [
    r"(?i)\bauto(matic|mated)?[- ]?(reply|response|responder)\b",
    r"(?i)\bout of (the )?office\b",
    r"(?i)\bwe have received your (request|ticket|e-?mail)\b",
    r"(?i)\bthis is an automated (message|notification)\b",
]

AcknowledgeOn = Literal["reply", "assign", "in_progress"]


class DeskUpstream(UpstreamBase):
    """What every service desk's config has beyond ``UpstreamBase``."""

    role: ClassVar[str] = "ticket"

    priorities: dict[SeverityName, str] = Field(
        default_factory=dict,
        description="the desk's priority per severity (each desk has its own default)",
    )
    poll_interval: Duration = Field(
        timedelta(minutes=1), description="how often each open ticket is polled"
    )
    requests_per_minute: int | None = Field(
        None, ge=1, description="cap of API requests a minute (delivery and polling together)"
    )
    auto_reply_patterns: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_AUTO_REPLY),
        description="regular expressions: a reply whose text matches is an auto-reply, "
        "not a first response",
    )
    acknowledge_on: list[AcknowledgeOn] = Field(
        default_factory=lambda: list[AcknowledgeOn](["reply", "in_progress"]),
        description="what on the desk acknowledges the incident: the vendor's first real "
        "reply, an assignee, or the ticket being worked on",
    )
    verify_tls: bool = True
    ca_file: Path | None = None

    def priority(self, severity: str, defaults: Mapping[str, str]) -> str:
        own = {str(name): value for name, value in self.priorities.items()}
        return own.get(severity) or defaults.get(severity) or defaults["minor"]

    def is_auto_reply(self, text: str) -> bool:
        return any(re.search(pattern, text) for pattern in self.auto_reply_patterns)


class RateLimiter:
    """At most ``per_minute`` requests in any 60 s (a sliding window: what the desks
    count, e.g. ClickUp's 100 a minute per token; a token bucket's burst would overrun
    it). ``pause(seconds)`` stops every request for that long (a 429's ``Retry-After``).
    """

    WINDOW = 60.0

    def __init__(
        self,
        per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting, for the bench

    def wait_needed(self) -> float:
        """Seconds until a request may go (0 when one may go now)."""
        now = self.clock()
        pause = max(0.0, self._paused_until - now)
        if self.per_minute is None:
            return pause
        # The same sum as below, so that rounding never keeps a request that has left.
        while self._sent and self._sent[0] + self.WINDOW <= now:
            self._sent.popleft()
        full = 0.0
        if len(self._sent) >= self.per_minute:
            full = self._sent[0] + self.WINDOW - now
        return max(pause, full)

    async def acquire(self) -> None:
        async with self._lock:
            while (wait := self.wait_needed()) > 0:
                self.waited += wait
                await self.sleep(wait)
            if self.per_minute is not None:
                self._sent.append(self.clock())

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.clock() + max(0.0, seconds))


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or the text when the answer is not JSON
    headers: Mapping[str, str]


class DeskHttp:
    """JSON requests to one desk over one aiohttp session (created on first use)."""

    def __init__(
        self,
        upstream: str,
        timeout: float,
        context: AdapterContext,
        *,
        verify_tls: bool = True,
        ca_file: Path | None = None,
        headers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.upstream = upstream
        self.context = context
        self.limiter = limiter or RateLimiter(None)
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._ssl: bool | ssl.SSLContext = verify_tls
        if verify_tls and ca_file is not None:
            self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: Any = None
        self.requests = 0

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> Answer:
        """One request; 2xx (and statuses in ``accept``) return, others raise the
        ``check_status`` error (a 429 also pauses the rate limiter)."""
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": "ccwatch", "Accept": "application/json"},
            )
        await self.limiter.acquire()
        self.requests += 1
        all_headers = {**self._headers, **(headers or {})}
        body = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        redactor = self.context.redactor
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                params=params,
                headers=all_headers,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(1 << 20)
                status, answer_headers = response.status, dict(response.headers)
        except TimeoutError as exc:
            raise TemporaryUpstreamError(f"{self.upstream}: timed out") from exc
        except aiohttp.ClientError as exc:
            detail = redactor.text(str(exc) or type(exc).__name__)
            raise TemporaryUpstreamError(f"{self.upstream}: {detail}") from exc
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        if status not in accept:
            try:
                check_status(
                    status,
                    text,
                    answer_headers.get("Retry-After"),
                    self.upstream,
                    redactor,
                    self.context.clock(),
                )
            except TemporaryUpstreamError as exc:
                if status == 429:
                    self.limiter.pause(exc.retry_after if exc.retry_after is not None else 60.0)
                raise
        return Answer(status, parsed, answer_headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def basic_auth(user: str, secret: str) -> str:
    """An ``Authorization`` value for HTTP basic auth (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def iso_epoch(value: Any) -> float | None:
    """An ISO 8601 time from a desk's answer as epoch seconds (None if it is not one)."""
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def title(event: TicketEvent) -> str:
    """A ticket's subject: ``[ccwatch P1 CRITICAL] blr1/acd: 23 of 100 agents …``."""
    body = event.body
    tag = f"[ccwatch {body.get('priority') or ''} {event.severity.upper()}]".replace("  ", " ")
    impact = str(body.get("impact") or body.get("summary") or "")
    return f"{tag} {body.get('site')}/{body.get('component')}: {impact}"[:250]


def _percent(value: Any) -> str:
    return f"{float(value) * 100:.1f}%" if isinstance(value, int | float) else "-"


def description(event: TicketEvent) -> str:
    """The ticket's first text: what, where, how bad, the SLA clocks, the reference."""
    body = event.body
    sla = body.get("sla") or {}
    lines = [
        str(body.get("summary") or ""),
        "",
        f"Severity: {event.severity} ({body.get('priority')})",
        f"Site / component: {body.get('site')} / {body.get('component')}",
        f"Impact: {body.get('impact')}",
        f"Production loss: {_percent(body.get('production_loss'))}",
        f"Started at: {body.get('started_at') or body.get('opened_at')}",
        f"First response due: {sla.get('first_response_due') or '-'}",
        f"Resolution due: {sla.get('resolution_due') or '-'}",
        f"Reference: {event.dedup_key}",
    ]
    diagnostics = body.get("diagnostics") or {}
    if diagnostics.get("host"):
        lines += ["", "Host:", json.dumps(diagnostics["host"], indent=2, sort_keys=True)]
    if diagnostics.get("log_excerpt"):
        lines += ["", "Log excerpt:", *[f"  {line}" for line in diagnostics["log_excerpt"]]]
    return "\n".join(lines).strip() + "\n"


def comment_text(event: TicketEvent) -> str:
    """One later event as a comment: what happened, and the state it left."""
    body = event.body
    what = event.event.replace("_", " ")
    if isinstance(body.get("escalation"), dict):
        what = f"escalated to {body['escalation'].get('name')}"
    elif body.get("rca_draft") and event.kind is Event.UPDATE:
        what = "RCA draft written (edit it before delivering the RCA)"
    lines = [
        f"ccwatch: {what} (event #{event.seq})",
        f"Severity: {event.severity} ({body.get('priority')}), state {body.get('state')}",
        f"Production loss: {_percent(body.get('production_loss'))}"
        f" (peak {_percent(body.get('peak_loss'))})",
        str(body.get("impact") or body.get("summary") or ""),
    ]
    if body.get("detail"):
        lines.append(str(body["detail"]))
    if body.get("rca_draft"):
        lines += ["", str(body["rca_draft"])]
    lines.append(f"Reference: {event.dedup_key}")
    return "\n".join(line for line in lines if line is not None).strip() + "\n"


def resolve_text(event: TicketEvent) -> str:
    body = event.body
    lines = [
        f"ccwatch: {'resolved' if event.kind is Event.RESOLVE else event.event}",
        str(body.get("summary") or ""),
    ]
    resolution = body.get("resolution") or {}
    if isinstance(resolution, dict):
        for key in ("duration_seconds", "peak_severity", "peak_loss", "lost_production"):
            if key in resolution:
                lines.append(f"{key.replace('_', ' ')}: {resolution[key]}")
    lines.append(f"Reference: {event.dedup_key}")
    return "\n".join(lines).strip() + "\n"


class DeskAdapter(Adapter):
    """The base of every service-desk adapter; subclasses implement the desk's calls."""

    role: ClassVar[str] = "ticket"
    EVENTS: Mapping[Event, str] = DESK_EVENTS

    def __init__(self, config: DeskUpstream, context: AdapterContext) -> None:
        if context.links is None:
            raise ValueError(f"{config.upstream_name}: a service desk needs the ticket links")
        self.name = config.upstream_name
        self.config = config
        self.context = context
        self.links: TicketLinks = context.links
        self.limiter = RateLimiter(config.requests_per_minute)

    def desk_http(self, headers: Mapping[str, str] | None = None) -> DeskHttp:
        """The desk's HTTP client: its timeout, TLS settings and rate limiter."""
        return DeskHttp(
            self.name,
            self.config.timeout.total_seconds(),
            self.context,
            verify_tls=self.config.verify_tls,
            ca_file=self.config.ca_file,
            headers=headers,
            limiter=self.limiter,
        )

    # --- what each desk implements -------------------------------------------------

    @abc.abstractmethod
    async def create(self, event: TicketEvent) -> TicketRef:
        """Create the incident's ticket (idempotently where the desk can)."""

    @abc.abstractmethod
    async def find(self, event: TicketEvent) -> TicketRef | None:
        """The ticket a previous run created for this incident, if any."""

    @abc.abstractmethod
    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        """Add a comment (public or internal, as the desk's adapter documents)."""

    @abc.abstractmethod
    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        """Resolve/close the ticket with the resolve summary."""

    @abc.abstractmethod
    async def poll(self, ref: TicketRef) -> DeskView:
        """What the desk says about the ticket now."""

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        """Reopen a resolved ticket; desks without a reopen get a comment."""
        await self.comment(ref, comment_text(event), event)

    # --- the mapping ---------------------------------------------------------------

    def priority(self, event: TicketEvent, defaults: Mapping[str, str]) -> str:
        return self.config.priority(event.severity, defaults)

    async def ticket_for(
        self, event: TicketEvent, link: TicketLink | None = None
    ) -> tuple[TicketLink, bool]:
        """The incident's ticket: ``link`` (the recorded one), the one ``find`` finds, or a
        new one. The bool says whether it was created now."""
        if link is not None:
            return link, False
        ref = await self.find(event)
        created = ref is None
        if ref is None:
            ref = await self.create(event)
        link = await self.links.save(
            self.name, event.incident_id, ref.id, ref.url, self.context.clock()
        )
        return link, created

    def _came_from_here(self, event: TicketEvent) -> bool:
        """An acknowledgement this desk made (``<upstream>:<who>``): the ticket shows it
        already, so it is not echoed back as a comment."""
        by = str(event.body.get("acknowledged_by") or "")
        return event.kind is Event.ACKNOWLEDGE and by.startswith(f"{self.name}:")

    async def deliver(self, event: TicketEvent) -> None:
        kind = event.kind
        action = self.EVENTS.get(kind, IGNORE) if kind is not None else IGNORE
        if action == IGNORE or self._came_from_here(event):
            return
        recorded = await self.links.get(self.name, event.incident_id)
        if action == RESOLVE and recorded is None:
            return  # never ticketed here (e.g. resolved inside a maintenance window)
        link, created = await self.ticket_for(event, recorded)
        ref = TicketRef(link.ticket_id, link.url)
        if action == CREATE or (created and action == COMMENT):
            # A new ticket's description already says what this event says (the first
            # event a desk sees may be an escalation when it only takes criticals).
            return
        if action == RESOLVE:
            await self.resolve(ref, event)
            await self.links.close(self.name, event.incident_id)
        elif action == REOPEN:
            await self.reopen(ref, event)
            await self.links.reopen(self.name, event.incident_id)
        elif action == COMMENT:
            await self.comment(ref, comment_text(event), event)
        else:
            raise PermanentUpstreamError(f"{self.name}: unknown desk action {action!r}")
