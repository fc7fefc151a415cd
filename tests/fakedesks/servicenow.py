"""A local ServiceNow instance (Table API) for the servicenow desk's contract tests.

Built from ServiceNow's Table API reference (ServiceNow/ServiceNowDocs,
api-reference/rest-apis/c_TableAPI.md) and the platform's behaviour around it:

- auth: ``Authorization: Basic base64(<user>:<password>)`` or ``Bearer <token>``; else
  401 ``{"error": {"message": "User Not Authenticated", "detail": "Required to provide
  Auth information"}, "status": "failure"}``;
- ``POST /api/now/table/incident`` → 201 ``{"result": {...}}`` with a ``Location``
  header; ``GET /api/now/table/{table}`` (``sysparm_query`` encoded query: ``=``, ``!=``,
  ``^``, ``ORDERBY``/``ORDERBYDESC``; ``sysparm_limit``, ``sysparm_offset``,
  ``sysparm_fields``) → 200 ``{"result": [...]}`` (an empty list when nothing matches);
  ``GET/PATCH /api/now/table/incident/{sys_id}`` → 200 or 404 ``No Record found``;
  ``sysparm_display_value=all`` answers ``{"display_value", "value"}`` per field (and a
  ``link`` on references unless ``sysparm_exclude_reference_link=true``);
- like the real Table API, a field the table does not have is ignored (not refused):
  the fake records it in ``ignored`` so the tests can say none was sent;
- ``priority`` is computed from ``impact`` and ``urgency`` (the base system's lookup);
- data policies: Resolved/Closed need ``close_code`` and ``close_notes``, On Hold needs
  ``hold_reason``: else 403 ``Operation Failed`` / ``Data Policy Exception``; a closed
  incident is read-only (403 ``ACL Exception Update Failed due to security constraints``);
- ``comments`` and ``work_notes`` written to an incident become ``sys_journal_field``
  entries (``element``, ``element_id``, ``name``, ``value``, ``sys_created_by`` = the
  user name, ``sys_created_on`` = ``YYYY-MM-DD HH:MM:SS`` UTC);
- ``throttle(n, retry_after)``: the next ``n`` requests get 429 with ``Retry-After``,
  ``X-RateLimit-Limit``, ``X-RateLimit-Reset`` and ``X-RateLimit-Rule``.

"The vendor" acts with ``vendor_comment``, ``set_state`` and ``assign``.
"""

from __future__ import annotations

import base64
import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

INCIDENT_FIELDS = {
    "sys_id", "number", "short_description", "description", "impact", "urgency",
    "priority", "state", "hold_reason", "caller_id", "assignment_group", "assigned_to",
    "correlation_id", "correlation_display", "close_code", "close_notes", "comments",
    "work_notes", "category", "subcategory", "contact_type", "cmdb_ci", "opened_at",
    "resolved_at", "sys_created_on", "sys_updated_on", "sys_created_by", "active",
}  # fmt: skip
JOURNAL_FIELDS = {
    "sys_id", "element", "element_id", "name", "value", "sys_created_on", "sys_created_by",
}  # fmt: skip
REFERENCES = {
    "caller_id": "sys_user",
    "assignment_group": "sys_user_group",
    "assigned_to": "sys_user",
}
STATE = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
HOLD_REASON = {
    "1": "Awaiting Caller",
    "3": "Awaiting Problem",
    "4": "Awaiting Vendor",
    "5": "Awaiting Change",
}
IMPACT = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
PRIORITY = {
    "1": "1 - Critical",
    "2": "2 - High",
    "3": "3 - Moderate",
    "4": "4 - Low",
    "5": "5 - Planning",
}
PRIORITY_LOOKUP = {
    ("1", "1"): "1", ("1", "2"): "2", ("2", "1"): "2", ("1", "3"): "3", ("2", "2"): "3",
    ("3", "1"): "3", ("2", "3"): "4", ("3", "2"): "4", ("3", "3"): "5",
}  # fmt: skip
USERS = {"5137153cc611227c000bbd1bd8cd2005": "Fred Luddy"}
GROUPS = {"287ebd7da9fe198100f92cc8d1d2154e": "Network"}


def snow_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _failure(status: int, message: str, detail: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status=status
    )


def parse_query(query: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, bool]]]:
    """An encoded query as (field, operator, value) conditions and (field, descending)."""
    conditions: list[tuple[str, str, str]] = []
    order: list[tuple[str, bool]] = []
    for part in query.split("^"):
        if not part:
            continue
        if part.startswith("ORDERBYDESC"):
            order.append((part.removeprefix("ORDERBYDESC"), True))
        elif part.startswith("ORDERBY"):
            order.append((part.removeprefix("ORDERBY"), False))
        elif "!=" in part:
            name, value = part.split("!=", 1)
            conditions.append((name, "!=", value))
        elif "=" in part:
            name, value = part.split("=", 1)
            conditions.append((name, "=", value))
        else:
            raise ValueError(f"fake ServiceNow does not know the condition {part!r}")
    return conditions, order


class FakeServiceNow:
    """``async with FakeServiceNow(...) as snow:`` serves on 127.0.0.1; ``snow.url``."""

    def __init__(
        self,
        user: str = "svc.ccwatch",
        password: str = "Pa55-w0rd-for-the-fake",
        token: str = "snow-oauth-access-token-0123456789abcdef",
    ) -> None:
        self.user = user
        self.password = password
        self.token = token
        self.tables: dict[str, dict[str, dict[str, str]]] = {
            "incident": {},
            "sys_journal_field": {},
        }
        self.ignored: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.throttled = 0
        self.retry_after = 0
        self.clock: Callable[[], float] = time.time
        self._numbers = itertools.count(10001)
        self._server: TestServer | None = None

    async def __aenter__(self) -> FakeServiceNow:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/api/now/table/{table}", self._insert)
        app.router.add_get("/api/now/table/{table}", self._list)
        app.router.add_get("/api/now/table/{table}/{sys_id}", self._get)
        app.router.add_patch("/api/now/table/{table}/{sys_id}", self._update)
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

    @property
    def incidents(self) -> list[dict[str, str]]:
        return list(self.tables["incident"].values())

    def journal(self, sys_id: str, element: str | None = None) -> list[dict[str, str]]:
        return [
            entry
            for entry in self.tables["sys_journal_field"].values()
            if entry["element_id"] == sys_id and element in (None, entry["element"])
        ]

    # --- what the vendor does ---------------------------------------------------------

    def throttle(self, requests: int, retry_after: int) -> None:
        self.throttled, self.retry_after = requests, retry_after

    def vendor_comment(
        self, sys_id: str, text: str, user: str, at: float, element: str = "comments"
    ) -> None:
        self._journal("incident", sys_id, element, text, user, at)

    def set_state(self, sys_id: str, state: str, hold_reason: str = "") -> None:
        record = self.tables["incident"][sys_id]
        record["state"], record["hold_reason"] = state, hold_reason

    def assign(self, sys_id: str, user_sys_id: str) -> None:
        self.tables["incident"][sys_id]["assigned_to"] = user_sys_id

    # --- the API ----------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.throttled > 0:
            self.throttled -= 1
            return web.json_response(
                {
                    "error": {
                        "message": "Too Many Requests",
                        "detail": f"User {self.user} has exceeded the rate limit",
                    },
                    "status": "failure",
                },
                status=429,
                headers={
                    "Retry-After": str(self.retry_after),
                    "X-RateLimit-Limit": "1000",
                    "X-RateLimit-Reset": str(int(time.time()) + self.retry_after),
                    "X-RateLimit-Rule": "b1e5d1f0db1a2010f1e6a5f4ce961900",
                },
            )
        basic = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") not in (basic, f"Bearer {self.token}"):
            return _failure(401, "User Not Authenticated", "Required to provide Auth information")
        if "application/json" not in request.headers.get("Accept", ""):
            return _failure(406, "Not Acceptable", "Supported types: application/json")
        if (
            request.method in ("POST", "PATCH", "PUT")
            and request.content_type != "application/json"
        ):
            return _failure(415, "Unsupported Media Type", request.content_type)
        if request.match_info.get("table") not in self.tables:
            return _failure(400, "Invalid table", request.match_info.get("table", ""))
        return await handler(request)

    def _who(self, request: web.Request) -> str:
        return self.user  # the one account this instance knows, by either credential

    def _journal(self, table: str, sys_id: str, element: str, text: str, who: str, at: float):
        entry_id = uuid.uuid4().hex
        self.tables["sys_journal_field"][entry_id] = {
            "sys_id": entry_id,
            "name": table,
            "element": element,
            "element_id": sys_id,
            "value": text,
            "sys_created_by": who,
            "sys_created_on": snow_time(at),
        }

    def _render(self, request: web.Request, record: dict[str, str]) -> dict[str, Any]:
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        names = [f for f in fields if f in record or f in INCIDENT_FIELDS] or list(record)
        mode = request.query.get("sysparm_display_value", "false")
        no_link = request.query.get("sysparm_exclude_reference_link") == "true"
        out: dict[str, Any] = {}
        for name in names:
            value = record.get(name, "")
            display = {
                "state": STATE,
                "hold_reason": HOLD_REASON,
                "impact": IMPACT,
                "urgency": IMPACT,
                "priority": PRIORITY,
                "assigned_to": USERS,
                "caller_id": USERS,
                "assignment_group": GROUPS,
            }.get(name, {}).get(value, value)
            if name in ("comments", "work_notes"):
                value = display = ""  # journal fields read back empty as actual values
            if mode == "all":
                rendered: Any = {"display_value": display, "value": value}
                if name in REFERENCES and value and not no_link:
                    rendered["link"] = f"{self.url}/api/now/table/{REFERENCES[name]}/{value}"
            elif mode == "true":
                rendered = display
            elif name in REFERENCES and value and not no_link:
                rendered = {
                    "link": f"{self.url}/api/now/table/{REFERENCES[name]}/{value}",
                    "value": value,
                }
            else:
                rendered = value
            out[name] = rendered
        return out

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _write(
        self, table: str, record: dict[str, str], body: dict[str, Any], at: float
    ) -> web.Response | None:
        """Apply ``body`` to ``record`` like the platform (unknown fields ignored, journal
        fields to the journal, priority computed, data policies); a refusal or None."""
        journal: list[tuple[str, str]] = []
        changed = dict(record)
        for name, value in body.items():
            if name not in INCIDENT_FIELDS or name.startswith("sys_") or name == "number":
                self.ignored.append(name)
                continue
            text = "" if value is None else str(value)
            if name in ("comments", "work_notes"):
                if text:
                    journal.append((name, text))
            else:
                changed[name] = text
        changed["priority"] = PRIORITY_LOOKUP.get(
            (changed.get("impact") or "3", changed.get("urgency") or "3"), "5"
        )
        missing = []
        if changed.get("state") in ("6", "7"):
            if not changed.get("close_code"):
                missing.append("Resolution code")
            if not changed.get("close_notes"):
                missing.append("Resolution notes")
        if changed.get("state") == "3" and not changed.get("hold_reason"):
            missing.append("On hold reason")
        if missing:
            return _failure(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tThe following fields are mandatory: "
                + ", ".join(missing)
                + "\n",
            )
        if changed.get("state") in ("6", "7") and record.get("state") not in ("6", "7"):
            changed["resolved_at"] = snow_time(at)
        changed["sys_updated_on"] = snow_time(at)
        record.update(changed)
        for element, text in journal:
            self._journal(table, record["sys_id"], element, text, self.user, at)
        return None

    async def _insert(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        body = await self._body(request)
        if body is None:
            return _failure(
                400, "Exception while reading request", "The payload is not valid JSON."
            )
        at = self.clock()
        sys_id = uuid.uuid4().hex
        record = {
            "sys_id": sys_id,
            "number": f"INC{next(self._numbers):07d}",
            "state": "1",
            "impact": "3",
            "urgency": "3",
            "sys_created_on": snow_time(at),
            "sys_created_by": self._who(request),
            "opened_at": snow_time(at),
            "active": "true",
        }
        if (refused := self._write(table, record, body, at)) is not None:
            return refused
        self.tables[table][sys_id] = record
        return web.json_response(
            {"result": self._render(request, record)},
            status=201,
            headers={"Location": f"{self.url}/api/now/table/{table}/{sys_id}"},
        )

    async def _list(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        known = INCIDENT_FIELDS if table == "incident" else JOURNAL_FIELDS
        conditions, order = parse_query(request.query.get("sysparm_query", ""))
        # Like the platform: a condition on a field the table does not have is ignored.
        conditions = [c for c in conditions if c[0] in known]
        rows = [
            record
            for record in self.tables[table].values()
            if all((record.get(name, "") == value) == (op == "=") for name, op, value in conditions)
        ]
        for name, descending in reversed(order):
            rows.sort(key=lambda r, n=name: r.get(n, ""), reverse=descending)
        offset = int(request.query.get("sysparm_offset", "0"))
        limit = int(request.query.get("sysparm_limit", "10000"))
        page = rows[offset : offset + limit]
        return web.json_response(
            {"result": [self._render(request, r) for r in page]},
            headers={"X-Total-Count": str(len(rows))},
        )

    def _record(self, request: web.Request) -> dict[str, str] | None:
        return self.tables[request.match_info["table"]].get(request.match_info["sys_id"])

    async def _get(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if record is None:
            return _failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        return web.json_response({"result": self._render(request, record)})

    async def _update(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if record is None:
            return _failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        if record.get("state") in ("7", "8"):
            return _failure(
                403, "Operation Failed", "ACL Exception Update Failed due to security constraints"
            )
        body = await self._body(request)
        if body is None:
            return _failure(
                400, "Exception while reading request", "The payload is not valid JSON."
            )
        refused = self._write(request.match_info["table"], record, body, self.clock())
        if refused is not None:
            return refused
        return web.json_response({"result": self._render(request, record)})
