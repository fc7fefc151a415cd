"""``email``: a ticket by e-mail to a support mailbox (seed 000's P1 address).

Sent through the top-level ``email:`` relay (STARTTLS/SSL and auth as configured). The
subject names severity, site, component and the incident's dedup key, e.g.
``[ccwatch P1 CRITICAL] blr1/acd opened: 23 of 100 agents cannot take calls (23.0%)
[ccwatch:blr1:acd:…]``, so help desks that thread by subject keep one ticket. The
``open`` mail's Message-ID is derived from the dedup key and every later mail of the
incident refers to it (In-Reply-To/References), so mail clients thread too; a re-send
after a crash has the same Message-ID. Plain text and HTML bodies.
"""

from __future__ import annotations

import html
import json
import re
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

from pydantic import Field

from ccwatch.errors import PermanentUpstreamError
from ccwatch.incidents.vocabulary import Event
from ccwatch.tickets.adapters.base import (
    Adapter,
    AdapterContext,
    TicketEvent,
    UpstreamBase,
    UpstreamType,
)


class EmailUpstream(UpstreamBase):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="support mailbox(es), e.g. the P1 address")
    cc: list[str] = Field(default_factory=list)
    subject_prefix: str = "ccwatch"


_VERBS: dict[Event, str] = {
    Event.OPEN: "opened",
    Event.ESCALATE: "escalated",
    Event.DEESCALATE: "de-escalated",
    Event.UPDATE: "updated",
    Event.ACKNOWLEDGE: "acknowledged",
    Event.NODATA: "no data",
    Event.DATA_RESUMED: "data resumed",
    Event.SLA_WARNING: "SLA warning",
    Event.SLA_BREACH: "SLA breached",
    Event.ESCALATION_LEVEL: "escalated",
    Event.RCA_DUE: "RCA overdue",
    Event.RESOLVE: "resolved",
    Event.REOPEN: "reopened",
    Event.EXPIRE: "expired",
    Event.REMINDER: "reminder",
    Event.RCA_DELIVERED: "RCA delivered",
    Event.RCA_DEFERRED: "RCA deferred",
    Event.SLA_EXEMPT: "SLA exempt",
    Event.SLA_EXEMPT_LIFTED: "SLA exemption lifted",
    Event.WAITING_ON_CUSTOMER: "waiting on customer",
    Event.CUSTOMER_REPLIED: "customer replied",
}


def message_id(dedup_key: str, seq: int | None = None) -> str:
    """``<ccwatch.blr1.acd.<id>[.seq]@ccwatch>``: the root (seq None) is the open mail."""
    local = re.sub(r"[^A-Za-z0-9.-]", ".", dedup_key)
    return f"<{local}.{seq}@ccwatch>" if seq is not None else f"<{local}@ccwatch>"


def subject(event: TicketEvent, prefix: str) -> str:
    body = event.body
    verb = _VERBS[event.kind] if event.kind is not None else event.event.replace("_", " ")
    if isinstance(body.get("escalation"), dict):
        verb = f"escalated to {body['escalation'].get('name')}"
    tag = f"[{prefix} {body.get('priority') or ''} {event.severity.upper()}]".replace("  ", " ")
    where = f"{body.get('site')}/{body.get('component')}"
    impact = str(body.get("impact") or body.get("summary") or "")
    return f"{tag} {where} {verb}: {impact} [{event.dedup_key}]"


def _rows(event: TicketEvent) -> list[tuple[str, str]]:
    body = event.body
    sla = body.get("sla") or {}
    rows = [
        ("Event", f"{event.event} (#{event.seq})"),
        ("Severity", f"{event.severity} ({body.get('priority')})"),
        ("State", str(body.get("state"))),
        ("Site / component", f"{body.get('site')} / {body.get('component')}"),
        ("Impact", str(body.get("impact"))),
        ("Production loss", _percent(body.get("production_loss"))),
        ("Opened at", str(body.get("opened_at"))),
        ("First response due", str(sla.get("first_response_due") or "-")),
        ("Resolution due", str(sla.get("resolution_due") or "-")),
        ("RCA due", str(sla.get("rca_due") or "-")),
        ("Reference", event.dedup_key),
    ]
    if body.get("escalation"):
        escalation = body["escalation"]
        rows.insert(1, ("Escalation", f"{escalation.get('name')} ({escalation.get('trigger')})"))
    return rows


def _percent(value: Any) -> str:
    return f"{float(value) * 100:.1f}%" if isinstance(value, int | float) else "-"


def text_body(event: TicketEvent) -> str:
    lines = [f"{label}: {value}" for label, value in _rows(event)]
    diagnostics = event.body.get("diagnostics") or {}
    if diagnostics.get("host"):
        lines += ["", "Host:", json.dumps(diagnostics["host"], indent=2, sort_keys=True)]
    if diagnostics.get("log_excerpt"):
        lines += ["", "Log excerpt:", *[f"  {line}" for line in diagnostics["log_excerpt"]]]
    lines += ["", "Reply to this mail to keep the thread; the reference above identifies it."]
    return "\n".join(lines) + "\n"


def html_body(event: TicketEvent) -> str:
    cells = "".join(
        f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in _rows(event)
    )
    diagnostics = event.body.get("diagnostics") or {}
    extra = ""
    if diagnostics.get("host"):
        host = html.escape(json.dumps(diagnostics["host"], indent=2, sort_keys=True))
        extra += f"<h3>Host</h3><pre>{host}</pre>"
    if diagnostics.get("log_excerpt"):
        excerpt = html.escape("\n".join(diagnostics["log_excerpt"]))
        extra += f"<h3>Log excerpt</h3><pre>{excerpt}</pre>"
    title = html.escape(str(event.body.get("summary") or event.dedup_key))
    return (
        f"<!doctype html><html><body><h2>{title}</h2>"
        f"<table cellpadding='4'>{cells}</table>{extra}</body></html>"
    )


def build_message(event: TicketEvent, config: EmailUpstream, to: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(event, config.subject_prefix)
    message["To"] = ", ".join(to)
    if config.cc:
        message["Cc"] = ", ".join(config.cc)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    root = message_id(event.dedup_key)
    if event.event == "open":
        message["Message-ID"] = root
    else:
        message["Message-ID"] = message_id(event.dedup_key, event.seq)
        message["In-Reply-To"] = root
        message["References"] = root
    message["X-Ccwatch-Dedup-Key"] = event.dedup_key
    message["X-Ccwatch-Idempotency-Key"] = event.idempotency_key
    message.set_content(text_body(event))
    message.add_alternative(html_body(event), subtype="html")
    return message


class EmailAdapter(Adapter):
    """Mails ``to``/``cc``; with ``escalation_targets`` it mails the addresses an SLA
    escalation step names instead (the built-in ``escalation-email`` upstream)."""

    EVENTS = {event: f"mail: {verb}" for event, verb in _VERBS.items()}

    def __init__(
        self, config: EmailUpstream, context: AdapterContext, escalation_targets: bool = False
    ) -> None:
        self.name = config.upstream_name
        self.config = config
        self.context = context
        self.escalation_targets = escalation_targets

    def recipients(self, event: TicketEvent) -> list[str]:
        if self.escalation_targets:
            escalation = event.body.get("escalation") or {}
            return [str(address) for address in escalation.get("email") or []]
        return list(self.config.to)

    async def deliver(self, event: TicketEvent) -> None:
        if self.context.email is None:
            raise PermanentUpstreamError(f"{self.name}: no `email:` relay configured")
        to = self.recipients(event)
        if not to:
            return
        from ccwatch.notify.email import send_email  # the SMTP client, on first send

        await send_email(self.context.email, build_message(event, self.config, to))


UPSTREAM = UpstreamType("email", EmailUpstream, EmailAdapter)
