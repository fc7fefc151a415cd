"""``zendesk``: a Zendesk Support ticket per incident (Tickets API, ``/api/v2``).

- **create**: ``POST /api/v2/tickets.json`` ``{"ticket": {subject, comment: {body,
  public: true}, priority, type, external_id, tags, group_id}}`` with
  ``Idempotency-Key: <dedup_key>:<seq>``: Zendesk answers a repeat of the same key and
  body with the first answer (``x-idempotency-lookup: hit``) instead of a second ticket;
  keys live 2 hours. ``external_id`` is the incident's dedup key.
- **find** (a crash between the create and the link, or a retry after the key
  expired): ``GET /api/v2/tickets.json?external_id=<dedup_key>`` (read from the
  database, not the search index, so a ticket created a second ago is found); the
  oldest match wins.
- **comment**: ``PUT /api/v2/tickets/{id}.json`` ``{"ticket": {"comment": {body, public:
  false}}}`` (internal notes unless ``public_comments``); **resolve**: the same with
  ``status: solved`` and the resolve summary; **reopen**: ``status: open``. A ticket the
  vendor already closed takes no update (422): a resolve then has nothing left to do.
- **poll**: ``GET /api/v2/tickets/{id}.json?include=users`` (status, assignee) and
  ``GET /api/v2/tickets/{id}/comments.json?include=users``: the first public comment
  whose author is not ccwatch's own user (``GET /api/v2/users/me.json``), not made by a
  business rule (``via.channel == "rule"``: triggers and automations) and not matching
  ``auto_reply_patterns``. ``new`` → NEW, ``open`` (and ``hold``) → IN_PROGRESS,
  ``pending`` → WAITING (``waiting_statuses``), ``solved``/``closed`` → SOLVED.

Auth: ``{email}/token:{api_token}`` basic auth (``email`` + ``api_token_env``/``_file``)
or an OAuth bearer token (``oauth_token_env``/``_file``). Rate limits are per account
and plan (200 to 700 requests a minute); a 429's ``Retry-After`` pauses the desk.
"""

from __future__ import annotations

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

PRIORITIES = {"critical": "urgent", "major": "high", "minor": "normal"}
PRIORITY_VALUES = ("urgent", "high", "normal", "low")
SOLVED = ("solved", "closed")
SUBJECT_MAX = 150
COMMENT_PAGES = 10


class ZendeskUpstream(DeskUpstream):
    type: Literal["zendesk"]
    url: AnyHttpUrl = Field(description="the account, e.g. https://vendor.zendesk.com")
    email: str | None = Field(None, description="the agent the API token belongs to")
    api_token_env: SecretEnv = None
    api_token_file: SecretFile = None
    oauth_token_env: SecretEnv = Field(None, description="an OAuth access token (bearer)")
    oauth_token_file: SecretFile = None
    ticket_type: Literal["problem", "incident", "question", "task"] = "incident"
    group_id: int | None = None
    tags: list[str] = Field(default_factory=lambda: ["ccwatch"])
    public_comments: bool = Field(
        False, description="later events as public replies instead of internal notes"
    )
    waiting_statuses: list[Literal["new", "open", "pending", "hold"]] = Field(
        default_factory=lambda: list[Literal["new", "open", "pending", "hold"]](["pending"]),
        description="statuses that mean waiting on ccwatch (the customer)",
    )
    requests_per_minute: int | None = Field(
        200, ge=1, description="the smallest plan's limit; raise it to your plan's"
    )

    @model_validator(mode="after")
    def _needs_credentials(self) -> ZendeskUpstream:
        api = bool(self.api_token_env or self.api_token_file)
        oauth = bool(self.oauth_token_env or self.oauth_token_file)
        if self.enabled and api == oauth:
            raise ValueError(
                "a zendesk upstream needs either email + api_token_env/_file or "
                "oauth_token_env/_file"
            )
        if api and not self.email:
            raise ValueError("a zendesk API token needs `email` (the agent it belongs to)")
        for severity, value in self.priorities.items():
            if value not in PRIORITY_VALUES:
                raise ValueError(f"priorities.{severity}: one of {', '.join(PRIORITY_VALUES)}")
        return self


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ZendeskAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: ZendeskUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: ZendeskUpstream = config
        self.base = str(config.url).rstrip("/")
        headers: dict[str, str] = {}
        token = read_secret(config.api_token_env, config.api_token_file)
        if token:
            headers["Authorization"] = basic_auth(f"{config.email}/token", token)
        else:
            oauth = read_secret(config.oauth_token_env, config.oauth_token_file) or ""
            headers["Authorization"] = f"Bearer {oauth}"
        self.http = self.desk_http(headers)
        self._me: int | None = None
        self._first: dict[str, tuple[float, str]] = {}  # ticket -> first response, once seen

    def _ref(self, ticket_id: Any) -> TicketRef:
        return TicketRef(str(ticket_id), f"{self.base}/agent/tickets/{ticket_id}")

    def ticket_body(self, event: TicketEvent) -> dict[str, Any]:
        ticket: dict[str, Any] = {
            "subject": title(event)[:SUBJECT_MAX],
            "comment": {"body": description(event), "public": True},
            "priority": self.priority(event, PRIORITIES),
            "type": self.config.ticket_type,
            "external_id": event.dedup_key,
            "tags": list(self.config.tags),
        }
        if self.config.group_id is not None:
            ticket["group_id"] = self.config.group_id
        return {"ticket": ticket}

    async def create(self, event: TicketEvent) -> TicketRef:
        answer = await self.http.request(
            "POST",
            f"{self.base}/api/v2/tickets.json",
            json_body=self.ticket_body(event),
            headers={"Idempotency-Key": event.idempotency_key},
        )
        ticket = (answer.body or {}).get("ticket") if isinstance(answer.body, dict) else None
        if not isinstance(ticket, dict) or "id" not in ticket:
            raise PermanentUpstreamError(f"{self.name}: the create answer has no ticket id")
        return self._ref(ticket["id"])

    async def find(self, event: TicketEvent) -> TicketRef | None:
        answer = await self.http.request(
            "GET",
            f"{self.base}/api/v2/tickets.json",
            params={"external_id": event.dedup_key},
        )
        tickets = answer.body.get("tickets") if isinstance(answer.body, dict) else None
        ids = sorted(
            int(t["id"])
            for t in tickets or []
            if isinstance(t, dict) and t.get("external_id") == event.dedup_key and "id" in t
        )
        return self._ref(ids[0]) if ids else None

    async def _update(self, ref: TicketRef, ticket: dict[str, Any]) -> int:
        answer = await self.http.request(
            "PUT",
            f"{self.base}/api/v2/tickets/{ref.id}.json",
            json_body={"ticket": ticket},
            accept=(422,),
        )
        return answer.status

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        comment = {"body": text, "public": self.config.public_comments}
        if await self._update(ref, {"comment": comment}) == 422:
            if await self._status(ref) == "closed":
                return  # a closed ticket takes no comment; nothing more to say there
            raise PermanentUpstreamError(f"{self.name}: ticket {ref.id} refused the comment")

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        comment = {"body": resolve_text(event), "public": self.config.public_comments}
        if await self._update(ref, {"status": "solved", "comment": comment}) == 422:
            if await self._status(ref) in SOLVED:
                return  # the vendor closed it already
            raise PermanentUpstreamError(f"{self.name}: ticket {ref.id} refused to be solved")

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        comment = {"body": comment_text(event), "public": self.config.public_comments}
        if await self._update(ref, {"status": "open", "comment": comment}) == 422:
            raise PermanentUpstreamError(
                f"{self.name}: ticket {ref.id} cannot be reopened (closed tickets take "
                "no update in Zendesk)"
            )

    async def _status(self, ref: TicketRef) -> str:
        answer = await self.http.request("GET", f"{self.base}/api/v2/tickets/{ref.id}.json")
        ticket = answer.body.get("ticket", {}) if isinstance(answer.body, dict) else {}
        return str(ticket.get("status") or "")

    async def me(self) -> int:
        if self._me is None:
            answer = await self.http.request("GET", f"{self.base}/api/v2/users/me.json")
            user = answer.body.get("user", {}) if isinstance(answer.body, dict) else {}
            if not isinstance(user, dict) or user.get("id") is None:
                raise PermanentUpstreamError(f"{self.name}: users/me has no id")
            self._me = int(user["id"])
        return self._me

    @staticmethod
    def _names(body: Any) -> dict[int, str]:
        users = body.get("users") if isinstance(body, dict) else None
        return {
            int(u["id"]): str(u.get("name") or u.get("email") or u["id"])
            for u in users or []
            if isinstance(u, dict) and u.get("id") is not None
        }

    def _automatic(self, comment: dict[str, Any]) -> bool:
        via = _dict(comment.get("via"))
        if via.get("channel") == "rule" or _dict(via.get("source")).get("rel") in (
            "trigger",
            "automation",
        ):
            return True
        return self.config.is_auto_reply(str(comment.get("body") or ""))

    async def first_response(self, ref: TicketRef) -> tuple[float, str] | None:
        if ref.id in self._first:
            return self._first[ref.id]
        me = await self.me()
        url: str | None = f"{self.base}/api/v2/tickets/{ref.id}/comments.json"
        params: dict[str, str] | None = {"include": "users"}
        for _ in range(COMMENT_PAGES):
            if url is None:
                break
            answer = await self.http.request("GET", url, params=params)
            body = answer.body if isinstance(answer.body, dict) else {}
            names = self._names(body)
            for comment in body.get("comments") or []:
                if not isinstance(comment, dict) or not comment.get("public"):
                    continue
                author = comment.get("author_id")
                if author is None or int(author) == me or self._automatic(comment):
                    continue
                at = iso_epoch(comment.get("created_at"))
                if at is None:
                    continue
                found = (at, names.get(int(author), f"user {author}"))
                self._first[ref.id] = found
                return found
            next_page = body.get("next_page")
            url, params = (str(next_page), None) if next_page else (None, None)
        return None

    async def poll(self, ref: TicketRef) -> DeskView:
        answer = await self.http.request(
            "GET", f"{self.base}/api/v2/tickets/{ref.id}.json", params={"include": "users"}
        )
        body = _dict(answer.body)
        ticket = _dict(body.get("ticket"))
        status = str(ticket.get("status") or "new")
        if status in SOLVED:
            phase = Phase.SOLVED
        elif status in self.config.waiting_statuses:
            phase = Phase.WAITING
        elif status == "new":
            phase = Phase.NEW
        else:
            phase = Phase.IN_PROGRESS
        assignee_id = ticket.get("assignee_id")
        assignee = None
        if assignee_id is not None:
            assignee = self._names(body).get(int(assignee_id), f"user {assignee_id}")
        first = await self.first_response(ref)
        return DeskView(
            status=status,
            phase=phase,
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=assignee,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


UPSTREAM = UpstreamType("zendesk", ZendeskUpstream, ZendeskAdapter)
