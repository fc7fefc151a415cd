"""``servicenow``: ServiceNow incidents through the Table API (a service desk).

One incident is one record of the ``incident`` table:

- **create** ``POST /api/now/table/incident`` with ``short_description`` (≤ 160
  characters), ``description``, ``impact`` and ``urgency`` from the priority the
  severity maps to (critical → 1 Critical, major → 2 High, minor → 3 Moderate unless
  ``priorities`` says otherwise; the instance computes ``priority`` from impact and
  urgency: 1 = 1+1, 2 = 1+2, 3 = 2+2, 4 = 2+3, 5 = 3+3), ``correlation_id`` = the
  incident's dedup key and ``correlation_display`` = ``ccwatch``, and ``caller_id`` /
  ``assignment_group`` when configured;
- **find**: the Table API has no idempotent insert, so before creating ccwatch looks for
  ``correlation_id=<dedup key>`` (``GET /api/now/table/incident?sysparm_query=…``): an
  incident created just before a crash is found again instead of opened twice;
- **comment** ``PATCH /api/now/table/incident/{sys_id}`` with ``work_notes`` (internal,
  the default) or ``comments`` (customer-visible), as ``comment_field`` says;
- **resolve**: ``state`` 6 (Resolved) with ``close_code`` (the resolution code, mandatory:
  default "Solution provided"; the base system's codes are Duplicate, Known error, No
  resolution provided, Resolved by caller/change/problem/request, Solution provided,
  User error, Workaround provided) and ``close_notes`` = the resolve summary. An incident
  already resolved gets the summary as a note; a closed or canceled one is left alone;
  **reopen** sets ``state`` 2 (In Progress) with a note (a closed incident cannot be
  reopened: the event is dead-lettered with the reason);
- **poll** ``GET /api/now/table/incident/{sys_id}`` (``sysparm_display_value=all``):
  ``state`` 1 New → new, 2 In Progress → in progress, 3 On Hold → waiting when
  ``hold_reason`` is one of ``waiting_hold_reasons`` (default 1, Awaiting Caller), else in
  progress, 6 Resolved / 7 Closed / 8 Canceled → solved. The first response is the first
  customer-visible ``comments`` journal entry (``GET /api/now/table/sys_journal_field``)
  written by a user other than ccwatch's ``username`` that is no auto-reply.

Authentication: basic (``username`` and ``password_env``/``_file``) or an OAuth bearer
token (``token_env``/``_file``, read again for every request, so an external refresher
may rewrite the file); ``username`` is ccwatch's user either way (journal entries name
their author by user name). The account needs the ``itil`` role and read access to
``sys_journal_field``. Answers come wrapped in ``{"result": …}``, errors as
``{"error": {"message", "detail"}, "status": "failure"}``. Rate limits are per instance
(rate limit rules); a 429 carries ``Retry-After``, which pauses this desk.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

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
    resolve_text,
    title,
)

PRIORITIES = {"critical": "1", "major": "2", "minor": "3"}
IMPACT_URGENCY = {
    "1": ("1", "1"),
    "2": ("1", "2"),
    "3": ("2", "2"),
    "4": ("2", "3"),
    "5": ("3", "3"),
}
"""ServiceNow priority → (impact, urgency), the base system's priority lookup."""
SHORT_DESCRIPTION_MAX = 160
TABLE = "incident"
NEW, IN_PROGRESS, ON_HOLD, RESOLVED, CLOSED, CANCELED = "1", "2", "3", "6", "7", "8"
JOURNAL_PAGE = 50


class ServiceNowUpstream(DeskUpstream):
    type: Literal["servicenow"]
    url: AnyHttpUrl = Field(description="the instance, e.g. https://example.service-now.com")
    username: str = Field(description="ccwatch's user (basic auth; the author of its notes)")
    password_env: SecretEnv = None
    password_file: SecretFile = None
    token_env: SecretEnv = Field(None, description="OAuth access token, sent as Bearer")
    token_file: SecretFile = None
    caller_id: str | None = Field(None, description="sys_id of the caller (sys_user)")
    assignment_group: str | None = Field(None, description="sys_id of the assignment group")
    comment_field: Literal["work_notes", "comments"] = Field(
        "work_notes", description="work_notes (internal) or comments (customer-visible)"
    )
    close_code: str = Field("Solution provided", description="resolution code on resolve")
    waiting_hold_reasons: list[str] = Field(
        default_factory=lambda: ["1"],
        description="hold_reason values of On Hold that mean waiting on us (1 Awaiting Caller)",
    )

    @field_validator("priorities")
    @classmethod
    def _servicenow_priorities(cls, value: dict[str, str]) -> dict[str, str]:
        for severity, priority in value.items():
            if priority not in IMPACT_URGENCY:
                raise ValueError(
                    f"{severity}: ServiceNow priority {priority!r} is not one of 1, 2, 3, 4, 5"
                )
        return value

    @model_validator(mode="after")
    def _needs_credentials(self) -> ServiceNowUpstream:
        if not self.enabled:
            return self
        basic = bool(self.password_env or self.password_file)
        bearer = bool(self.token_env or self.token_file)
        if basic == bearer:
            raise ValueError(
                "a servicenow upstream needs either password_env/_file (basic auth) or "
                "token_env/_file (OAuth bearer token), not both"
            )
        return self


def servicenow_time(value: str) -> float:
    """A Table API date-time (``2026-01-22 14:28:24``, UTC as actual value) as epoch seconds."""
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def _value(field: Any) -> str:
    """A field of a ``sysparm_display_value=all`` answer: its actual value."""
    if isinstance(field, dict):
        return str(field.get("value") or "")
    return "" if field is None else str(field)


def _display(field: Any) -> str:
    if isinstance(field, dict):
        return str(field.get("display_value") or "")
    return "" if field is None else str(field)


class ServiceNowAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: ServiceNowUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: ServiceNowUpstream = config
        self._base = str(config.url).rstrip("/")
        self._http = self.desk_http()
        self._first: dict[str, tuple[float, str]] = {}  # sys_id → first response

    def _auth(self) -> dict[str, str]:
        config = self.config
        if config.token_env or config.token_file:
            token = read_secret(config.token_env, config.token_file) or ""
            return {"Authorization": f"Bearer {token}"}
        password = read_secret(config.password_env, config.password_file) or ""
        return {"Authorization": basic_auth(config.username, password)}

    async def _call(self, method: str, path: str, params: dict[str, str], body: Any = None) -> Any:
        answer = await self._http.request(
            method,
            f"{self._base}/api/now/table/{path}",
            json_body=body,
            params=params,
            headers=self._auth(),
        )
        if not isinstance(answer.body, dict) or "result" not in answer.body:
            raise PermanentUpstreamError(f"{self.name}: an answer without 'result'")
        return answer.body["result"]

    def record_url(self, sys_id: str) -> str:
        return f"{self._base}/{TABLE}.do?sys_id={sys_id}"

    # --- the five calls ---------------------------------------------------------------

    async def create(self, event: TicketEvent) -> TicketRef:
        impact, urgency = IMPACT_URGENCY[self.priority(event, PRIORITIES)]
        record = {
            "short_description": " ".join(title(event).split())[:SHORT_DESCRIPTION_MAX],
            "description": description(event),
            "impact": impact,
            "urgency": urgency,
            "correlation_id": event.dedup_key,
            "correlation_display": "ccwatch",
        }
        if self.config.caller_id:
            record["caller_id"] = self.config.caller_id
        if self.config.assignment_group:
            record["assignment_group"] = self.config.assignment_group
        result = await self._call("POST", TABLE, {"sysparm_fields": "sys_id,number"}, body=record)
        sys_id = _sys_id(result, self.name)
        return TicketRef(sys_id, self.record_url(sys_id))

    async def find(self, event: TicketEvent) -> TicketRef | None:
        result = await self._call(
            "GET",
            TABLE,
            {
                "sysparm_query": f"correlation_id={event.dedup_key}^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,number",
                "sysparm_limit": "1",
            },
        )
        if not result:
            return None
        sys_id = _sys_id(result[0], self.name)
        return TicketRef(sys_id, self.record_url(sys_id))

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        await self._update(ref, {self.config.comment_field: text})

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        state = await self._state(ref)
        if state in (CLOSED, CANCELED):
            return  # over upstream already; closed records take no more notes
        if state == RESOLVED:
            await self.comment(ref, resolve_text(event), event)
            return
        await self._update(
            ref,
            {
                "state": RESOLVED,
                "close_code": self.config.close_code,
                "close_notes": resolve_text(event),
            },
        )

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        state = await self._state(ref)
        if state in (CLOSED, CANCELED):
            raise PermanentUpstreamError(
                f"{self.name}: incident {ref.id} is closed; ServiceNow does not reopen "
                "closed incidents"
            )
        fields: dict[str, str] = {self.config.comment_field: comment_text(event)}
        if state == RESOLVED:
            fields["state"] = IN_PROGRESS
        await self._update(ref, fields)

    async def poll(self, ref: TicketRef) -> DeskView:
        record = await self._call(
            "GET",
            f"{TABLE}/{ref.id}",
            {
                "sysparm_fields": "number,state,hold_reason,assigned_to",
                "sysparm_display_value": "all",
                "sysparm_exclude_reference_link": "true",
            },
        )
        if not isinstance(record, dict):
            raise PermanentUpstreamError(f"{self.name}: {ref.id}: not a record")
        state = _value(record.get("state"))
        status = _display(record.get("state")) or state
        hold = _value(record.get("hold_reason"))
        if state in (RESOLVED, CLOSED, CANCELED):
            phase = Phase.SOLVED
        elif state == NEW:
            phase = Phase.NEW
        elif state == ON_HOLD and hold in self.config.waiting_hold_reasons:
            phase = Phase.WAITING
        else:
            phase = Phase.IN_PROGRESS
        if state == ON_HOLD and _display(record.get("hold_reason")):
            status = f"{status} ({_display(record.get('hold_reason'))})"
        first = self._first.get(ref.id)
        if first is None:
            first = await self._first_response(ref)
            if first is not None:
                self._first[ref.id] = first
        return DeskView(
            status=status,
            phase=phase,
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=_display(record.get("assigned_to")) or None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- helpers ----------------------------------------------------------------------

    async def _update(self, ref: TicketRef, fields: dict[str, str]) -> None:
        await self._call("PATCH", f"{TABLE}/{ref.id}", {"sysparm_fields": "sys_id"}, body=fields)

    async def _state(self, ref: TicketRef) -> str:
        record = await self._call("GET", f"{TABLE}/{ref.id}", {"sysparm_fields": "state"})
        return _value(record.get("state")) if isinstance(record, dict) else ""

    async def _first_response(self, ref: TicketRef) -> tuple[float, str] | None:
        """The first customer-visible comment by another user that is no auto-reply."""
        query = (
            f"name={TABLE}^element_id={ref.id}^element=comments"
            f"^sys_created_by!={self.config.username}^ORDERBYsys_created_on"
        )
        offset = 0
        while True:
            entries = await self._call(
                "GET",
                "sys_journal_field",
                {
                    "sysparm_query": query,
                    "sysparm_fields": "sys_created_on,sys_created_by,value",
                    "sysparm_limit": str(JOURNAL_PAGE),
                    "sysparm_offset": str(offset),
                },
            )
            for entry in entries or []:
                who = str(entry.get("sys_created_by") or "")
                if who == self.config.username or self.config.is_auto_reply(
                    str(entry.get("value") or "")
                ):
                    continue
                return servicenow_time(str(entry["sys_created_on"])), who
            if len(entries or []) < JOURNAL_PAGE:
                return None
            offset += JOURNAL_PAGE


def _sys_id(record: Any, upstream: str) -> str:
    value = record.get("sys_id") if isinstance(record, dict) else None
    if not value:
        raise PermanentUpstreamError(f"{upstream}: the answer has no sys_id")
    return str(value)


UPSTREAM = UpstreamType("servicenow", ServiceNowUpstream, ServiceNowAdapter)
