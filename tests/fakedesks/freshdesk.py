"""A fake Freshdesk helpdesk (API v2), from Freshdesk's API reference.

- Auth: ``Authorization: Basic base64("{api_key}:X")``; else 401 ``{"code":
  "invalid_credentials", "message": …}``.
- Errors: 400 ``{"description": "Validation failed", "errors": [{field, message,
  code}]}`` with codes ``missing_field``, ``invalid_value``, ``datatype_mismatch``,
  ``invalid_field`` (unknown fields are refused), ``invalid_size``; 404 for unknown ids.
- ``POST /api/v2/tickets``: ``subject``, ``description`` and one requester identifier
  required; ``priority`` 1 to 4, ``status`` 2 to 5, ``source`` 1/2/3/5/6/7/9/10, ``tags``
  strings of at most 32 characters, ``custom_fields`` only the ones defined.
- ``GET /api/v2/tickets`` (array, ``email``/``requester_id`` filters, newest first,
  ``per_page`` ≤ 100); ``GET /api/v2/search/tickets?query="…"`` (double quotes required,
  ``tag:'x'`` terms joined by AND/OR; only tickets indexed: ``index_delay`` seconds
  after their creation, ``index()`` indexes everything now); ``GET``/``PUT
  /api/v2/tickets/{id}``; ``POST /api/v2/tickets/{id}/notes`` (``body`` required,
  ``private`` boolean); ``GET /api/v2/tickets/{id}/conversations`` (30 a page);
  ``GET /api/v2/agents/me``, ``GET /api/v2/agents/{id}``.
- Every answer carries ``X-Ratelimit-Total``/``-Remaining``; 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakedesks.saas import FakeDesk, iso, json_body

REQUESTER_KEYS = ("requester_id", "email", "phone", "twitter_id", "facebook_id", "unique_external_id")
CREATE_FIELDS = {
    *REQUESTER_KEYS, "name", "subject", "type", "status", "priority", "description",
    "responder_id", "attachments", "cc_emails", "custom_fields", "due_by", "email_config_id",
    "fr_due_by", "group_id", "parent_id", "product_id", "source", "tags", "company_id",
    "internal_agent_id", "internal_group_id", "lookup_parameter",
}  # fmt: skip
UPDATE_FIELDS = CREATE_FIELDS - {"parent_id"}
NOTE_FIELDS = {"body", "attachments", "incoming", "notify_emails", "private", "user_id"}
SOURCES = (1, 2, 3, 5, 6, 7, 9, 10)
STATUSES = (2, 3, 4, 5)
LIST_PARAMS = {"filter", "requester_id", "email", "unique_external_id", "company_id",
               "updated_since", "order_by", "order_type", "include", "per_page", "page"}  # fmt: skip


def invalid(*errors: tuple[str, str, str]) -> web.Response:
    return web.json_response(
        {
            "description": "Validation failed",
            "errors": [{"field": f, "message": m, "code": c} for f, m, c in errors],
        },
        status=400,
    )


@dataclass
class Conversation:
    id: int
    user_id: int
    body: str
    private: bool
    incoming: bool
    source: int  # 0 reply, 2 note
    created_at: float

    def json(self, ticket_id: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "body": self.body,
            "body_text": re.sub(r"<[^>]+>", "", self.body),
            "incoming": self.incoming,
            "private": self.private,
            "user_id": self.user_id,
            "support_email": None,
            "source": self.source,
            "ticket_id": ticket_id,
            "to_emails": [],
            "attachments": [],
            "created_at": iso(self.created_at),
            "updated_at": iso(self.created_at),
        }


@dataclass
class Ticket:
    id: int
    fields: dict[str, Any]
    created_at: float
    conversations: list[Conversation] = field(default_factory=list)


class FakeFreshdesk(FakeDesk):
    def __init__(
        self, api_key: str, requester_email: str = "ccwatch@site.example.com",
        custom_fields: tuple[str, ...] = (), index_delay: float = 300.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.api_key = api_key
        self.custom_fields = set(custom_fields)
        self.index_delay = index_delay
        self.indexed: set[int] = set()
        self.agents: dict[int, dict[str, Any]] = {}
        self.me = self.add_agent("ccwatch API", "ccwatch-api@vendor.example.com")
        self.contacts = {requester_email: self.next_id()}
        self.tickets: dict[int, Ticket] = {}
        r = self.app.router
        r.add_get("/api/v2/agents/me", self._me)
        r.add_get("/api/v2/agents/{id}", self._agent)
        r.add_post("/api/v2/tickets", self._create)
        r.add_get("/api/v2/tickets", self._list)
        r.add_get("/api/v2/search/tickets", self._search)
        r.add_get("/api/v2/tickets/{id}", self._show)
        r.add_put("/api/v2/tickets/{id}", self._update)
        r.add_post("/api/v2/tickets/{id}/notes", self._note)
        r.add_get("/api/v2/tickets/{id}/conversations", self._conversations)

    # --- "the vendor" ---------------------------------------------------------------

    def add_agent(self, name: str, email: str | None = None) -> int:
        agent_id = self.next_id()
        self.agents[agent_id] = {
            "id": agent_id,
            "available": True,
            "occasional": False,
            "ticket_scope": 1,
            "contact": {"name": name, "email": email or f"{name.split()[0].lower()}@vendor.example.com"},
        }
        return agent_id

    def reply(
        self, ticket_id: int, agent_id: int, text: str, *, private: bool = False,
        incoming: bool = False, note: bool = False,
    ) -> None:  # fmt: skip
        ticket = self.tickets[ticket_id]
        ticket.conversations.append(
            Conversation(self.next_id(), agent_id, f"<div>{text}</div>", private, incoming,
                         2 if note else 0, self.clock())
        )  # fmt: skip

    def set_status(self, ticket_id: int, status: int) -> None:
        self.tickets[ticket_id].fields["status"] = status

    def assign(self, ticket_id: int, agent_id: int) -> None:
        self.tickets[ticket_id].fields["responder_id"] = agent_id

    def index(self) -> None:
        self.indexed.update(self.tickets)

    # --- the API --------------------------------------------------------------------

    def unauthorized(self, request: web.Request) -> web.StreamResponse | None:
        expected = "Basic " + base64.b64encode(f"{self.api_key}:X".encode()).decode()
        if request.headers.get("Authorization") == expected:
            return None
        return web.json_response(
            {"code": "invalid_credentials", "message": "You have to be logged in to perform this action."},
            status=401,
        )

    def too_many(self, retry_after: float) -> web.StreamResponse:
        return web.json_response(
            {"message": "You have exceeded the limit of requests per minute"},
            status=429,
            headers={"Retry-After": str(int(retry_after)), "X-Ratelimit-Remaining": "0"},
        )

    def extra_headers(self) -> dict[str, str]:
        return {"X-Ratelimit-Total": "200", "X-Ratelimit-Remaining": "199",
                "X-Ratelimit-Used-CurrentRequest": "1"}  # fmt: skip

    def ticket_json(self, ticket: Ticket) -> dict[str, Any]:
        f = ticket.fields
        return {
            "id": ticket.id,
            "subject": f["subject"],
            "description": f["description"],
            "description_text": re.sub(r"<[^>]+>", "", f["description"]),
            "requester_id": f["requester_id"],
            "responder_id": f.get("responder_id"),
            "group_id": f.get("group_id"),
            "priority": f["priority"],
            "status": f["status"],
            "source": f["source"],
            "type": f.get("type"),
            "tags": f.get("tags", []),
            "custom_fields": {name: f.get("custom_fields", {}).get(name) for name in self.custom_fields},
            "fr_escalated": False,
            "spam": False,
            "is_escalated": False,
            "created_at": iso(ticket.created_at),
            "updated_at": iso(f.get("updated_at", ticket.created_at)),
        }

    def _ticket(self, request: web.Request) -> Ticket | None:
        try:
            return self.tickets.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(self.agents[self.me])

    async def _agent(self, request: web.Request) -> web.Response:
        agent = self.agents.get(int(request.match_info["id"]))
        return web.json_response(agent) if agent else web.Response(status=404)

    def _validate(self, data: Any, allowed: set[str], creating: bool) -> web.Response | None:
        if not isinstance(data, dict):
            return invalid(("", "Request body must be a JSON object", "datatype_mismatch"))
        unknown = sorted(set(data) - allowed)
        if unknown:
            return invalid(*[(k, "Unexpected/invalid field in request", "invalid_field") for k in unknown])
        errors: list[tuple[str, str, str]] = []
        if creating:
            for name in ("subject", "description"):
                if not isinstance(data.get(name), str) or not data[name].strip():
                    errors.append((name, "It should be a/an String", "missing_field"))
            if not any(data.get(k) for k in REQUESTER_KEYS):
                errors.append(("requester_id", "Please fill at least 1 of requester_id, phone, "
                               "email, twitter_id, facebook_id, unique_external_id fields",
                               "missing_field"))  # fmt: skip
        for name, allowed_values in (("priority", (1, 2, 3, 4)), ("status", STATUSES),
                                     ("source", SOURCES)):  # fmt: skip
            if name in data and (type(data[name]) is not int or data[name] not in allowed_values):
                values = ",".join(str(v) for v in allowed_values)
                errors.append((name, f"It should be one of these values: '{values}'", "invalid_value"))
        for name in ("group_id", "requester_id", "responder_id"):
            if name in data and type(data[name]) is not int:
                errors.append((name, "It should be a/an Positive Integer", "datatype_mismatch"))
        email = data.get("email")
        if email is not None and (not isinstance(email, str) or email not in self.contacts):
            errors.append(("email", "There is no contact matching the given email", "invalid_value"))
        tags = data.get("tags")
        if tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                errors.append(("tags", "It should be a/an Array", "datatype_mismatch"))
            elif any(len(t) > 32 or "," in t for t in tags):
                errors.append(("tags", "It should only contain elements that have maximum of 32 characters", "invalid_size"))
        custom = data.get("custom_fields")
        if custom is not None:
            if not isinstance(custom, dict):
                errors.append(("custom_fields", "It should be a/an key/value pair", "datatype_mismatch"))
            else:
                errors += [(k, "Unexpected/invalid field in request", "invalid_field")
                           for k in custom if k not in self.custom_fields]  # fmt: skip
        return invalid(*errors) if errors else None

    async def _create(self, request: web.Request) -> web.Response:
        data, problem = await json_body(request)
        if problem:
            return invalid(("", problem, "invalid_json"))
        refused = self._validate(data, CREATE_FIELDS, creating=True)
        if refused is not None:
            return refused
        now = self.clock()
        requester = data.get("requester_id") or self.contacts.get(data.get("email", ""))
        ticket = Ticket(
            self.next_id(),
            {"status": 2, "priority": 1, "source": 2, **data, "requester_id": requester},
            now,
        )
        self.tickets[ticket.id] = ticket
        return web.json_response(self.ticket_json(ticket), status=201,
                                 headers={"Location": f"{self.url}/api/v2/tickets/{ticket.id}"})  # fmt: skip

    async def _list(self, request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - LIST_PARAMS)
        if unknown:
            return invalid(*[(k, "Unexpected/invalid field in request", "invalid_field") for k in unknown])
        per_page = int(request.query.get("per_page", "30"))
        if not 1 <= per_page <= 100:
            return invalid(("per_page", "It should be a/an Positive Integer less than or equal to 100", "invalid_value"))
        tickets = list(self.tickets.values())
        if "email" in request.query:
            requester = self.contacts.get(request.query["email"])
            tickets = [t for t in tickets if t.fields["requester_id"] == requester]
        if "requester_id" in request.query:
            tickets = [t for t in tickets if t.fields["requester_id"] == int(request.query["requester_id"])]
        month = self.clock() - 30 * 86400
        tickets = [t for t in tickets if t.created_at >= month]
        tickets.sort(key=lambda t: t.created_at, reverse=request.query.get("order_type", "desc") == "desc")
        page = int(request.query.get("page", "1"))
        chosen = tickets[(page - 1) * per_page : page * per_page]
        return web.json_response([self.ticket_json(t) for t in chosen])

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        if len(query) < 2 or not (query.startswith('"') and query.endswith('"')) or len(query) > 514:
            return invalid(("query", "Query should be enclosed in double quotes and at most 512 characters", "invalid_value"))
        terms = re.split(r"\s+(AND|OR)\s+", query[1:-1].strip())
        tags = []
        for term in terms[::2]:
            match = re.fullmatch(r"tag:'([^']*)'", term.strip())
            if match is None:
                return invalid(("query", f"Invalid or unsupported term {term!r}", "invalid_value"))
            tags.append(match.group(1))
        now = self.clock()
        self.indexed.update(i for i, t in self.tickets.items() if now - t.created_at >= self.index_delay)
        hits = [self.ticket_json(self.tickets[i]) for i in sorted(self.indexed)
                if set(tags) & set(self.tickets[i].fields.get("tags", []))]  # fmt: skip
        return web.json_response({"results": hits[:30], "total": len(hits)})

    async def _show(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        return web.json_response(self.ticket_json(ticket)) if ticket else web.Response(status=404)

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return web.Response(status=404)
        data, problem = await json_body(request)
        if problem:
            return invalid(("", problem, "invalid_json"))
        refused = self._validate(data, UPDATE_FIELDS, creating=False)
        if refused is not None:
            return refused
        ticket.fields.update(data)
        ticket.fields["updated_at"] = self.clock()
        return web.json_response(self.ticket_json(ticket))

    async def _note(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return web.Response(status=404)
        data, problem = await json_body(request)
        if problem:
            return invalid(("", problem, "invalid_json"))
        if not isinstance(data, dict):
            return invalid(("", "Request body must be a JSON object", "datatype_mismatch"))
        unknown = sorted(set(data) - NOTE_FIELDS)
        if unknown:
            return invalid(*[(k, "Unexpected/invalid field in request", "invalid_field") for k in unknown])
        if not isinstance(data.get("body"), str) or not data["body"].strip():
            return invalid(("body", "It should be a/an String", "missing_field"))
        if "private" in data and not isinstance(data["private"], bool):
            return invalid(("private", "It should be a/an Boolean", "datatype_mismatch"))
        note = Conversation(self.next_id(), self.me, data["body"], data.get("private", True),
                            bool(data.get("incoming", False)), 2, self.clock())  # fmt: skip
        ticket.conversations.append(note)
        return web.json_response(note.json(ticket.id), status=201)

    async def _conversations(self, request: web.Request) -> web.Response:
        ticket = self._ticket(request)
        if ticket is None:
            return web.Response(status=404)
        page = int(request.query.get("page", "1"))
        chosen = ticket.conversations[(page - 1) * 30 : page * 30]
        return web.json_response([c.json(ticket.id) for c in chosen])
