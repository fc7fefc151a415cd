"""``rt``: a Request Tracker 5 ticket per incident, through REST2 (``<url>/REST/2.0``).

Auth: ``Authorization: token <T>`` (an RT auth token of ccwatch's RT user, from
``token_env``/``token_file``). Every shape below was checked against a real RT 5.0.3
(tests/rt.py, tests/test_rt_server.py, tests/test_desk_rt.py).

- **create**: ``POST /ticket`` ``{Queue, Subject, Content, ContentType: text/plain,
  Priority, CustomFields: {<dedup_field>: <dedup key>}, Requestor?}`` → 201 ``{"id": "7"}``.
  RT has no idempotent create and enforces no uniqueness on a custom field, so
- **find** (before every create the base makes, i.e. after a crash between RT's create
  and ccwatch's link): ``GET /tickets?query=Queue = '<queue>' AND 'CF.{<dedup_field>}' =
  '<dedup key>'&orderby=id``; the oldest match wins. RT silently drops a custom field
  that is not applied to the queue: the first create reads its ticket back and logs an
  error if the key is missing (a crash could then open a second ticket).
- **comment**: ``POST /ticket/<id>/comment`` (internal; ``comment_as: correspond`` makes
  later events public replies, mailed to the requestors) ``{Content, ContentType}`` → 201.
- **resolve** / expire: the same with ``"Status": "<resolve_status>"`` and the resolve
  summary; **reopen**: with ``"Status": "<reopen_status>"``. RT answers an invalid or
  refused status with a 201/200 and a message, changing nothing, so the ticket is read
  back: a status that did not take is a permanent error (unless the ticket is already
  solved, for a resolve).
- **poll**: ``GET /ticket/<id>`` (``Status``, ``Owner``, ``Creator``) and, until the first
  response is known, ``GET /transactions?query=ObjectType = 'RT::Ticket' AND ObjectId =
  <id> AND Type = 'Correspond' AND id > <last checked>&orderby=id``: the vendor's first
  reply is the first ``Correspond`` whose ``Creator`` is neither ccwatch's user (``user``,
  default the ticket's creator: ccwatch made it) nor ``RT_System``, and whose text
  (``GET /transaction/<id>/attachments``) is not an auto-reply (``auto_reply_patterns``).
  RT's own auto-replies and notifications are ``EmailRecord`` transactions by
  ``RT_System``, never a reply. ``new`` → NEW, ``waiting_statuses`` (``stalled``) →
  WAITING, ``solved_statuses`` (``resolved``, ``rejected``) → SOLVED, any other (``open``,
  a custom lifecycle's active statuses) → IN_PROGRESS. ``Owner`` other than ``Nobody``
  is the assignee. RT opens a ``new`` ticket on any correspondence (its scrip "On
  Correspond Open Inactive Tickets"), an auto-reply mailed in too, so ``acknowledge_on``
  defaults to ``reply`` and ``assign`` here: ``open`` alone does not acknowledge.

Priority: RT stores a number; RT 5 shows it through ``%PriorityAsString`` (default
Low 0, Medium 50, High 100), so critical → 100 (High), major → 50 (Medium), minor → 0
(Low). Numbers only: RT 5.0.3 on SQLite stores a label sent on create verbatim.

Errors: 401 (bad token) / 403 (no right in the queue) / 404 / 400 (bad JSON or TicketSQL)
are permanent, 429 / 5xx temporary (``check_status``). RT documents no rate limit:
``requests_per_minute`` is unset unless configured.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, model_validator

from ccwatch.configbase import SecretEnv, SecretFile, read_secret
from ccwatch.errors import PermanentUpstreamError
from ccwatch.tickets.adapters.base import AdapterContext, TicketEvent, UpstreamType
from ccwatch.tickets.desk import (
    DESK_EVENTS,
    AcknowledgeOn,
    DeskAdapter,
    DeskUpstream,
    DeskView,
    Phase,
    TicketRef,
    comment_text,
    description,
    iso_epoch,
    resolve_text,
    title,
)

logger = logging.getLogger(__name__)

PRIORITIES = {"critical": "100", "major": "50", "minor": "0"}
RT_SYSTEM = "RT_System"
NOBODY = "Nobody"
SUBJECT_MAX = 200
PER_PAGE = 100
MAX_PAGES = 10


class RTUpstream(DeskUpstream):
    type: Literal["rt"]
    url: AnyHttpUrl = Field(
        description="RT's base URL (with its WebPath), e.g. https://rt.example.com; "
        "REST2 is under <url>/REST/2.0"
    )
    queue: str = Field(min_length=1, description="the queue tickets are created in")
    token_env: SecretEnv = None
    token_file: SecretFile = None
    dedup_field: str = Field(
        "ccwatch_dedup_key",
        min_length=1,
        description="ticket custom field (applied to the queue) holding the dedup key",
    )
    requestor: str | None = Field(None, description="requestor address of new tickets")
    user: str | None = Field(
        None, description="ccwatch's RT user name (default: the creator of each ticket)"
    )
    comment_as: Literal["comment", "correspond"] = Field(
        "comment",
        description="later events as internal comments, or as correspondence (mailed)",
    )
    waiting_statuses: list[str] = Field(
        default_factory=lambda: ["stalled"],
        description="statuses that mean waiting on ccwatch (the customer)",
    )
    solved_statuses: list[str] = Field(default_factory=lambda: ["resolved", "rejected"])
    resolve_status: str = "resolved"
    reopen_status: str = "open"
    acknowledge_on: list[AcknowledgeOn] = Field(
        default_factory=lambda: list[AcknowledgeOn](["reply", "assign"]),
        description="RT opens a new ticket on any correspondence, auto-replies too: by "
        "default only a real reply or an owner acknowledges",
    )

    @model_validator(mode="after")
    def _check(self) -> RTUpstream:
        if self.enabled and not (self.token_env or self.token_file):
            raise ValueError("an rt upstream needs token_env or token_file")
        for severity, value in self.priorities.items():
            if not value.isdigit():
                raise ValueError(f"priorities.{severity}: RT's priority is a number (0-100)")
        return self


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(value: Any) -> str | None:
    """A user as REST2 links it (``{"id": "vendor", "type": "user", …}``) → its name."""
    name = _dict(value).get("id")
    return None if name is None else str(name)


def quote(value: str) -> str:
    """A TicketSQL/TransactionSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RTAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: RTUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: RTUpstream = config
        self.base = str(config.url).rstrip("/")
        self.rest2 = f"{self.base}/REST/2.0"
        token = read_secret(config.token_env, config.token_file) or ""
        self.http = self.desk_http({"Authorization": f"token {token}"})
        self._field_checked = False
        self._first: dict[str, tuple[float, str]] = {}  # ticket -> first response, once seen
        self._checked: dict[str, int] = {}  # ticket -> last Correspond looked at

    def _ref(self, ticket_id: Any) -> TicketRef:
        return TicketRef(str(ticket_id), f"{self.base}/Ticket/Display.html?id={ticket_id}")

    def ticket_body(self, event: TicketEvent) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Queue": self.config.queue,
            "Subject": title(event)[:SUBJECT_MAX],
            "Content": description(event),
            "ContentType": "text/plain",
            "Priority": int(self.priority(event, PRIORITIES)),
            "CustomFields": {self.config.dedup_field: event.dedup_key},
        }
        if self.config.requestor:
            body["Requestor"] = self.config.requestor
        return body

    async def create(self, event: TicketEvent) -> TicketRef:
        answer = await self.http.request(
            "POST", f"{self.rest2}/ticket", json_body=self.ticket_body(event)
        )
        ticket_id = _dict(answer.body).get("id")
        if ticket_id is None:
            raise PermanentUpstreamError(f"{self.name}: the create answer has no ticket id")
        if not self._field_checked:
            self._field_checked = True
            await self._check_dedup_field(str(ticket_id), event.dedup_key)
        return self._ref(ticket_id)

    async def _check_dedup_field(self, ticket_id: str, key: str) -> None:
        ticket = await self._ticket(ticket_id)
        for field in ticket.get("CustomFields") or []:
            if _dict(field).get("name") == self.config.dedup_field and key in (
                field.get("values") or []
            ):
                return
        logger.error(
            "%s: ticket %s was created without custom field %r (is it applied to queue %r "
            "and may ccwatch's user set it?); a crash between create and commit could "
            "open a second ticket",
            self.name,
            ticket_id,
            self.config.dedup_field,
            self.config.queue,
        )

    async def find(self, event: TicketEvent) -> TicketRef | None:
        query = (
            f"Queue = {quote(self.config.queue)} AND "
            f"{quote('CF.{' + self.config.dedup_field + '}')} = {quote(event.dedup_key)}"
        )
        answer = await self.http.request(
            "GET",
            f"{self.rest2}/tickets",
            params={"query": query, "orderby": "id", "order": "ASC", "per_page": "1"},
        )
        items = _dict(answer.body).get("items") or []
        ids = [str(item["id"]) for item in items if isinstance(item, dict) and "id" in item]
        return self._ref(ids[0]) if ids else None

    async def _post(self, ref: TicketRef, text: str, status: str | None = None) -> list[str]:
        body: dict[str, Any] = {"Content": text, "ContentType": "text/plain"}
        if status is not None:
            body["Status"] = status
        answer = await self.http.request(
            "POST", f"{self.rest2}/ticket/{ref.id}/{self.config.comment_as}", json_body=body
        )
        return [str(m) for m in answer.body] if isinstance(answer.body, list) else []

    async def _ticket(self, ticket_id: str) -> dict[str, Any]:
        answer = await self.http.request("GET", f"{self.rest2}/ticket/{ticket_id}")
        return _dict(answer.body)

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        await self._post(ref, text)

    async def _set_status(self, ref: TicketRef, text: str, want: str, accept: list[str]) -> None:
        messages = await self._post(ref, text, want)
        status = str((await self._ticket(ref.id)).get("Status") or "")
        if status != want and status not in accept:
            said = "; ".join(messages) or "no message"
            raise PermanentUpstreamError(
                f"{self.name}: ticket {ref.id} is {status!r}, not {want!r} ({said})"
            )

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        await self._set_status(
            ref, resolve_text(event), self.config.resolve_status, self.config.solved_statuses
        )

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        await self._set_status(ref, comment_text(event), self.config.reopen_status, [])

    async def _text(self, transaction_id: str) -> str:
        answer = await self.http.request(
            "GET",
            f"{self.rest2}/transaction/{transaction_id}/attachments",
            params={"fields": "ContentType,Content", "per_page": str(PER_PAGE)},
        )
        parts = [_dict(item) for item in _dict(answer.body).get("items") or []]
        return "\n".join(
            str(part.get("Content") or "")
            for part in parts
            if str(part.get("ContentType") or "").startswith("text/")
        )

    async def first_response(self, ref: TicketRef, own: set[str]) -> tuple[float, str] | None:
        """The vendor's first real reply, as (time, user); remembered once seen."""
        if ref.id in self._first:
            return self._first[ref.id]
        for _ in range(MAX_PAGES):
            after = self._checked.get(ref.id, 0)
            query = (
                f"ObjectType = 'RT::Ticket' AND ObjectId = {int(ref.id)} "
                f"AND Type = 'Correspond' AND id > {after}"
            )
            answer = await self.http.request(
                "GET",
                f"{self.rest2}/transactions",
                params={
                    "query": query,
                    "orderby": "id",
                    "order": "ASC",
                    "fields": "Creator,Created",
                    "per_page": str(PER_PAGE),
                },
            )
            items = [_dict(item) for item in _dict(answer.body).get("items") or []]
            for item in items:
                creator = _name(item.get("Creator"))
                at = iso_epoch(item.get("Created"))
                if (
                    creator is not None
                    and creator not in own
                    and at is not None
                    and not self.config.is_auto_reply(await self._text(str(item["id"])))
                ):
                    self._first[ref.id] = (at, creator)
                    return self._first[ref.id]
                self._checked[ref.id] = max(after, int(item["id"]))
            if len(items) < PER_PAGE:
                break
        return None

    async def poll(self, ref: TicketRef) -> DeskView:
        ticket = await self._ticket(ref.id)
        status = str(ticket.get("Status") or "new")
        if status in self.config.solved_statuses:
            phase = Phase.SOLVED
        elif status in self.config.waiting_statuses:
            phase = Phase.WAITING
        elif status == "new":
            phase = Phase.NEW
        else:
            phase = Phase.IN_PROGRESS
        owner = _name(ticket.get("Owner"))
        own = {RT_SYSTEM, self.config.user or _name(ticket.get("Creator")) or ""}
        first = await self.first_response(ref, own)
        return DeskView(
            status=status,
            phase=phase,
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=owner if owner and owner != NOBODY else None,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


UPSTREAM = UpstreamType("rt", RTUpstream, RTAdapter)
