"""What every ticket adapter is: one small base class, and the HTTP plumbing they share.

An adapter turns one outbox event into one call of its upstream's API. It returns when
the upstream accepted the event and raises ``TemporaryUpstreamError`` (retry later,
optionally after ``retry_after`` seconds) or ``PermanentUpstreamError`` (dead-letter)
otherwise; the dispatcher does the retrying. HTTP adapters post through one
``HttpPoster`` (an aiohttp session with the error mapping below); tests point them at
local receivers, and ``RecordingAdapter`` stands in for an upstream where no peer is
needed.

HTTP outcome mapping: 2xx accepted; 408, 429, 5xx, timeouts, refused connections and
TLS failures → ``TemporaryUpstreamError`` (with ``Retry-After`` in seconds, from either
delta-seconds or an HTTP date); any other status → ``PermanentUpstreamError`` with the
status and a short, redacted excerpt of the answer.
"""

from __future__ import annotations

import abc
import email.utils
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import AnyUrl, Field, ValidationInfo, field_validator

from ccwatch.configbase import StrictModel
from ccwatch.durations import Duration
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.incidents.vocabulary import Event
from ccwatch.redact import Redactor, redact_then_cut
from ccwatch.severity import Severity, SeverityName

if TYPE_CHECKING:
    import aiohttp

    from ccwatch.notify.config import EmailConfig
    from ccwatch.tickets.links import TicketLinks

_EXCERPT_CHARS = 200
# Header names whose values are credentials.
_SECRET_HEADER = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie)$|api[-_]?key|token|secret|password|"
    r"signature|^x-auth"
)


class UpstreamBase(StrictModel):
    """What every upstream has: a name, an on/off switch and its routing. Each upstream
    type subclasses it with ``type: Literal["<name>"]`` and its own keys."""

    type: str
    role: ClassVar[str] = "notify"
    """``ticket`` (a service desk: at most one ticket per incident), ``page`` (wakes
    someone: PagerDuty) or ``notify`` (webhook, Alertmanager, e-mail)."""

    enabled: bool = True  # first, so that secret checks can skip a disabled example
    name: str | None = Field(None, description="defaults to the type; must be unique")
    severities: list[SeverityName] = Field(
        default_factory=lambda: [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL],
        description="which incident severities this upstream receives",
    )
    components: dict[str, list[SeverityName]] = Field(
        default_factory=dict,
        description="per-component override of `severities` (an empty list mutes a component)",
    )
    timeout: Duration = timedelta(seconds=10)
    retry_max: Duration = Field(
        timedelta(minutes=5), description="cap of the exponential retry backoff"
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_inline_secrets(cls, value: Any, info: ValidationInfo) -> Any:
        """Secrets live in env vars or files, never in a URL or a header value."""
        if isinstance(value, AnyUrl) and value.password:
            raise ValueError(
                "a password in the URL is never written inline: remove it and name the "
                "secret with bearer_token_env/_file or secret_env/_file"
            )
        if info.field_name == "headers" and isinstance(value, dict):
            for header in value:
                if _SECRET_HEADER.search(header):
                    raise ValueError(
                        f"header {header!r} carries a secret and is never written inline: "
                        "use bearer_token_env/_file (Authorization) or a secret file"
                    )
        return value

    @property
    def upstream_name(self) -> str:
        return self.name or str(getattr(self, "type", "upstream"))

    def wants(self, component: str, severity: Severity) -> bool:
        """Whether an incident of this component and severity is routed here."""
        return severity in self.components.get(component, self.severities)


@dataclass(frozen=True)
class TicketEvent:
    """One outbox row as an adapter sees it; ``body`` is the generic body (README, "Tickets")."""

    upstream: str
    incident_id: str
    seq: int
    event: str  # an ``Event`` value
    idempotency_key: str
    body: dict[str, Any]
    created_at: float = 0.0
    attempts: int = 0
    id: int = 0

    @property
    def dedup_key(self) -> str:
        return str(self.body.get("dedup_key") or self.idempotency_key.rpartition(":")[0])

    @property
    def kind(self) -> Event | None:
        """The event as the vocabulary's member (None for a name it does not know, e.g.
        a row written by a newer ccwatch: adapters treat it as ignored)."""
        try:
            return Event(self.event)
        except ValueError:
            return None

    @property
    def severity(self) -> str:
        return str(self.body.get("severity") or "minor")

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class AdapterContext:
    """What adapters may need beyond their own config; built once by the dispatcher."""

    site: str
    redactor: Redactor = field(default_factory=Redactor)
    clock: Callable[[], float] = time.time
    email: EmailConfig | None = None  # the SMTP relay (top-level ``email:``)
    links: TicketLinks | None = None  # the service desks' tickets (``tickets/links.py``)


class Adapter(abc.ABC):
    """Delivers events to one upstream. ``name`` is the upstream's unique name.

    ``EVENTS`` maps every ``Event`` to what this upstream does with it (its own action
    names; ``IGNORE`` where it deliberately sends nothing). A test fails when an event is
    added that some adapter does not map.
    """

    name: str
    EVENTS: Mapping[Event, str]

    @abc.abstractmethod
    async def deliver(self, event: TicketEvent) -> None:
        """Return once the upstream accepted ``event``; raise an ``UpstreamError`` if not."""

    async def restore(self, delivered: list[TicketEvent]) -> None:  # noqa: B027
        """At start: the newest delivered event of each incident, for adapters that keep
        upstream state alive (Alertmanager re-sends firing alerts)."""

    async def periodic(self) -> None:  # noqa: B027 - most adapters need no timer
        """Called every few seconds by the dispatcher (Alertmanager re-sends from here)."""

    async def aclose(self) -> None:  # noqa: B027 - stateless adapters have nothing to close
        """Release connections."""


IGNORE = "ignore"
"""An ``Adapter.EVENTS`` action: the upstream is deliberately not told."""


@dataclass(frozen=True)
class UpstreamType:
    """One upstream type's registration: its ``type:`` name, config model and adapter."""

    name: str
    model: type[UpstreamBase]
    adapter: Callable[[Any, AdapterContext], Adapter]


@dataclass
class RecordingAdapter(Adapter):
    """Keeps what it is given (like httpx's MockTransport). ``fail_with`` makes the next
    deliveries raise the given errors, in order, before accepting again."""

    EVENTS = {event: "record" for event in Event}
    name: str = "recording"
    delivered: list[TicketEvent] = field(default_factory=list)
    fail_with: list[Exception] = field(default_factory=list)
    attempts: int = 0

    async def deliver(self, event: TicketEvent) -> None:
        self.attempts += 1
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.delivered.append(event)

    @property
    def keys(self) -> list[str]:
        return [event.idempotency_key for event in self.delivered]


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def check_status(
    status: int, text: str, retry_after: str | None, upstream: str, redactor: Redactor, now: float
) -> None:
    """2xx returns; 408/429/5xx raise Temporary (with Retry-After); other codes Permanent."""
    if 200 <= status < 300:
        return
    # Redact first, cut after: a secret straddling the cut would keep its first part.
    excerpt = redact_then_cut(text.strip(), _EXCERPT_CHARS, redactor).replace("\n", " ")
    message = f"{upstream}: HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if status in (408, 429) or status >= 500:
        raise TemporaryUpstreamError(message, retry_after=parse_retry_after(retry_after, now))
    raise PermanentUpstreamError(message)


class HttpPoster:
    """POSTs for one upstream over one aiohttp session, created on first use (inside the
    running loop) and verifying TLS (system CAs, or ``ca_file``) unless told not to."""

    def __init__(
        self,
        upstream: str,
        timeout: float,
        verify_tls: bool,
        context: AdapterContext,
        ca_file: Path | None = None,
    ) -> None:
        self.upstream = upstream
        self.context = context
        self._timeout_seconds = timeout
        self._ssl: bool | ssl.SSLContext = verify_tls
        if verify_tls and ca_file is not None:
            self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        import aiohttp  # loaded on first delivery: loading the config needs no HTTP client

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                headers={"User-Agent": "ccwatch"},
            )
        redactor = self.context.redactor
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), ssl=self._ssl, allow_redirects=False
            ) as response:
                text = (await response.content.read(4096)).decode("utf-8", errors="replace")
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise TemporaryUpstreamError(f"{self.upstream}: timed out") from exc
        except aiohttp.ClientError as exc:
            detail = redactor.text(str(exc) or type(exc).__name__)
            raise TemporaryUpstreamError(f"{self.upstream}: {detail}") from exc
        check_status(status, text, retry_after, self.upstream, redactor, self.context.clock())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
