"""The RCA draft: Markdown built from an incident, its timeline and its history (pure).

Written for incidents that need an RCA (critical ones; seed 004) when they resolve,
printed by ``ccwatch incidents rca-draft ID``, served by
``GET /api/incidents/<id>/rca-draft`` and attached to the ``rca_due`` event. It is a
starting point for the person writing the RCA: every figure comes from what ccwatch
recorded, and says so when it could not know.

Loss over time is the timeline's loss figures held until the next entry (the record's
figure between entries is refreshed at most every ``loss_refresh``), so the average
and the lost production are estimates from the recorded changes.

Calls rejected over the incident come from ``data["calls"]``, which the lifecycle keeps:
the metrics window's counts (``classification.window``) taken once per window while the
incident was open and summed, so the windows do not overlap; the draft says it is an
estimate (the first window reaches back before the open, calls after the last whole
window are not in it). The per-minute ``loss_history`` keeps losses, not calls, so it
cannot give this figure. An incident without that record (older, or no calls reported)
shows the last window's figure, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from ccwatch.incidents.model import Incident, TimelineEntry, rfc3339
from ccwatch.severity import Severity

SIMILAR_LOOKBACK = timedelta(days=90)


@dataclass(frozen=True)
class ClockOutcome:
    """One SLA clock of the incident: its due time and whether it was met."""

    kind: str
    due_at: float | None  # None: held without an end (no due time)
    stopped_at: float | None
    breached: bool


def needs_rca(incident: Incident) -> bool:
    return incident.peak_severity >= Severity.CRITICAL or incident.severity >= Severity.CRITICAL


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def loss_integral(incident: Incident, timeline: Sequence[TimelineEntry], end: float) -> float:
    """Loss x seconds from the open to ``end``, the loss held between timeline entries."""
    total = 0.0
    entries = [e for e in timeline if e.at <= end]
    for entry, following in zip(entries, [*entries[1:], None], strict=True):
        until = following.at if following is not None else end
        if entry.change in ("nodata", "expired") or entry.state in ("nodata", "resolved"):
            continue  # silent or over: nothing measured
        total += entry.production_loss * max(0.0, until - entry.at)
    return total


_HOLDS = (
    ("sla_exempt_spans", "sla_exempt_at", "SLA exemption (every clock)"),
    ("nodata_spans", "nodata_since", "no data (first response and resolution)"),
    ("waiting_spans", "waiting_since", "waiting on the customer (resolution)"),
)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _hold_lines(incident: Incident) -> list[str]:
    """The spans the SLA clocks did not count (README, "SLA holds")."""
    lines: list[str] = []
    if incident.data.get("in_maintenance"):
        window = incident.data.get("maintenance")
        reason = window.get("reason") if isinstance(window, dict) else None
        lines.append(f"- maintenance window ({reason or 'no reason given'}): clocks from its end")
    for spans_key, open_key, what in _HOLDS:
        spans = incident.data.get(spans_key)
        for span in spans if isinstance(spans, list) else []:
            if isinstance(span, list) and len(span) == 2:
                start, end = _number(span[0]), _number(span[1])
                if start is not None and end is not None:
                    lines.append(
                        f"- {what}: {rfc3339(start)} to {rfc3339(end)} ({_duration(end - start)})"
                    )
        since = _number(incident.data.get(open_key))
        if since is not None and (open_key != "nodata_since" or incident.state != "resolved"):
            lines.append(f"- {what}: since {rfc3339(since)}")
    return lines


def _calls_lines(incident: Incident) -> list[str]:
    calls = incident.data.get("calls")
    if isinstance(calls, dict) and calls.get("windows"):
        window = _duration(float(calls.get("window_s") or 0))
        count = int(calls["windows"])
        return [
            f"- Calls rejected over the incident: about {calls.get('rejected', 0):g} of "
            f"{calls.get('offered', 0):g} offered (estimated: the {window} metrics window "
            f"taken once per window while the incident was open, {count} window(s) summed; "
            "the first reaches back before the open, calls after the last whole window "
            "are not in it)",
            f"- Worst {window} window: {calls.get('peak_rejected', 0):g} of "
            f"{calls.get('peak_offered', 0):g} calls rejected",
        ]
    metrics = incident.metrics
    rejected, offered = metrics.get("calls_rejected"), metrics.get("calls_offered")
    if isinstance(rejected, int | float) and not isinstance(rejected, bool):
        of = f" of {offered:g} offered" if isinstance(offered, int | float) else ""
        return [
            f"- Calls rejected in the last metrics window: {rejected:g}{of} (no count over "
            "the whole incident was recorded)"
        ]
    return ["- Calls rejected: not reported by the metrics"]


def rca_draft(
    incident: Incident,
    timeline: Sequence[TimelineEntry],
    similar: Sequence[Incident] = (),
    clocks: Sequence[ClockOutcome] = (),
    now: float | None = None,
) -> str:
    """The draft in Markdown (see the module docstring)."""
    end = (
        incident.resolved_at or incident.updated_at
        if now is None
        else (incident.resolved_at or now)
    )
    duration = max(0.0, end - incident.opened_at)
    integral = loss_integral(incident, timeline, end)
    average = integral / duration if duration > 0 else incident.peak_loss
    metrics = incident.metrics
    seats = metrics.get("seats")
    peak_at = next(
        (e.at for e in timeline if e.severity == incident.peak_severity and e.at <= end),
        incident.opened_at,
    )
    lines = [
        f"# RCA draft: {incident.component} at {incident.site}, "
        f"{incident.peak_severity.label} ({incident.peak_severity.priority})",
        "",
        f"Incident `{incident.id}` (state {incident.state}). Draft written by ccwatch from "
        "its records; edit before delivering.",
        "",
        "## Summary",
        "",
        f"- Impact: {incident.impact}",
        f"- Start: {rfc3339(incident.opened_at)}",
        f"- Peak: {incident.peak_severity.label} from {rfc3339(peak_at)}, "
        f"peak loss {incident.peak_loss * 100:.1f}%",
        f"- End: {rfc3339(incident.resolved_at) or 'not resolved (' + incident.state + ')'}",
        f"- Duration: {_duration(duration)}",
        f"- Average loss: {average * 100:.1f}% (time-weighted over the recorded changes)",
    ]
    if isinstance(seats, int | float) and not isinstance(seats, bool) and seats > 0:
        agent_minutes = integral * float(seats) / 60.0
        lines.append(
            f"- Estimated lost production: {agent_minutes:.0f} agent-minutes unable to work "
            f"({seats:g} seats x loss over {_duration(duration)})"
        )
    else:
        lines.append("- Estimated lost production: unknown (no seat count in the metrics)")
    lines += _calls_lines(incident)
    reopens = incident.data.get("reopen_count")
    if reopens:
        lines.append(f"- Recurred {reopens} time(s) within the reopen window")
    lines += ["", "## SLA", ""]
    if clocks:
        for clock in clocks:
            due = rfc3339(clock.due_at) if clock.due_at is not None else "none while held"
            if clock.breached:
                verdict = "breached"
            elif clock.stopped_at is None:
                verdict = "not met yet, running"
            else:
                verdict = "met"
            stopped = f", stopped {rfc3339(clock.stopped_at)}" if clock.stopped_at else ""
            lines.append(f"- {clock.kind.replace('_', ' ')}: {verdict} (due {due}{stopped})")
    else:
        lines.append("- no SLA clocks for this severity")
    lines += ["", "### Not counted by the SLA clocks", ""]
    lines += _hold_lines(incident) or ["- nothing held"]
    escalations = [e for e in timeline if e.change in ("sla_escalation", "sla_breach", "reminder")]
    lines += ["", "## Escalations sent", ""]
    lines += [f"- {rfc3339(e.at)} {e.change}: {e.detail}" for e in escalations] or ["- none"]
    acks = [e for e in timeline if e.change == "acknowledged"]
    lines += ["", "## Acknowledgements", ""]
    lines += [f"- {rfc3339(e.at)} {e.detail}" for e in acks] or ["- none"]
    lines += ["", "## Diagnostics at open", ""]
    if metrics:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(metrics.items()))
        lines.append(f"- metrics: {shown}")
    diagnostics = incident.data.get("diagnostics")
    if isinstance(diagnostics, dict) and diagnostics:
        lines.append(f"- gathered: {', '.join(sorted(diagnostics))}")
    if not metrics and not diagnostics:
        lines.append("- none recorded")
    lines += ["", "## Timeline", "", "| at (UTC) | change | severity | state | loss | detail |"]
    lines.append("|---|---|---|---|---|---|")
    for entry in timeline:
        detail = entry.detail.replace("|", "\\|")
        lines.append(
            f"| {rfc3339(entry.at)} | {entry.change} | {entry.severity.label} | {entry.state} "
            f"| {entry.production_loss * 100:.1f}% | {detail} |"
        )
    lines += ["", "## Similar incidents (same component, last 90 days)", ""]
    since = incident.opened_at - SIMILAR_LOOKBACK.total_seconds()
    others = [i for i in similar if i.id != incident.id and i.opened_at >= since]
    lines += [
        f"- {rfc3339(i.opened_at)} `{i.id[:8]}` {i.peak_severity.label} ({i.state}): {i.impact}"
        for i in sorted(others, key=lambda i: i.opened_at, reverse=True)
    ] or ["- none"]
    lines += ["", "## Root cause", "", "_to be written_", "", "## Corrective actions", ""]
    lines.append("_to be written_")
    return "\n".join(lines) + "\n"
