"""``freshdesk``: a Freshdesk ticket per incident (API v2).

- **create**: ``POST /api/v2/tickets`` ``{subject, description (HTML), email or
  requester_id, priority 1 low … 4 urgent, status 2 (open), source, tags, group_id,
  type, custom_fields}``. Freshdesk has no idempotent create, so every ticket carries a
  tag made from the incident's dedup key (``ccwatch-`` + 20 hex digits of its SHA-256:
  Freshdesk tags are at most 32 characters) and, when ``reference_field`` names a
  custom text field, the dedup key itself.
- **find** (before every create, so a crash between the create and the link, or a
  retry of a create whose answer was lost, finds the ticket instead of opening a second
  one): first the ticket list, ``GET /api/v2/tickets?email=…`` (or ``requester_id``),
  newest first, filtered by the tag: it reads the database, so a ticket created a
  second ago is there, but it only covers the last 30 days and tickets still under
  ccwatch's requester; then the search API, ``GET /api/v2/search/tickets?query="tag:'…'"``,
  which covers the rest but is eventually consistent (new tickets take a few minutes to
  be indexed).
- **comment**: ``POST /api/v2/tickets/{id}/notes`` ``{body, private: true}`` (public
  notes with ``public_notes``); **resolve**: ``PUT /api/v2/tickets/{id}`` ``{status:
  4}`` (``resolve_status: 5`` closes) then a note with the summary; **reopen**: status 2
  and a note.
- **poll**: ``GET /api/v2/tickets/{id}`` (status, ``responder_id``) and ``GET
  /api/v2/tickets/{id}/conversations``: the first conversation that is not private, not
  incoming (a reply or public note by an agent, not the requester), not by ccwatch's own
  agent (``GET /api/v2/agents/me``) and not matching ``auto_reply_patterns``. Status 2
  open → NEW while nobody is assigned and nobody answered, else IN_PROGRESS; 3 pending
  → WAITING (``waiting_statuses``, custom statuses too); 4 resolved / 5 closed → SOLVED
  (``solved_statuses``).

Auth: basic auth with the API key as user name and ``X`` as password. Rate limits are
per minute by plan (``X-Ratelimit-Remaining``); a 429's ``Retry-After`` pauses the desk.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, read_secret
from ccwatch.errors import PermanentUpstreamError
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent, UpstreamType
from ccwatch.tickets.desk import (
    DESK_EVENTS,
    DeskAdapter,
    DeskUpstream,
    DeskView,
    Phase,
    TicketRef,
    basic_auth,
    comment_text,
    description,
    iso_epoch,
    resolve_text,
    title,
)

PRIORITIES = {"critical": "4", "major": "3", "minor": "2"}
STATUS_NAMES = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
OPEN = 2
SUBJECT_MAX = 255
LIST_PAGE = 100
CONVERSATION_PAGE = 30
CONVERSATION_PAGES = 10


def dedup_tag(dedup_key: str) -> str:
    """The ticket's tag for an incident (Freshdesk tags are at most 32 characters)."""
    return "ccwatch-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:20]


def as_html(text: str) -> str:
    return "<div>" + html.escape(text).replace("\n", "<br>") + "</div>"


class FreshdeskUpstream(DeskUpstream):
    type: Literal["freshdesk"]
    url: AnyHttpUrl = Field(description="the helpdesk, e.g. https://vendor.freshdesk.com")
    api_key_env: SecretEnv = None
    api_key_file: SecretFile = None
    requester_email: str | None = Field(None, description="ccwatch's contact (requester)")
    requester_id: int | None = None
    group_id: int | None = None
    ticket_type: str | None = Field(None, description="the ticket `type`, e.g. Incident")
    source: int = Field(2, description="1 e-mail, 2 portal, 3 phone, …")
    tags: list[str] = Field(default_factory=lambda: ["ccwatch"])
    reference_field: str | None = Field(
        None, description="a custom text field (cf_…) that receives the dedup key"
    )
    public_notes: bool = Field(False, description="later events as public notes")
    waiting_statuses: list[int] = Field(
        default_factory=lambda: [3], description="statuses that mean waiting on ccwatch"
    )
    solved_statuses: list[int] = Field(default_factory=lambda: [4, 5])
    resolve_status: Literal[4, 5] = 4
    requests_per_minute: int | None = Field(
        200, ge=1, description="the smallest paid plan's limit; raise it to your plan's"
    )

    @model_validator(mode="after")
    def _needs_key_and_requester(self) -> FreshdeskUpstream:
        if self.enabled and not (self.api_key_env or self.api_key_file):
            raise ValueError("a freshdesk upstream needs api_key_env or api_key_file")
        if not (self.requester_email or self.requester_id):
            raise ValueError("a freshdesk upstream needs requester_email or requester_id")
        for severity, value in self.priorities.items():
            if value not in ("1", "2", "3", "4"):
                raise ValueError(f"priorities.{severity}: 1 low, 2 medium, 3 high or 4 urgent")
        return self


class FreshdeskAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: FreshdeskUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: FreshdeskUpstream = config
        self.base = str(config.url).rstrip("/")
        key = read_secret(config.api_key_env, config.api_key_file) or ""
        self.http = self.desk_http({"Authorization": basic_auth(key, "X")})
        self._me: int | None = None
        self._agents: dict[int, str] = {}
        self._first: dict[str, tuple[float, str]] = {}

    def _ref(self, ticket_id: Any) -> TicketRef:
        return TicketRef(str(ticket_id), f"{self.base}/a/tickets/{ticket_id}")

    def ticket_body(self, event: TicketEvent) -> dict[str, Any]:
        config = self.config
        body: dict[str, Any] = {
            "subject": title(event)[:SUBJECT_MAX],
            "description": as_html(description(event)),
            "priority": int(self.priority(event, PRIORITIES)),
            "status": OPEN,
            "source": config.source,
            "tags": [*config.tags, dedup_tag(event.dedup_key)],
        }
        if config.requester_id is not None:
            body["requester_id"] = config.requester_id
        else:
            body["email"] = config.requester_email
        if config.group_id is not None:
            body["group_id"] = config.group_id
        if config.ticket_type:
            body["type"] = config.ticket_type
        if config.reference_field:
            body["custom_fields"] = {config.reference_field: event.dedup_key}
        return body

    async def create(self, event: TicketEvent) -> TicketRef:
        answer = await self.http.request(
            "POST", f"{self.base}/api/v2/tickets", json_body=self.ticket_body(event)
        )
        if not isinstance(answer.body, dict) or "id" not in answer.body:
            raise PermanentUpstreamError(f"{self.name}: the create answer has no ticket id")
        return self._ref(answer.body["id"])

    @staticmethod
    def _tagged(tickets: Any, tag: str) -> list[int]:
        items = tickets if isinstance(tickets, list) else []
        return sorted(
            int(t["id"])
            for t in items
            if isinstance(t, dict) and tag in (t.get("tags") or []) and "id" in t
        )

    async def find(self, event: TicketEvent) -> TicketRef | None:
        tag = dedup_tag(event.dedup_key)
        requester = (
            {"requester_id": str(self.config.requester_id)}
            if self.config.requester_id is not None
            else {"email": str(self.config.requester_email)}
        )
        listed = await self.http.request(
            "GET",
            f"{self.base}/api/v2/tickets",
            params={
                **requester,
                "order_by": "created_at",
                "order_type": "desc",
                "per_page": str(LIST_PAGE),
            },
        )
        found = self._tagged(listed.body, tag)
        if not found:
            searched = await self.http.request(
                "GET",
                f"{self.base}/api/v2/search/tickets",
                params={"query": f"\"tag:'{tag}'\""},
            )
            results = searched.body.get("results") if isinstance(searched.body, dict) else None
            found = self._tagged(results, tag)
        return self._ref(found[0]) if found else None

    async def _note(self, ref: TicketRef, text: str) -> None:
        await self.http.request(
            "POST",
            f"{self.base}/api/v2/tickets/{ref.id}/notes",
            json_body={"body": as_html(text), "private": not self.config.public_notes},
        )

    async def _status(self, ref: TicketRef, status: int) -> None:
        await self.http.request(
            "PUT", f"{self.base}/api/v2/tickets/{ref.id}", json_body={"status": status}
        )

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        await self._note(ref, text)

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        # Status first: a retry after a failed note repeats only the (idempotent) status.
        await self._status(ref, self.config.resolve_status)
        await self._note(ref, resolve_text(event))

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        await self._status(ref, OPEN)
        await self._note(ref, comment_text(event))

    async def me(self) -> int:
        if self._me is None:
            answer = await self.http.request("GET", f"{self.base}/api/v2/agents/me")
            if not isinstance(answer.body, dict) or answer.body.get("id") is None:
                raise PermanentUpstreamError(f"{self.name}: agents/me has no id")
            self._me = int(answer.body["id"])
        return self._me

    async def agent_name(self, agent_id: int) -> str:
        if agent_id not in self._agents:
            answer = await self.http.request(
                "GET", f"{self.base}/api/v2/agents/{agent_id}", accept=(404,)
            )
            contact = answer.body.get("contact") if isinstance(answer.body, dict) else None
            name = contact.get("name") if isinstance(contact, dict) else None
            self._agents[agent_id] = str(name or f"agent {agent_id}")
        return self._agents[agent_id]

    async def first_response(self, ref: TicketRef) -> tuple[float, str] | None:
        if ref.id in self._first:
            return self._first[ref.id]
        me = await self.me()
        for page in range(1, CONVERSATION_PAGES + 1):
            answer = await self.http.request(
                "GET",
                f"{self.base}/api/v2/tickets/{ref.id}/conversations",
                params={"page": str(page)},
            )
            conversations = answer.body if isinstance(answer.body, list) else []
            for item in conversations:
                if not isinstance(item, dict) or item.get("private") or item.get("incoming"):
                    continue
                author = item.get("user_id")
                text = str(item.get("body_text") or item.get("body") or "")
                if author is None or int(author) == me or self.config.is_auto_reply(text):
                    continue
                at = iso_epoch(item.get("created_at"))
                if at is None:
                    continue
                found = (at, await self.agent_name(int(author)))
                self._first[ref.id] = found
                return found
            if len(conversations) < CONVERSATION_PAGE:
                break
        return None

    async def poll(self, ref: TicketRef) -> DeskView:
        answer = await self.http.request("GET", f"{self.base}/api/v2/tickets/{ref.id}")
        ticket = answer.body if isinstance(answer.body, dict) else {}
        status = int(ticket.get("status") or OPEN)
        responder_id = ticket.get("responder_id")
        assignee = await self.agent_name(int(responder_id)) if responder_id else None
        first = await self.first_response(ref)
        if status in self.config.solved_statuses:
            phase = Phase.SOLVED
        elif status in self.config.waiting_statuses:
            phase = Phase.WAITING
        elif status == OPEN and assignee is None and first is None:
            phase = Phase.NEW  # Freshdesk has no "new": open, unassigned, unanswered
        else:
            phase = Phase.IN_PROGRESS
        return DeskView(
            status=STATUS_NAMES.get(status, f"status {status}"),
            phase=phase,
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=assignee,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


UPSTREAM = UpstreamType("freshdesk", FreshdeskUpstream, FreshdeskAdapter)
