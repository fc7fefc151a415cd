"""``clickup``: a ClickUp task per incident (API v2), seed 000's vendor board.

- **create**: ``POST /api/v2/list/{list_id}/task`` ``{name, markdown_description,
  priority (1 urgent … 4 low), tags, status, custom_fields: [{id, value}]}``. ClickUp has
  no idempotent create: every task carries a tag made from the incident's dedup key
  (``ccwatch-`` + 20 hex digits of its SHA-256) and, when ``reference_field_id`` names a
  Text custom field of the list, the dedup key itself.
- **find** (before every create): ``GET /api/v2/list/{list_id}/task?include_closed=true``
  filtered by that custom field (``custom_fields=[{"field_id", "operator": "=",
  "value"}]``; ``=`` is a fuzzy "contains", so the value is checked again here) or,
  without one, by the tag (``tags[]=``).
- **comment**: ``POST /api/v2/task/{task_id}/comment`` ``{comment_text, notify_all}``;
  **resolve**: ``PUT /api/v2/task/{task_id}`` ``{status: resolve_status}`` ("complete" by
  default: statuses are per list) then a comment with the summary; **reopen**:
  ``reopen_status`` and a comment.
- **poll**: ``GET /api/v2/task/{task_id}`` (``status.status`` and ``status.type``:
  ``open`` → NEW, ``custom`` → IN_PROGRESS, or WAITING when its name is in
  ``waiting_statuses``, ``closed``/``done`` → SOLVED; ``assignees``) and, until a first
  response was seen, ``GET /api/v2/task/{task_id}/comment`` (newest first, 25 a page,
  paged with ``start``/``start_id``): the oldest comment by a user other than ccwatch's
  own (``GET /api/v2/user``) that does not match ``auto_reply_patterns``. ClickUp
  comments have no public/private distinction.

Auth: ``Authorization: <personal token>`` (``pk_…``, no ``Bearer``); an OAuth access
token is sent as ``Bearer``. Rate limit: 100 requests a minute per token on the Free,
Unlimited and Business plans (``X-RateLimit-Limit``/``-Remaining``/``-Reset``, a Unix
time): ``requests_per_minute`` defaults to 100, and a 429 pauses the desk until
``X-RateLimit-Reset`` (or ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, read_secret
from ccwatch.errors import PermanentUpstreamError, TemporaryUpstreamError
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent, UpstreamType
from ccwatch.tickets.desk import (
    DESK_EVENTS,
    Answer,
    DeskAdapter,
    DeskUpstream,
    DeskView,
    Phase,
    TicketRef,
    comment_text,
    description,
    resolve_text,
    title,
)

PRIORITIES = {"critical": "1", "major": "2", "minor": "3"}
COMMENT_PAGE = 25
COMMENT_PAGES = 20
FIND_PAGES = 5


def dedup_tag(dedup_key: str) -> str:
    """The task's tag for an incident (ClickUp stores tag names in lower case)."""
    return "ccwatch-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:20]


class ClickUpUpstream(DeskUpstream):
    type: Literal["clickup"]
    url: AnyHttpUrl = AnyHttpUrl("https://api.clickup.com")
    list_id: str = Field(description="the List that receives the tasks")
    token_env: SecretEnv = Field(None, description="personal token (pk_…) or OAuth token")
    token_file: SecretFile = None
    reference_field_id: str | None = Field(
        None, description="id of a Text custom field of the list that receives the dedup key"
    )
    tags: list[str] = Field(default_factory=lambda: ["ccwatch"])
    create_status: str | None = Field(None, description="default: the list's first status")
    resolve_status: str = "complete"
    reopen_status: str = "to do"
    waiting_statuses: list[str] = Field(
        default_factory=list, description="status names that mean waiting on ccwatch"
    )
    notify_all: bool = False
    requests_per_minute: int | None = Field(
        100, ge=1, description="100 on Free/Unlimited/Business, 1,000 Business Plus"
    )

    @model_validator(mode="after")
    def _needs_token(self) -> ClickUpUpstream:
        if self.enabled and not (self.token_env or self.token_file):
            raise ValueError("a clickup upstream needs token_env or token_file")
        for severity, value in self.priorities.items():
            if value not in ("1", "2", "3", "4"):
                raise ValueError(f"priorities.{severity}: 1 urgent, 2 high, 3 normal or 4 low")
        return self


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ms(value: Any) -> float | None:
    try:
        return int(str(value)) / 1000.0
    except ValueError:
        return None


def _user(value: Any) -> str:
    user = _dict(value)
    return str(user.get("username") or user.get("email") or f"user {user.get('id')}")


class ClickUpAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: ClickUpUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: ClickUpUpstream = config
        self.api = str(config.url).rstrip("/") + "/api/v2"
        token = read_secret(config.token_env, config.token_file) or ""
        authorization = token if token.startswith("pk_") else f"Bearer {token}"
        self.http = self.desk_http({"Authorization": authorization})
        self._me: int | None = None
        self._first: dict[str, tuple[float, str]] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
    ) -> Answer:
        """A request; ClickUp's 429 names its reset time rather than ``Retry-After``."""
        answer = await self.http.request(
            method, self.api + path, json_body=json_body, params=params, accept=(429,)
        )
        if answer.status != 429:
            return answer
        headers = {name.lower(): value for name, value in answer.headers.items()}
        now = self.context.clock()
        retry_after: float | None = None
        if headers.get("retry-after", "").isdigit():
            retry_after = float(headers["retry-after"])
        elif headers.get("x-ratelimit-reset", "").isdigit():
            retry_after = max(1.0, float(headers["x-ratelimit-reset"]) - now)
        self.limiter.pause(retry_after if retry_after is not None else 60.0)
        raise TemporaryUpstreamError(
            f"{self.name}: HTTP 429: rate limit reached", retry_after=retry_after
        )

    def _ref(self, task: dict[str, Any]) -> TicketRef:
        task_id = str(task["id"])
        return TicketRef(task_id, str(task.get("url") or f"https://app.clickup.com/t/{task_id}"))

    def task_body(self, event: TicketEvent) -> dict[str, Any]:
        config = self.config
        body: dict[str, Any] = {
            "name": title(event),
            "markdown_description": description(event),
            "priority": int(self.priority(event, PRIORITIES)),
            "tags": [*config.tags, dedup_tag(event.dedup_key)],
            "notify_all": config.notify_all,
        }
        if config.create_status:
            body["status"] = config.create_status
        if config.reference_field_id:
            body["custom_fields"] = [{"id": config.reference_field_id, "value": event.dedup_key}]
        return body

    async def create(self, event: TicketEvent) -> TicketRef:
        answer = await self.request(
            "POST", f"/list/{self.config.list_id}/task", json_body=self.task_body(event)
        )
        task = _dict(answer.body)
        if "id" not in task:
            raise PermanentUpstreamError(f"{self.name}: the create answer has no task id")
        return self._ref(task)

    def _matches(self, task: dict[str, Any], event: TicketEvent) -> bool:
        field_id = self.config.reference_field_id
        if field_id:
            return any(
                _dict(f).get("id") == field_id and _dict(f).get("value") == event.dedup_key
                for f in task.get("custom_fields") or []
            )
        tag = dedup_tag(event.dedup_key)
        return any(_dict(t).get("name") == tag for t in task.get("tags") or [])

    async def find(self, event: TicketEvent) -> TicketRef | None:
        params: list[tuple[str, str]] = [("include_closed", "true"), ("subtasks", "true")]
        if self.config.reference_field_id:
            criteria = [
                {
                    "field_id": self.config.reference_field_id,
                    "operator": "=",
                    "value": event.dedup_key,
                }
            ]
            params.append(("custom_fields", json.dumps(criteria)))
        else:
            params.append(("tags[]", dedup_tag(event.dedup_key)))
        found: list[dict[str, Any]] = []
        for page in range(FIND_PAGES):
            answer = await self.request(
                "GET",
                f"/list/{self.config.list_id}/task",
                params=[*params, ("page", str(page))],
            )
            body = _dict(answer.body)
            found += [
                t
                for t in body.get("tasks") or []
                if isinstance(t, dict) and "id" in t and self._matches(t, event)
            ]
            if body.get("last_page", True):
                break
        found.sort(key=lambda t: (_ms(t.get("date_created")) or 0.0, str(t["id"])))
        return self._ref(found[0]) if found else None

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        await self.request(
            "POST",
            f"/task/{ref.id}/comment",
            json_body={"comment_text": text, "notify_all": self.config.notify_all},
        )

    async def _status(self, ref: TicketRef, status: str) -> None:
        await self.request("PUT", f"/task/{ref.id}", json_body={"status": status})

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        # Status first: a retry after a failed comment repeats only the (idempotent) status.
        await self._status(ref, self.config.resolve_status)
        await self.comment(ref, resolve_text(event), event)

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        await self._status(ref, self.config.reopen_status)
        await self.comment(ref, comment_text(event), event)

    async def me(self) -> int:
        if self._me is None:
            answer = await self.request("GET", "/user")
            user = _dict(_dict(answer.body).get("user"))
            if user.get("id") is None:
                raise PermanentUpstreamError(f"{self.name}: /user has no id")
            self._me = int(user["id"])
        return self._me

    async def first_response(self, ref: TicketRef) -> tuple[float, str] | None:
        """The oldest comment by someone else that is not an auto-reply (comments come
        newest first: every page is read)."""
        if ref.id in self._first:
            return self._first[ref.id]
        me = await self.me()
        comments: list[dict[str, Any]] = []
        params: dict[str, str] = {}
        for _ in range(COMMENT_PAGES):
            answer = await self.request("GET", f"/task/{ref.id}/comment", params=params)
            page = [c for c in _dict(answer.body).get("comments") or [] if isinstance(c, dict)]
            comments += page
            if len(page) < COMMENT_PAGE:
                break
            params = {"start": str(page[-1].get("date")), "start_id": str(page[-1].get("id"))}
        found: tuple[float, str] | None = None
        for comment in comments:
            user = _dict(comment.get("user"))
            at = _ms(comment.get("date"))
            if at is None or user.get("id") is None or int(user["id"]) == me:
                continue
            if self.config.is_auto_reply(str(comment.get("comment_text") or "")):
                continue
            if found is None or at < found[0]:
                found = (at, _user(user))
        if found is not None:
            self._first[ref.id] = found
        return found

    async def poll(self, ref: TicketRef) -> DeskView:
        answer = await self.request("GET", f"/task/{ref.id}")
        task = _dict(answer.body)
        status = _dict(task.get("status"))
        name = str(status.get("status") or "")
        kind = str(status.get("type") or "open")
        waiting = {s.lower() for s in self.config.waiting_statuses}
        if kind in ("closed", "done"):
            phase = Phase.SOLVED
        elif name.lower() in waiting:
            phase = Phase.WAITING
        elif kind == "open":
            phase = Phase.NEW
        else:
            phase = Phase.IN_PROGRESS
        assignees = [_user(a) for a in task.get("assignees") or [] if isinstance(a, dict)]
        first = await self.first_response(ref)
        return DeskView(
            status=name,
            phase=phase,
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=", ".join(assignees) or None,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


UPSTREAM = UpstreamType("clickup", ClickUpUpstream, ClickUpAdapter)
