"""A fake Zendesk Support account (Tickets API v2), from Zendesk's API reference.

- Auth: ``Authorization: Basic base64("{email}/token:{api_token}")`` or ``Bearer
  {oauth_token}``; anything else answers 401 ``{"error": "Couldn't authenticate you"}``.
- ``POST /api/v2/tickets.json``: ``{"ticket": {...}}``; ``comment.body`` required (422
  ``RecordInvalid`` with ``details``), ``priority`` urgent/high/normal/low, ``type``
  problem/incident/question/task, ``status`` new/open/pending/hold/solved/closed, types
  checked. ``Idempotency-Key``: the same key and body answer the stored answer with
  ``x-idempotency-lookup: hit`` (first use: ``miss``), the same key with another body
  400 ``IdempotentRequestError``; keys expire after 2 hours (of ``clock``). 201 with
  ``Location``.
- ``GET /api/v2/tickets.json?external_id=`` (list, from the database);
  ``GET``/``PUT /api/v2/tickets/{id}.json`` (a closed ticket refuses updates: 422);
  ``GET /api/v2/tickets/{id}/comments.json`` (oldest first, ``include=users``
  side-loads the authors); ``GET /api/v2/users/me.json``. Unknown ids: 404
  ``RecordNotFound``.
- 429: ``Retry-After`` seconds.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakedesks.saas import FakeDesk, iso, json_body

PRIORITIES = ("urgent", "high", "normal", "low")
TYPES = ("problem", "incident", "question", "task")
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
IDEMPOTENCY_TTL = 2 * 3600.0


@dataclass
class Comment:
    id: int
    author_id: int
    body: str
    public: bool
    created_at: float
    via: dict[str, Any] = field(default_factory=lambda: {"channel": "api", "source": {}})

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "Comment",
            "author_id": self.author_id,
            "body": self.body,
            "html_body": f"<p>{self.body}</p>",
            "plain_body": self.body,
            "public": self.public,
            "attachments": [],
            "audit_id": self.id + 1,
            "via": self.via,
            "created_at": iso(self.created_at),
            "metadata": {"system": {}, "custom": {}},
        }


@dataclass
class Ticket:
    id: int
    fields: dict[str, Any]
    comments: list[Comment] = field(default_factory=list)


def _invalid(field_name: str, message: str, error: str = "InvalidValue") -> web.Response:
    return web.json_response(
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field_name: [{"description": message, "error": error}]},
        },
        status=422,
    )


class FakeZendesk(FakeDesk):
    def __init__(
        self, email: str = "ccwatch@example.com", api_token: str = "", oauth_token: str = ""
    ) -> None:
        super().__init__()
        self.email = email
        self.api_token = api_token
        self.oauth_token = oauth_token
        self.users: dict[int, dict[str, Any]] = {}
        self.me = self.add_user("ccwatch", email, role="agent")
        self.tickets: dict[int, Ticket] = {}
        self.idempotency: dict[str, tuple[float, str, int]] = {}  # key -> (at, body, ticket)
        r = self.app.router
        r.add_get("/api/v2/users/me.json", self._me)
        r.add_post("/api/v2/tickets.json", self._create)
        r.add_get("/api/v2/tickets.json", self._list)
        r.add_get("/api/v2/tickets/{id}.json", self._show)
        r.add_put("/api/v2/tickets/{id}.json", self._update)
        r.add_get("/api/v2/tickets/{id}/comments.json", self._comments)

    # --- "the vendor" ---------------------------------------------------------------

    def add_user(self, name: str, email: str | None = None, role: str = "agent") -> int:
        user_id = self.next_id()
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "email": email or f"{name.lower().replace(' ', '.')}@vendor.example.com",
            "role": role,
        }
        return user_id

    def reply(
        self, ticket_id: int, author_id: int, body: str, *, public: bool = True,
        channel: str = "web", rel: str | None = None,
    ) -> None:  # fmt: skip
        ticket = self.tickets[ticket_id]
        via: dict[str, Any] = {"channel": channel, "source": {"rel": rel} if rel else {}}
        ticket.comments.append(Comment(self.next_id(), author_id, body, public, self.clock(), via))
        if ticket.fields["status"] == "new":
            ticket.fields["status"] = "open"

    def set_status(self, ticket_id: int, status: str) -> None:
        self.tickets[ticket_id].fields["status"] = status

    def assign(self, ticket_id: int, user_id: int) -> None:
        self.tickets[ticket_id].fields["assignee_id"] = user_id

    # --- the API --------------------------------------------------------------------

    def unauthorized(self, request: web.Request) -> web.StreamResponse | None:
        header = request.headers.get("Authorization", "")
        accepted = []
        if self.api_token:
            pair = f"{self.email}/token:{self.api_token}".encode()
            accepted.append("Basic " + base64.b64encode(pair).decode())
        if self.oauth_token:
            accepted.append(f"Bearer {self.oauth_token}")
        if header in accepted:
            return None
        return web.json_response({"error": "Couldn't authenticate you"}, status=401)

    def too_many(self, retry_after: float) -> web.StreamResponse:
        return web.json_response(
            {"error": "APIRateLimitExceeded", "description": "Rate limit exceeded"},
            status=429,
            headers={"Retry-After": str(int(retry_after))},
        )

    def ticket_json(self, ticket: Ticket) -> dict[str, Any]:
        f = ticket.fields
        first = ticket.comments[0].body if ticket.comments else ""
        return {
            "url": f"{self.url}/api/v2/tickets/{ticket.id}.json",
            "id": ticket.id,
            "external_id": f.get("external_id"),
            "type": f.get("type"),
            "subject": f.get("subject"),
            "raw_subject": f.get("subject"),
            "description": first,
            "priority": f.get("priority"),
            "status": f["status"],
            "requester_id": f["requester_id"],
            "submitter_id": f["requester_id"],
            "assignee_id": f.get("assignee_id"),
            "group_id": f.get("group_id"),
            "tags": f.get("tags", []),
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": iso(f["created_at"]),
            "updated_at": iso(f["updated_at"]),
        }

    def _not_found(self) -> web.Response:
        return web.json_response(
            {"error": "RecordNotFound", "description": "Not found"}, status=404
        )

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response({"user": self.users[self.me]})

    def _validate(self, ticket: Any, creating: bool) -> web.Response | None:
        if not isinstance(ticket, dict):
            return web.json_response(
                {"error": "InvalidEndpoint", "description": "a ticket object is required"},
                status=400,
            )
        checks: list[tuple[str, type | tuple[type, ...], tuple[str, ...]]] = [
            ("subject", str, ()),
            ("priority", str, PRIORITIES),
            ("type", str, TYPES),
            ("status", str, STATUSES),
            ("external_id", str, ()),
            ("group_id", int, ()),
        ]
        for name, kind, allowed in checks:
            if name in ticket and ticket[name] is not None:
                value = ticket[name]
                if not isinstance(value, kind) or isinstance(value, bool):
                    return _invalid(name, f"{name.title()}: is invalid")
                if allowed and value not in allowed:
                    return _invalid(name, f"{name.title()}: {value} is not valid")
        tags = ticket.get("tags")
        if tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)
        ):
            return _invalid("tags", "Tags: is invalid")
        comment = ticket.get("comment")
        if comment is not None:
            if not isinstance(comment, dict) or not isinstance(comment.get("body"), str):
                return _invalid("comment", "Comment: body is required")
            if "public" in comment and not isinstance(comment["public"], bool):
                return _invalid("comment", "Comment: public must be true or false")
        if creating and not (isinstance(comment, dict) and str(comment.get("body")).strip()):
            return _invalid("description", "Description: cannot be blank", "BlankValue")
        return None

    async def _create(self, request: web.Request) -> web.StreamResponse:
        payload, problem = await json_body(request)
        if problem:
            return web.json_response({"error": "InvalidJSON", "description": problem}, status=400)
        key = request.headers.get("Idempotency-Key")
        canonical = json.dumps(payload, sort_keys=True)
        now = self.clock()
        if key is not None:
            stored = self.idempotency.get(key)
            if stored is not None and now - stored[0] < IDEMPOTENCY_TTL:
                if stored[1] != canonical:
                    return web.json_response(
                        {
                            "error": "IdempotentRequestError",
                            "description": "Request parameters don't match the given "
                            "idempotency key",
                        },
                        status=400,
                    )
                ticket = self.tickets[stored[2]]
                return web.json_response(
                    {"ticket": self.ticket_json(ticket)},
                    status=201,
                    headers={"x-idempotency-lookup": "hit"},
                )
        data = payload.get("ticket") if isinstance(payload, dict) else None
        refused = self._validate(data, creating=True)
        if refused is not None:
            return refused
        assert isinstance(data, dict)
        ticket = Ticket(
            self.next_id(),
            {
                **{k: v for k, v in data.items() if k != "comment"},
                "status": data.get("status") or "new",
                "requester_id": self.me,
                "created_at": now,
                "updated_at": now,
            },
        )
        comment = data["comment"]
        ticket.comments.append(
            Comment(self.next_id(), self.me, comment["body"], comment.get("public", True), now)
        )
        self.tickets[ticket.id] = ticket
        headers = {"Location": f"{self.url}/api/v2/tickets/{ticket.id}.json"}
        if key is not None:
            self.idempotency[key] = (now, canonical, ticket.id)
            headers["x-idempotency-lookup"] = "miss"
        return web.json_response(
            {"ticket": self.ticket_json(ticket)}, status=201, headers=headers
        )

    async def _list(self, request: web.Request) -> web.Response:
        external = request.query.get("external_id")
        tickets = [
            self.ticket_json(t)
            for t in self.tickets.values()
            if external is None or t.fields.get("external_id") == external
        ]
        return web.json_response(
            {"tickets": tickets, "next_page": None, "previous_page": None, "count": len(tickets)}
        )

    def _ticket(self, request: web.Request) -> Ticket | None:
        try:
            return self.tickets.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def _show(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return self._not_found()
        body: dict[str, Any] = {"ticket": self.ticket_json(ticket)}
        if "users" in request.query.get("include", "").split(","):
            ids = {ticket.fields["requester_id"], ticket.fields.get("assignee_id")}
            body["users"] = [self.users[i] for i in ids if i in self.users]
        return web.json_response(body)

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return self._not_found()
        payload, problem = await json_body(request)
        if problem:
            return web.json_response({"error": "InvalidJSON", "description": problem}, status=400)
        data = payload.get("ticket") if isinstance(payload, dict) else None
        refused = self._validate(data, creating=False)
        if refused is not None:
            return refused
        assert isinstance(data, dict)
        if ticket.fields["status"] == "closed":
            return _invalid(
                "status", "Status: closed prevents ticket update", "ClosedPreventsUpdate"
            )
        now = self.clock()
        comment = data.get("comment")
        if isinstance(comment, dict):
            ticket.comments.append(
                Comment(self.next_id(), self.me, comment["body"], comment.get("public", True), now)
            )
        for key, value in data.items():
            if key != "comment":
                ticket.fields[key] = value
        ticket.fields["updated_at"] = now
        return web.json_response(
            {"ticket": self.ticket_json(ticket), "audit": {"id": self.next_id(), "events": []}}
        )

    async def _comments(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return self._not_found()
        comments = [c.json() for c in ticket.comments]
        body: dict[str, Any] = {
            "comments": comments,
            "next_page": None,
            "previous_page": None,
            "count": len(comments),
        }
        if "users" in request.query.get("include", "").split(","):
            ids = {c.author_id for c in ticket.comments}
            body["users"] = [self.users[i] for i in ids if i in self.users]
        return web.json_response(body)
