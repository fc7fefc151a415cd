"""A fake ClickUp workspace (API v2), from ClickUp's API reference.

- Auth: ``Authorization: <personal token>`` exactly (``pk_…``, no ``Bearer``): missing →
  401 ``{"err": "Authorization header required", "ECODE": "OAUTH_017"}``, anything else
  → 401 ``{"err": "Token invalid", "ECODE": "OAUTH_025"}``. Errors are ``{"err",
  "ECODE"}``.
- Rate limit (``rate_limit`` requests a minute per token, off by default): every answer
  carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (Unix seconds); past the limit
  429 ``{"err": "Rate limit reached", "ECODE": "APP_002"}``.
- ``POST /api/v2/list/{list_id}/task``: ``name`` required, ``priority`` 1 to 4 or null,
  ``status`` one of the list's statuses, ``custom_fields`` ``[{id, value}]`` with ids of
  the list's fields (Text fields take strings), ``tags`` strings (stored lower case),
  ``notify_all`` boolean. Answers the task (200).
- ``GET /api/v2/list/{list_id}/task``: closed tasks only with ``include_closed=true``;
  ``tags[]``; ``custom_fields`` a JSON array of ``{field_id, operator, value}`` (``=``
  contains, ``==`` equals); 100 a page, ``page`` from 0, ``last_page``.
- ``GET``/``PUT /api/v2/task/{id}``; ``POST /api/v2/task/{id}/comment`` (``comment_text``
  required, answers ``{id, hist_id, date}``); ``GET /api/v2/task/{id}/comment`` (newest
  first, 25 a page, ``start`` + ``start_id`` for older ones); ``GET /api/v2/user``.

Run alone (the bench): ``python -m tests.fakedesks.clickup --port P --token pk_… --list L``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakedesks.saas import FakeDesk, json_body

STATUSES = (("to do", "open"), ("in progress", "custom"), ("waiting on customer", "custom"),
            ("complete", "closed"))  # fmt: skip
PRIORITY_NAMES = {1: "urgent", 2: "high", 3: "normal", 4: "low"}


def err(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"err": message, "ECODE": code}, status=status)


@dataclass
class Comment:
    id: int
    user: dict[str, Any]
    text: str
    date_ms: int

    def json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "comment": [{"text": self.text}],
            "comment_text": self.text,
            "user": self.user,
            "resolved": False,
            "assignee": None,
            "assigned_by": None,
            "reactions": [],
            "date": str(self.date_ms),
            "reply_count": 0,
        }


@dataclass
class Task:
    id: str
    fields: dict[str, Any]
    comments: list[Comment] = field(default_factory=list)


class FakeClickUp(FakeDesk):
    def __init__(
        self, token: str, list_id: str = "901", text_fields: tuple[str, ...] = (),
        rate_limit: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.token = token
        self.list_id = list_id
        self.text_fields = set(text_fields)
        self.rate_limit = rate_limit
        self._window = (0.0, 0)  # (start, requests)
        self.users: dict[int, dict[str, Any]] = {}
        self.me = self.add_user("ccwatch bot")
        self.tasks: dict[str, Task] = {}
        r = self.app.router
        r.add_get("/api/v2/user", self._user)
        r.add_post("/api/v2/list/{list_id}/task", self._create)
        r.add_get("/api/v2/list/{list_id}/task", self._list)
        r.add_get("/api/v2/task/{id}", self._show)
        r.add_put("/api/v2/task/{id}", self._update)
        r.add_post("/api/v2/task/{id}/comment", self._comment)
        r.add_get("/api/v2/task/{id}/comment", self._comments)
        r.add_get("/_fake/stats", self._stats)

    # --- "the vendor" ---------------------------------------------------------------

    def add_user(self, name: str) -> int:
        user_id = self.next_id()
        self.users[user_id] = {
            "id": user_id, "username": name, "email": f"{name.split()[0].lower()}@vendor.example.com",
            "color": "#7b68ee", "initials": "".join(w[0] for w in name.split()).upper(),
            "profilePicture": None,
        }  # fmt: skip
        return user_id

    def comment_as(self, task_id: str, user_id: int, text: str, date_ms: int | None = None) -> None:
        when = date_ms if date_ms is not None else int(self.clock() * 1000)
        self.tasks[task_id].comments.append(Comment(self.next_id(), self.users[user_id], text, when))

    def set_status(self, task_id: str, status: str) -> None:
        self.tasks[task_id].fields["status"] = status

    def assign(self, task_id: str, user_id: int) -> None:
        self.tasks[task_id].fields["assignees"] = [user_id]

    # --- the API --------------------------------------------------------------------

    def unauthorized(self, request: web.Request) -> web.StreamResponse | None:
        header = request.headers.get("Authorization")
        if header is None:
            return err(401, "Authorization header required", "OAUTH_017")
        if header != self.token:
            return err(401, "Token invalid", "OAUTH_025")
        if self.rate_limit is not None:
            now = self.clock()
            start, used = self._window
            if now - start >= 60:
                start, used = now, 0
            used += 1
            self._window = (start, used)
            if used > self.rate_limit:
                return self.too_many(start + 60 - now)
        return None

    def extra_headers(self) -> dict[str, str]:
        if self.rate_limit is None:
            return {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "100",
                    "X-RateLimit-Reset": str(math.ceil(self.clock() + 60))}  # fmt: skip
        start, used = self._window
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
            "X-RateLimit-Reset": str(math.ceil(start + 60)),
        }

    def too_many(self, retry_after: float) -> web.StreamResponse:
        return web.json_response(
            {"err": "Rate limit reached", "ECODE": "APP_002"},
            status=429,
            headers={
                "X-RateLimit-Limit": str(self.rate_limit or 100),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(math.ceil(self.clock() + retry_after)),
            },
        )

    def status_json(self, name: str) -> dict[str, Any]:
        index = [s for s, _ in STATUSES].index(name)
        return {"status": name, "color": "#d3d3d3", "type": STATUSES[index][1], "orderindex": index}

    def task_json(self, task: Task) -> dict[str, Any]:
        f = task.fields
        priority = f.get("priority")
        return {
            "id": task.id,
            "custom_id": None,
            "name": f["name"],
            "text_content": f.get("markdown_description", ""),
            "description": f.get("markdown_description", ""),
            "status": self.status_json(f["status"]),
            "orderindex": "1.0",
            "date_created": str(f["date_created"]),
            "date_updated": str(f["date_updated"]),
            "date_closed": None,
            "date_done": None,
            "archived": False,
            "creator": self.users[self.me],
            "assignees": [self.users[u] for u in f.get("assignees", [])],
            "watchers": [],
            "checklists": [],
            "tags": [
                {"name": t, "tag_fg": "#fff", "tag_bg": "#000", "creator": self.me}
                for t in f.get("tags", [])
            ],
            "parent": None,
            "priority": None
            if priority is None
            else {
                "id": str(priority),
                "priority": PRIORITY_NAMES[priority],
                "color": "#f50000",
                "orderindex": str(priority),
            },
            "due_date": None,
            "start_date": None,
            "custom_fields": [
                {"id": i, "name": "ccwatch reference", "type": "short_text",
                 "value": f.get("custom", {}).get(i)}
                for i in sorted(self.text_fields)
            ],
            "team_id": "9000",
            "url": f"https://app.clickup.com/t/{task.id}",
            "list": {"id": self.list_id, "name": "Vendor board", "access": True},
            "space": {"id": "77"},
        }

    def _task(self, request: web.Request) -> Task | None:
        return self.tasks.get(request.match_info["id"])

    async def _user(self, request: web.Request) -> web.Response:
        return web.json_response({"user": self.users[self.me]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": len(self.requests), "tasks": len(self.tasks)})

    async def _create(self, request: web.Request) -> web.Response:
        if request.match_info["list_id"] != self.list_id:
            return err(404, "List not found", "ITEM_013")
        data, problem = await json_body(request)
        if problem or not isinstance(data, dict):
            return err(400, problem or "body must be an object", "INPUT_000")
        if not isinstance(data.get("name"), str) or not data["name"].strip():
            return err(400, "Task name invalid", "INPUT_005")
        priority = data.get("priority")
        if priority is not None and (type(priority) is not int or priority not in PRIORITY_NAMES):
            return err(400, "Priority invalid", "INPUT_003")
        status = data.get("status", STATUSES[0][0])
        if status not in [s for s, _ in STATUSES]:
            return err(400, "Status does not exist", "CRTSK_001")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return err(400, "Tags invalid", "INPUT_004")
        if "notify_all" in data and not isinstance(data["notify_all"], bool):
            return err(400, "notify_all must be a boolean", "INPUT_006")
        for name in ("markdown_description", "description"):
            if name in data and not isinstance(data[name], str):
                return err(400, f"{name} must be a string", "INPUT_007")
        custom: dict[str, str] = {}
        for entry in data.get("custom_fields", []):
            if not isinstance(entry, dict) or entry.get("id") not in self.text_fields:
                return err(400, "Custom field not found", "FIELD_011")
            if not isinstance(entry.get("value"), str):
                return err(400, "Value must be a string", "FIELD_033")
            custom[entry["id"]] = entry["value"]
        now = int(self.clock() * 1000)
        task = Task(format(self.next_id(), "x"), {
            "name": data["name"], "markdown_description": data.get("markdown_description", ""),
            "priority": priority, "status": status, "tags": [t.lower() for t in tags],
            "custom": custom, "date_created": now, "date_updated": now,
        })  # fmt: skip
        self.tasks[task.id] = task
        return web.json_response(self.task_json(task))

    async def _list(self, request: web.Request) -> web.Response:
        if request.match_info["list_id"] != self.list_id:
            return err(404, "List not found", "ITEM_013")
        tasks = list(self.tasks.values())
        if request.query.get("include_closed") != "true":
            tasks = [t for t in tasks if self.status_json(t.fields["status"])["type"] != "closed"]
        wanted_tags = request.query.getall("tags[]", [])
        if wanted_tags:
            tasks = [t for t in tasks if set(wanted_tags) & set(t.fields["tags"])]
        if "custom_fields" in request.query:
            try:
                criteria = json.loads(request.query["custom_fields"])
                assert isinstance(criteria, list)
            except (ValueError, AssertionError):
                return err(400, "custom_fields must be a JSON array", "FILTER_011")
            for c in criteria:
                if not isinstance(c, dict) or {"field_id", "operator", "value"} - set(c):
                    return err(400, "custom field filter needs field_id, operator, value", "FILTER_012")
                if c["operator"] not in ("=", "=="):
                    return err(400, "Operator not supported here", "FILTER_013")
                value = str(c["value"])
                tasks = [t for t in tasks if (
                    value in t.fields["custom"].get(c["field_id"], "") if c["operator"] == "="
                    else t.fields["custom"].get(c["field_id"]) == value)]  # fmt: skip
        page = int(request.query.get("page", "0"))
        chosen = tasks[page * 100 : (page + 1) * 100]
        return web.json_response(
            {"tasks": [self.task_json(t) for t in chosen], "last_page": (page + 1) * 100 >= len(tasks)}
        )

    async def _show(self, request: web.Request) -> web.Response:
        task = self._task(request)
        return web.json_response(self.task_json(task)) if task else err(404, "Task not found", "ITEM_013")

    async def _update(self, request: web.Request) -> web.Response:
        task = self._task(request)
        if task is None:
            return err(404, "Task not found", "ITEM_013")
        data, problem = await json_body(request)
        if problem or not isinstance(data, dict):
            return err(400, problem or "body must be an object", "INPUT_000")
        if "status" in data and data["status"] not in [s for s, _ in STATUSES]:
            return err(400, "Status does not exist", "ITEM_062")
        task.fields.update({k: v for k, v in data.items() if k in ("status", "name", "priority")})
        task.fields["date_updated"] = int(self.clock() * 1000)
        return web.json_response(self.task_json(task))

    async def _comment(self, request: web.Request) -> web.Response:
        task = self._task(request)
        if task is None:
            return err(404, "Task not found", "ITEM_013")
        data, problem = await json_body(request)
        if problem or not isinstance(data, dict):
            return err(400, problem or "body must be an object", "INPUT_000")
        if not isinstance(data.get("comment_text"), str) or not data["comment_text"].strip():
            return err(400, "Comment text invalid", "COMM_002")
        if "notify_all" in data and not isinstance(data["notify_all"], bool):
            return err(400, "notify_all must be a boolean", "COMM_003")
        when = int(self.clock() * 1000)
        comment = Comment(self.next_id(), self.users[self.me], data["comment_text"], when)
        task.comments.append(comment)
        return web.json_response({"id": comment.id, "hist_id": f"h{comment.id}", "date": when})

    async def _comments(self, request: web.Request) -> web.Response:
        task = self._task(request)
        if task is None:
            return err(404, "Task not found", "ITEM_013")
        newest_first = sorted(task.comments, key=lambda c: (c.date_ms, c.id), reverse=True)
        if "start" in request.query or "start_id" in request.query:
            if not ("start" in request.query and "start_id" in request.query):
                return err(400, "start and start_id go together", "COMM_010")
            cursor = (int(request.query["start"]), int(request.query["start_id"]))
            newest_first = [c for c in newest_first if (c.date_ms, c.id) < cursor]
        return web.json_response({"comments": [c.json() for c in newest_first[:25]]})


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake ClickUp for the bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--list", default="901")
    parser.add_argument("--rate-limit", type=int, default=None)
    args = parser.parse_args()
    fake = FakeClickUp(args.token, args.list, rate_limit=args.rate_limit)
    web.run_app(fake.app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
