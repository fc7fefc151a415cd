"""The one event vocabulary: everything an upstream can be told about an incident.

Every outbox row carries one ``Event``; every adapter maps every member explicitly (a
deliberate "ignore" is a mapping too), and a test fails when a member is added that some
adapter does not map. Timeline entries name a ``change`` (what happened, for people);
``EVENT_OF_CHANGE`` says which event each lifecycle change sends. See
docs/architecture.md, "Event vocabulary".
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    OPEN = "open"  # an incident opened (or a job raised one)
    ESCALATE = "escalate"  # severity went up
    DEESCALATE = "deescalate"  # severity went down, still an incident
    UPDATE = "update"  # a change of facts that needs no action (e.g. more components affected)
    ACKNOWLEDGE = "acknowledge"  # someone took it (stops the first-response clock)
    NODATA = "nodata"  # the component went silent: neither resolved nor dropped
    DATA_RESUMED = "data_resumed"  # telemetry of a silent component is back
    SLA_WARNING = "sla_warning"  # an SLA clock is about to run out
    SLA_BREACH = "sla_breach"  # an SLA clock ran out
    ESCALATION_LEVEL = "escalation_level"  # an escalation level was notified
    RCA_DUE = "rca_due"  # the RCA clock ran out
    RESOLVE = "resolve"  # the incident is over
    REOPEN = "reopen"  # the fault came back within reopen_window of its resolve
    EXPIRE = "expire"  # closed after auto_close_after in nodata (state expired)
    REMINDER = "reminder"  # still unacknowledged critical: re-sent every repeat_interval
    RCA_DELIVERED = "rca_delivered"  # the RCA was delivered (stops the RCA clock)
    RCA_DEFERRED = "rca_deferred"  # the RCA waits (e.g. for debug data): new due time
    SLA_EXEMPT = "sla_exempt"  # outside the SLA (e.g. customer hardware): clocks paused
    SLA_EXEMPT_LIFTED = "sla_exempt_lifted"  # back inside the SLA: clocks resume
    WAITING_ON_CUSTOMER = "waiting_on_customer"  # the desk says the vendor waits on us
    CUSTOMER_REPLIED = "customer_replied"  # no longer waiting on us: resolution clock resumes


# Lifecycle changes (timeline names) and the event each sends; None: recorded only.
EVENT_OF_CHANGE: dict[str, Event | None] = {
    "opened": Event.OPEN,
    "escalated": Event.ESCALATE,
    "de-escalated": Event.DEESCALATE,
    "nodata": Event.NODATA,
    "data resumed": Event.DATA_RESUMED,
    "acknowledged": Event.ACKNOWLEDGE,
    "resolved": Event.RESOLVE,
    "sla_breach": Event.SLA_BREACH,
    "reopened": Event.REOPEN,
    "expired": Event.EXPIRE,
    "reminder": Event.REMINDER,
    "rca_delivered": Event.RCA_DELIVERED,
    "rca_deferred": Event.RCA_DEFERRED,
    "sla_exempt": Event.SLA_EXEMPT,
    "sla_exempt_lifted": Event.SLA_EXEMPT_LIFTED,
    "waiting_on_customer": Event.WAITING_ON_CUSTOMER,
    "customer_replied": Event.CUSTOMER_REPLIED,
    # Opened inside a maintenance window and still active when it ended: the deferred
    # open, sent then (its body carries the true start time).
    "maintenance_ended": Event.OPEN,
    # A dependant's fault joined this incident (one ticket per fault): the ticket learns
    # the wider scope; nobody is paged again.
    "affected": Event.UPDATE,
    "loss": None,  # the loss figure moved: the record follows, nobody is told
    "refreshed": None,  # a job reported the same finding again
    "sla_due": None,  # due times (re)computed
    "rca_draft": None,  # the RCA draft was written on resolve (ccwatch incidents rca-draft)
    "ticket_dead": None,  # an upstream refused an event for good (shown to the operator)
    # What an upstream (a service desk) says of its ticket, as a timeline note:
    # ``IncidentService.note(id, "upstream_status", detail="rt:ticket 42: open")``.
    "upstream_status": None,
    "diagnostics": None,  # diagnostics attached to a pending open event
}

# Changes that write no timeline entry (they refresh the record only).
SILENT_CHANGES = frozenset({"loss", "refreshed", "sla_due", "diagnostics"})

# Events routed by the incident's current severity only; the others also reach the
# upstreams that wanted its peak severity (so whoever got the open also gets the end).
ROUTED_BY_CURRENT_SEVERITY = frozenset({Event.OPEN, Event.ESCALATE})
