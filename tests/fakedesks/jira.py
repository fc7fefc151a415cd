"""A local Jira Cloud (REST API v3) for the jira desk's contract tests.

Built from Atlassian's reference (developer.atlassian.com/cloud/jira/platform/rest/v3):
the calls ccwatch makes, validated the way Jira validates them, answered in Jira's shapes.

- auth: ``Authorization: Basic base64(<email>:<api token>)``, else 401;
- ``POST /rest/api/3/issue`` ``{"fields": {...}}``: project by key, issue type by name,
  summary (no line breaks, < 255 characters), description as an Atlassian Document (a
  string is refused: v3 takes ADF only), priority by name, labels without spaces; a field
  the create screen does not have → 400 ``errors.<field>``; 201 ``{id, key, self}``;
- ``POST /rest/api/3/search/jql`` (enhanced search): ``jql`` required and bounded,
  ``startAt`` refused (cursor pagination: ``nextPageToken``); answers ``{issues, isLast}``
  with only the requested ``fields``. The deprecated ``/rest/api/3/search`` answers 410;
- ``GET /rest/api/3/issue/{key}?fields=…``; ``POST …/comment`` (ADF ``body``, optional
  ``properties`` such as ``sd.public.comment``) → 201; ``GET …/comment`` (``startAt``,
  ``maxResults``, ``orderBy``);
- ``GET …/transitions`` (``expand=transitions.fields`` lists the screen's fields) and
  ``POST …/transitions`` ``{"transition": {"id"}, "fields"?, "update"?}`` → 204; a
  transition the issue does not offer, or a field not on its screen → 400;
- ``GET /rest/api/3/myself``;
- errors ``{"errorMessages": [...], "errors": {...}}``; ``throttle(n, retry_after)``
  answers the next ``n`` requests 429 with ``Retry-After`` and ``X-RateLimit-Reset``.

"The vendor" moves issues with ``vendor_comment``, ``set_status`` and ``assign``.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

STATUSES = {
    "Open": "new",
    "In Progress": "indeterminate",
    "Waiting for customer": "indeterminate",
    "Resolved": "done",
}
CATEGORY_IDS = {"new": 2, "indeterminate": 4, "done": 3}
# name, id, from-categories, to-status, screen fields
TRANSITIONS = [
    ("Start progress", "11", {"new"}, "In Progress", {}),
    ("Wait for customer", "21", {"new", "indeterminate"}, "Waiting for customer", {}),
    (
        "Resolve this issue",
        "31",
        {"new", "indeterminate"},
        "Resolved",
        {
            "resolution": {
                "required": True,
                "name": "Resolution",
                "key": "resolution",
                "operations": ["set"],
                "allowedValues": [
                    {"id": "10000", "name": "Done"},
                    {"id": "10001", "name": "Won't Do"},
                    {"id": "10002", "name": "Duplicate"},
                ],
            }
        },
    ),
    ("Reopen", "41", {"done"}, "Open", {}),
]
PRIORITIES = ["Highest", "High", "Medium", "Low", "Lowest"]
RESOLUTIONS = ["Done", "Won't Do", "Duplicate"]
CREATE_SCREEN = {"project", "issuetype", "summary", "description", "priority", "labels"}
SEARCH_KEYS = {
    "jql",
    "nextPageToken",
    "maxResults",
    "fields",
    "expand",
    "properties",
    "fieldsByKeys",
    "failFast",
    "reconcileIssues",
}
JQL = re.compile(
    r'^project\s*=\s*"?(?P<project>[A-Z][A-Z0-9_]*)"?\s+AND\s+labels\s*=\s*"(?P<label>[^"]+)"'
    r"(?:\s+ORDER\s+BY\s+created\s+(?:ASC|DESC))?$",
    re.I,
)
BLOCKS = {"paragraph", "codeBlock", "heading", "bulletList", "orderedList", "rule"}


def jira_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def adf_problem(doc: Any) -> str | None:
    """Why ``doc`` is not an Atlassian Document (None when it is one)."""
    if not isinstance(doc, dict) or doc.get("type") != "doc" or doc.get("version") != 1:
        return "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
    if not isinstance(doc.get("content"), list):
        return "INVALID_INPUT: doc.content must be an array"
    for block in doc["content"]:
        if not isinstance(block, dict) or block.get("type") not in BLOCKS:
            return f"INVALID_INPUT: unknown block node {block!r:.60}"
        for inline in block.get("content", []):
            kind = inline.get("type") if isinstance(inline, dict) else None
            if kind == "text":
                if not isinstance(inline.get("text"), str) or not inline["text"]:
                    return "INVALID_INPUT: a text node needs non-empty text"
            elif kind != "hardBreak":
                return f"INVALID_INPUT: unknown inline node {inline!r:.60}"
    return None


def adf_plain(doc: dict[str, Any]) -> str:
    lines = []
    for block in doc.get("content", []):
        parts = [
            node.get("text", "") if node.get("type") == "text" else "\n"
            for node in block.get("content", [])
        ]
        lines.append("".join(parts))
    return "\n\n".join(lines)


def adf_of(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


@dataclass
class User:
    account_id: str
    name: str
    account_type: str = "atlassian"

    def details(self) -> dict[str, Any]:
        return {
            "accountId": self.account_id,
            "displayName": self.name,
            "accountType": self.account_type,
            "active": True,
        }


@dataclass
class Issue:
    id: str
    key: str
    fields: dict[str, Any]
    status: str = "Open"
    resolution: str | None = None
    assignee: User | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)  # names of transitions done


def _error(status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None):
    return web.json_response(
        {"errorMessages": messages or [], "errors": errors or {}}, status=status
    )


class FakeJira:
    """``async with FakeJira(...) as jira:`` serves on 127.0.0.1; ``jira.url`` is the site."""

    def __init__(
        self,
        email: str = "ccwatch@example.com",
        token: str = "ATATT3xFfGF0-jira-api-token-0123456789",
        project: str = "CC",
        issue_types: tuple[str, ...] = ("Task", "Incident"),
    ) -> None:
        self.email = email
        self.token = token
        self.project = project
        self.issue_types = issue_types
        self.me = User("5b10ac8d82e05b22cc7d4ef5", "ccwatch bot")
        self.issues: dict[str, Issue] = {}
        self.requests: list[tuple[str, str]] = []
        self.embedded_comments = 50  # GET issue embeds at most this many; the rest by paging
        self.throttled = 0
        self.retry_after = 0
        self.clock: Callable[[], float] = time.time  # creation times of its own records
        self._ids = itertools.count(10001)
        self._comment_ids = itertools.count(20001)
        self._server: TestServer | None = None

    async def __aenter__(self) -> FakeJira:
        app = web.Application(middlewares=[self._gate])
        api = "/rest/api/3"
        app.router.add_post(f"{api}/issue", self._create)
        app.router.add_post(f"{api}/search/jql", self._search)
        app.router.add_route("*", f"{api}/search", self._old_search)
        app.router.add_get(f"{api}/myself", self._myself)
        app.router.add_get(f"{api}/issue/{{key}}", self._get)
        app.router.add_post(f"{api}/issue/{{key}}/comment", self._add_comment)
        app.router.add_get(f"{api}/issue/{{key}}/comment", self._list_comments)
        app.router.add_get(f"{api}/issue/{{key}}/transitions", self._transitions)
        app.router.add_post(f"{api}/issue/{{key}}/transitions", self._transition)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    # --- what the vendor does ---------------------------------------------------------

    def throttle(self, requests: int, retry_after: int) -> None:
        self.throttled, self.retry_after = requests, retry_after

    def vendor_comment(
        self,
        key: str,
        text: str,
        author: User,
        at: float,
        public: bool = True,
    ) -> None:
        issue = self.issues[key]
        issue.comments.append(self._comment(author, adf_of(text), at, public))

    def set_status(self, key: str, status: str) -> None:
        assert status in STATUSES
        self.issues[key].status = status

    def assign(self, key: str, user: User) -> None:
        self.issues[key].assignee = user

    # --- the API ----------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.throttled > 0:
            self.throttled -= 1
            reset = datetime.now(UTC) + timedelta(seconds=self.retry_after)
            return web.json_response(
                {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                status=429,
                headers={
                    "Retry-After": str(self.retry_after),
                    "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
                    "RateLimit-Reason": "jira-quota-based",
                },
            )
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(
                status=401,
                text="Client must be authenticated to access this resource.",
                headers={"WWW-Authenticate": 'Basic realm="protected-area"'},
            )
        if request.method == "POST" and request.content_type != "application/json":
            return _error(415, ["Unsupported Media Type"])
        return await handler(request)

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _issue(self, request: web.Request) -> Issue | None:
        key = request.match_info["key"]
        return self.issues.get(key) or next(
            (issue for issue in self.issues.values() if issue.id == key), None
        )

    def _comment(self, author: User, body: dict[str, Any], at: float, public: bool) -> dict:
        created = jira_time(at)
        return {
            "id": str(next(self._comment_ids)),
            "author": author.details(),
            "body": body,
            "updateAuthor": author.details(),
            "created": created,
            "updated": created,
            "jsdPublic": public,
        }

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is None or not isinstance(body.get("fields"), dict):
            return _error(400, ["Issue must have fields"])
        fields = body["fields"]
        errors: dict[str, str] = {}
        for name in fields:
            if name not in CREATE_SCREEN:
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, "
                    "or unknown."
                )
        if (fields.get("project") or {}).get("key") != self.project:
            errors["project"] = "Specify a valid project ID or key"
        if (fields.get("issuetype") or {}).get("name") not in self.issue_types:
            errors["issuetype"] = "Specify an issue type"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif "\n" in summary or "\r" in summary:
            errors["summary"] = "The summary is invalid because it contains newline characters."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        if "description" in fields and (problem := adf_problem(fields["description"])):
            errors["description"] = problem
        if "priority" in fields and (fields["priority"] or {}).get("name") not in PRIORITIES:
            errors["priority"] = "Specify the Priority (id or name) in the string format"
        labels = fields.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            errors["labels"] = "Labels must be an array of strings"
        else:
            for label in labels:
                if any(ch.isspace() for ch in label) or len(label) > 255:
                    errors["labels"] = f"The label '{label}' contains spaces which is invalid."
        if errors:
            return _error(400, errors=errors)
        number = next(self._ids)
        key = f"{self.project}-{number - 10000}"
        self.issues[key] = Issue(str(number), key, dict(fields))
        self.issues[key].fields["created"] = jira_time(self.clock())
        return web.json_response(
            {"id": str(number), "key": key, "self": f"{self.url}/rest/api/3/issue/{number}"},
            status=201,
        )

    async def _old_search(self, request: web.Request) -> web.Response:
        return _error(
            410,
            [
                "The requested API has been removed. Please migrate to the "
                "/rest/api/3/search/jql API."
            ],
        )

    async def _search(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is None:
            return _error(400, ["Invalid request payload"])
        unknown = set(body) - SEARCH_KEYS
        if unknown:
            return _error(400, [f'Unrecognized field "{sorted(unknown)[0]}"'])
        jql = body.get("jql")
        if not isinstance(jql, str) or not jql.strip():
            return _error(400, ["Unbounded JQL queries are not allowed here."])
        match = JQL.match(jql.strip())
        if match is None:
            return _error(400, [f"Error in the JQL Query: fake Jira cannot parse {jql!r}"])
        wanted = body.get("fields") or []
        found = [
            issue
            for issue in self.issues.values()
            if issue.key.startswith(match["project"] + "-")
            and match["label"] in issue.fields.get("labels", [])
        ]
        found.sort(key=lambda issue: int(issue.id), reverse="DESC" in jql.upper())
        limit = int(body.get("maxResults") or 50)
        issues = [
            {
                "id": issue.id,
                "key": issue.key,
                "self": f"{self.url}/rest/api/3/issue/{issue.id}",
                **({"fields": {f: self._field(issue, f) for f in wanted}} if wanted else {}),
            }
            for issue in found[:limit]
        ]
        answer: dict[str, Any] = {"issues": issues, "isLast": len(found) <= limit}
        if len(found) > limit:
            answer["nextPageToken"] = "fake-token"
        return web.json_response(answer)

    def _field(self, issue: Issue, name: str) -> Any:
        if name == "status":
            category = STATUSES[issue.status]
            return {
                "name": issue.status,
                "id": str(list(STATUSES).index(issue.status) + 1),
                "statusCategory": {
                    "id": CATEGORY_IDS[category],
                    "key": category,
                    "name": {"new": "To Do", "indeterminate": "In Progress"}.get(category, "Done"),
                },
            }
        if name == "assignee":
            return issue.assignee.details() if issue.assignee else None
        if name == "comment":
            return {
                "comments": issue.comments[: self.embedded_comments],
                "maxResults": self.embedded_comments,
                "total": len(issue.comments),
                "startAt": 0,
            }
        if name == "resolution":
            return {"name": issue.resolution} if issue.resolution else None
        return issue.fields.get(name)

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response({**self.me.details(), "emailAddress": self.email})

    async def _get(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return _error(404, ["Issue does not exist or you do not have permission to see it."])
        names = [n for n in request.query.get("fields", "*all").split(",") if n]
        if names == ["*all"]:
            names = [*issue.fields, "status", "assignee", "comment", "resolution"]
        return web.json_response(
            {
                "id": issue.id,
                "key": issue.key,
                "self": f"{self.url}/rest/api/3/issue/{issue.id}",
                "fields": {name: self._field(issue, name) for name in names},
            }
        )

    async def _add_comment(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return _error(404, ["Issue does not exist or you do not have permission to see it."])
        body = await self._json(request)
        if body is None:
            return _error(400, ["Invalid request payload"])
        unknown = set(body) - {"body", "visibility", "properties"}
        if unknown:
            return _error(400, [f'Unrecognized field "{sorted(unknown)[0]}"'])
        if problem := adf_problem(body.get("body")):
            return _error(400, errors={"comment": problem})
        public = True
        for prop in body.get("properties") or []:
            if not isinstance(prop, dict) or not isinstance(prop.get("key"), str):
                return _error(400, ["Invalid entity property"])
            if prop["key"] == "sd.public.comment":
                public = not bool((prop.get("value") or {}).get("internal"))
        comment = self._comment(self.me, body["body"], self.clock(), public)
        issue.comments.append(comment)
        return web.json_response(comment, status=201)

    async def _list_comments(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return _error(404, ["Issue does not exist or you do not have permission to see it."])
        start = int(request.query.get("startAt", "0"))
        limit = min(int(request.query.get("maxResults", "100")), 100)
        ordered = sorted(
            issue.comments,
            key=lambda c: c["created"],
            reverse=request.query.get("orderBy", "created").startswith("-"),
        )
        page = ordered[start : start + limit]
        return web.json_response(
            {"comments": page, "startAt": start, "maxResults": limit, "total": len(ordered)}
        )

    def _offered(self, issue: Issue) -> list[tuple[str, str, set[str], str, dict[str, Any]]]:
        category = STATUSES[issue.status]
        return [t for t in TRANSITIONS if category in t[2] and t[3] != issue.status]

    async def _transitions(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return _error(404, ["Issue does not exist or you do not have permission to see it."])
        with_fields = "transitions.fields" in request.query.get("expand", "")
        return web.json_response(
            {
                "expand": "transitions",
                "transitions": [
                    {
                        "id": tid,
                        "name": name,
                        "to": {
                            "name": to,
                            "statusCategory": {"key": STATUSES[to]},
                        },
                        "hasScreen": bool(screen),
                        "isAvailable": True,
                        **({"fields": screen} if with_fields else {}),
                    }
                    for name, tid, _, to, screen in self._offered(issue)
                ],
            }
        )

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if issue is None:
            return _error(404, ["Issue does not exist or you do not have permission to see it."])
        body = await self._json(request)
        if body is None:
            return _error(400, ["Invalid request payload"])
        unknown = set(body) - {"transition", "fields", "update", "historyMetadata", "properties"}
        if unknown:
            return _error(400, [f'Unrecognized field "{sorted(unknown)[0]}"'])
        tid = str((body.get("transition") or {}).get("id") or "")
        offered = {t[1]: t for t in self._offered(issue)}
        if tid not in offered:
            return _error(400, [f"Transition id '{tid}' is not valid for this issue."])
        name, _, _, to, screen = offered[tid]
        fields = body.get("fields") or {}
        for key in fields:
            if key not in screen:
                return _error(
                    400,
                    errors={
                        key: f"Field '{key}' cannot be set. It is not on the appropriate "
                        "screen, or unknown."
                    },
                )
        for key, meta in screen.items():
            if meta.get("required") and key not in fields:
                return _error(400, errors={key: f"{meta.get('name', key)} is required."})
        if "resolution" in fields:
            if (fields["resolution"] or {}).get("name") not in RESOLUTIONS:
                return _error(400, errors={"resolution": "Specify a valid resolution name"})
            issue.resolution = fields["resolution"]["name"]
        for update in (body.get("update") or {}).get("comment", []):
            comment = (update or {}).get("add") or {}
            if problem := adf_problem(comment.get("body")):
                return _error(400, errors={"comment": problem})
            issue.comments.append(self._comment(self.me, comment["body"], self.clock(), True))
        issue.status = to
        if STATUSES[to] != "done":
            issue.resolution = None
        issue.transitions.append(name)
        return web.Response(status=204)
