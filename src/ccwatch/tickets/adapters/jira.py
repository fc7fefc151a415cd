"""``jira``: Jira Cloud and Jira Service Management, REST API v3 (a service desk).

One incident is one Jira issue in ``project``:

- **create** ``POST /rest/api/3/issue`` with the summary, the description in Atlassian
  Document Format (v3 takes no plain text for descriptions and comment bodies), the
  priority by name (critical → ``Highest``, major → ``High``, minor → ``Medium`` unless
  ``priorities`` says otherwise) and the labels ``ccwatch`` and ``ccwatch-<hash>``, a
  label derived from the incident's dedup key (labels take no spaces; a SHA-256 prefix of
  the key, so ``:`` and length never matter);
- **find**: Jira has no idempotent create, so before creating, ccwatch searches
  ``POST /rest/api/3/search/jql`` (the enhanced search; ``/rest/api/3/search`` is
  deprecated and removed) for ``project = "<key>" AND labels = "ccwatch-<hash>"``: an
  issue created just before a crash is found again instead of opened twice. Jira's search
  index is near-real-time: an issue created a second before the crash may not be found yet;
  ``ticket_for`` records the link before the outbox row is marked delivered, so this only
  matters for a crash inside that second;
- **comment** ``POST /rest/api/3/issue/{key}/comment`` (ADF body); ``comment_visibility:
  internal`` makes them Service Management internal notes (entity property
  ``sd.public.comment`` = ``{"internal": true}``);
- **resolve**: the first of ``resolve_transitions`` the issue offers
  (``GET/POST /rest/api/3/issue/{key}/transitions``, looked up by name; ids differ per
  workflow), with ``resolution`` when configured and on the transition's screen (a screen
  that requires one and none configured: its first allowed value), then the resolve
  summary as a comment. An issue already in a done status gets the comment only;
  **reopen** likewise with ``reopen_transitions`` (no such transition: a comment only);
- **poll** ``GET /rest/api/3/issue/{key}?fields=status,assignee,comment``: the status
  category maps the phase (``new`` → new, ``indeterminate`` → in progress, ``done`` →
  solved) and ``waiting_statuses`` (names, e.g. "Waiting for customer", "Pending") →
  waiting. The first response is the first comment by an account other than ccwatch's own
  (``GET /rest/api/3/myself``, asked once), not by an app (automation rules), public
  (``jsdPublic`` not false) and not an auto-reply.

Authentication: basic auth, the account's e-mail and an API token (``api_token_env`` /
``_file``). Jira publishes no fixed rate limit; it answers 429 with ``Retry-After``,
which pauses this desk (``DeskHttp``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
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

logger = logging.getLogger(__name__)

PRIORITIES = {"critical": "Highest", "major": "High", "minor": "Medium"}
SUMMARY_MAX = 255
LABEL_PREFIX = "ccwatch-"
INTERNAL_PROPERTY = "sd.public.comment"
COMMENT_PAGE = 100
_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,254}$")


class JiraUpstream(DeskUpstream):
    type: Literal["jira"]
    url: AnyHttpUrl = Field(description="the site, e.g. https://example.atlassian.net")
    project: str = Field(description="project key, e.g. CC")
    issue_type: str = Field("Task", description="issue type name (JSM: e.g. 'Incident')")
    email: str = Field(description="the Atlassian account ccwatch works as (basic auth user)")
    api_token_env: SecretEnv = None
    api_token_file: SecretFile = None
    labels: list[str] = Field(default_factory=list, description="extra labels (no spaces)")
    resolve_transitions: list[str] = Field(
        default_factory=lambda: ["Resolve this issue", "Resolve", "Done", "Close"],
        description="transition names tried in order to resolve an issue",
    )
    resolution: str | None = Field(
        None, description="resolution name set by the resolve transition, e.g. 'Done'"
    )
    reopen_transitions: list[str] = Field(
        default_factory=lambda: ["Reopen", "Reopen issue", "Back to in progress"],
        description="transition names tried in order to reopen an issue",
    )
    waiting_statuses: list[str] = Field(
        default_factory=lambda: ["Waiting for customer", "Pending"],
        description="status names that mean the desk waits on us",
    )
    comment_visibility: Literal["public", "internal"] = Field(
        "public", description="internal: Service Management internal notes"
    )

    @field_validator("project")
    @classmethod
    def _project_key(cls, value: str) -> str:
        if not _PROJECT_KEY.match(value):
            raise ValueError(f"{value!r} is not a Jira project key (e.g. CC, OPS2)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_without_spaces(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or any(ch.isspace() for ch in label):
                raise ValueError(f"Jira labels take no spaces: {label!r}")
        return value

    @model_validator(mode="after")
    def _needs_token(self) -> JiraUpstream:
        if self.enabled and not (self.api_token_env or self.api_token_file):
            raise ValueError("a jira upstream needs api_token_env or api_token_file")
        return self


def dedup_label(dedup_key: str) -> str:
    """The label that marks an incident's issue (labels take no spaces; keys have ``:``)."""
    return LABEL_PREFIX + hashlib.sha256(dedup_key.encode()).hexdigest()[:24]


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document: a paragraph per blank-line-separated block,
    a hard break per line break (ADF text nodes must not be empty)."""
    blocks = [block for block in re.split(r"\n[ \t]*\n", text.strip("\n")) if block.strip()]
    content: list[dict[str, Any]] = []
    for block in blocks:
        nodes: list[dict[str, Any]] = []
        for number, line in enumerate(block.split("\n")):
            if number:
                nodes.append({"type": "hardBreak"})
            if line:
                nodes.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


def adf_text(node: Any) -> str:
    """The text of an Atlassian Document (or a plain string), for the auto-reply check."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text") or "")
    if node.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(child) for child in node.get("content") or []]
    joiner = "\n" if node.get("type") in ("doc", "bulletList", "orderedList") else ""
    return joiner.join(parts)


def jira_time(value: str) -> float:
    """Jira's ``2021-01-17T12:34:00.000+0000`` as epoch seconds."""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def phase_of(status: dict[str, Any], waiting: list[str]) -> Phase:
    category = str((status.get("statusCategory") or {}).get("key") or "")
    name = str(status.get("name") or "").casefold()
    if category == "done":
        return Phase.SOLVED
    if name in {w.casefold() for w in waiting}:
        return Phase.WAITING
    if category == "indeterminate":
        return Phase.IN_PROGRESS
    return Phase.NEW


class JiraAdapter(DeskAdapter):
    EVENTS = DESK_EVENTS

    def __init__(self, config: JiraUpstream, context: AdapterContext) -> None:
        super().__init__(config, context)
        self.config: JiraUpstream = config
        token = read_secret(config.api_token_env, config.api_token_file) or ""
        self._base = str(config.url).rstrip("/")
        self._http = self.desk_http({"Authorization": basic_auth(config.email, token)})
        self._account_id: str | None = None
        self._first: dict[str, tuple[float, str]] = {}  # issue key → first response

    def _api(self, path: str) -> str:
        return f"{self._base}/rest/api/3/{path}"

    def browse_url(self, key: str) -> str:
        return f"{self._base}/browse/{key}"

    # --- the five calls ---------------------------------------------------------------

    async def create(self, event: TicketEvent) -> TicketRef:
        summary = " ".join(title(event).split())[:SUMMARY_MAX]
        fields: dict[str, Any] = {
            "project": {"key": self.config.project},
            "issuetype": {"name": self.config.issue_type},
            "summary": summary,
            "description": adf(description(event)),
            "priority": {"name": self.priority(event, PRIORITIES)},
            "labels": sorted({"ccwatch", dedup_label(event.dedup_key), *self.config.labels}),
        }
        answer = await self._http.request("POST", self._api("issue"), json_body={"fields": fields})
        key = _field(answer.body, "key", self.name)
        return TicketRef(key, self.browse_url(key))

    async def find(self, event: TicketEvent) -> TicketRef | None:
        jql = (
            f'project = "{self.config.project}" AND labels = "{dedup_label(event.dedup_key)}"'
            " ORDER BY created ASC"
        )
        answer = await self._http.request(
            "POST",
            self._api("search/jql"),
            json_body={"jql": jql, "fields": ["created"], "maxResults": 1},
        )
        issues = answer.body.get("issues") if isinstance(answer.body, dict) else None
        if not issues:
            return None
        key = _field(issues[0], "key", self.name)
        return TicketRef(key, self.browse_url(key))

    async def comment(self, ref: TicketRef, text: str, event: TicketEvent | None) -> None:
        body: dict[str, Any] = {"body": adf(text)}
        if self.config.comment_visibility == "internal":
            body["properties"] = [{"key": INTERNAL_PROPERTY, "value": {"internal": True}}]
        await self._http.request("POST", self._api(f"issue/{ref.id}/comment"), json_body=body)

    async def resolve(self, ref: TicketRef, event: TicketEvent) -> None:
        transition = await self._transition(ref, self.config.resolve_transitions)
        if transition is not None:
            request: dict[str, Any] = {"transition": {"id": str(transition["id"])}}
            resolution = self._resolution(transition.get("fields") or {})
            if resolution is not None:
                request["fields"] = {"resolution": {"name": resolution}}
            await self._http.request(
                "POST", self._api(f"issue/{ref.id}/transitions"), json_body=request
            )
        elif await self._category(ref) != "done":
            raise PermanentUpstreamError(
                f"{self.name}: {ref.id} offers none of the resolve transitions "
                f"{self.config.resolve_transitions}; set resolve_transitions"
            )
        # Transition first, then the summary: a retry after a failed comment finds the
        # issue done and only comments.
        await self.comment(ref, resolve_text(event), event)

    async def reopen(self, ref: TicketRef, event: TicketEvent) -> None:
        transition = await self._transition(ref, self.config.reopen_transitions)
        if transition is not None:
            await self._http.request(
                "POST",
                self._api(f"issue/{ref.id}/transitions"),
                json_body={"transition": {"id": str(transition["id"])}},
            )
        else:
            logger.info(
                "%s: %s offers none of %s; reopen is a comment only",
                self.name,
                ref.id,
                self.config.reopen_transitions,
            )
        await self.comment(ref, comment_text(event), event)

    async def poll(self, ref: TicketRef) -> DeskView:
        answer = await self._http.request(
            "GET", self._api(f"issue/{ref.id}"), params={"fields": "status,assignee,comment"}
        )
        fields = answer.body.get("fields") if isinstance(answer.body, dict) else None
        if not isinstance(fields, dict):
            raise PermanentUpstreamError(f"{self.name}: {ref.id}: an issue without fields")
        status = fields.get("status") or {}
        assignee = fields.get("assignee") or {}
        first = self._first.get(ref.id)
        if first is None:
            first = await self._first_response(ref, fields.get("comment") or {})
            if first is not None:
                self._first[ref.id] = first
        return DeskView(
            status=str(status.get("name") or ""),
            phase=phase_of(status, self.config.waiting_statuses),
            first_response_at=first[0] if first else None,
            responder=first[1] if first else None,
            assignee=(assignee.get("displayName") or assignee.get("accountId")) or None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- helpers ----------------------------------------------------------------------

    async def _transition(self, ref: TicketRef, names: list[str]) -> dict[str, Any] | None:
        """The first transition of ``names`` (case-insensitive) the issue offers now."""
        answer = await self._http.request(
            "GET",
            self._api(f"issue/{ref.id}/transitions"),
            params={"expand": "transitions.fields"},
        )
        offered = answer.body.get("transitions") if isinstance(answer.body, dict) else None
        by_name = {str(t.get("name", "")).casefold(): t for t in offered or [] if "id" in t}
        for name in names:
            if name.casefold() in by_name:
                return dict(by_name[name.casefold()])
        return None

    def _resolution(self, screen: dict[str, Any]) -> str | None:
        """The resolution to set: the configured one when the transition's screen has the
        field, else the first allowed one when the screen requires it."""
        field = screen.get("resolution")
        if not isinstance(field, dict):
            return None
        if self.config.resolution:
            return self.config.resolution
        allowed = field.get("allowedValues") or []
        if field.get("required") and allowed and isinstance(allowed[0], dict):
            return str(allowed[0].get("name") or "") or None
        return None

    async def _category(self, ref: TicketRef) -> str:
        answer = await self._http.request(
            "GET", self._api(f"issue/{ref.id}"), params={"fields": "status"}
        )
        fields = answer.body.get("fields") if isinstance(answer.body, dict) else {}
        status = (fields or {}).get("status") or {}
        return str((status.get("statusCategory") or {}).get("key") or "")

    async def _myself(self) -> str:
        if self._account_id is None:
            answer = await self._http.request("GET", self._api("myself"))
            self._account_id = _field(answer.body, "accountId", self.name)
        return self._account_id

    async def _first_response(
        self, ref: TicketRef, embedded: dict[str, Any]
    ) -> tuple[float, str] | None:
        """The first public comment by someone else (not an app) that is no auto-reply."""
        me = await self._myself()
        comments = list(embedded.get("comments") or [])
        total = int(embedded.get("total") or len(comments))
        while True:
            for comment in comments:
                author = comment.get("author") or {}
                if author.get("accountId") == me or author.get("accountType") == "app":
                    continue
                if comment.get("jsdPublic") is False:
                    continue
                if self.config.is_auto_reply(adf_text(comment.get("body"))):
                    continue
                who = str(author.get("displayName") or author.get("accountId") or "unknown")
                return jira_time(str(comment["created"])), who
            start = int(embedded.get("startAt") or 0) + len(embedded.get("comments") or [])
            if start >= total or not embedded.get("comments"):
                return None
            answer = await self._http.request(
                "GET",
                self._api(f"issue/{ref.id}/comment"),
                params={
                    "startAt": str(start),
                    "maxResults": str(COMMENT_PAGE),
                    "orderBy": "created",
                },
            )
            embedded = answer.body if isinstance(answer.body, dict) else {}
            comments = list(embedded.get("comments") or [])
            total = int(embedded.get("total") or 0)


def _field(body: Any, name: str, upstream: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not value:
        raise PermanentUpstreamError(f"{upstream}: the answer has no {name!r}")
    return str(value)


UPSTREAM = UpstreamType("jira", JiraUpstream, JiraAdapter)
