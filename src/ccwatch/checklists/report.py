"""The checklist report: text (terminal and e-mail), JSON, and HTML (e-mail).

Failures come first, each with its measured value, the threshold and a hint of what to
do; then warnings, skipped checks and the checks that passed. The HTML uses inline
styles and tables only, no external assets, so it renders the same in Outlook, Gmail
and Thunderbird.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, tzinfo
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ccwatch.checklists.result import ChecklistRun, CheckResult, Status

_LABEL = {
    Status.FAIL: "FAIL",
    Status.ERROR: "ERROR",
    Status.WARN: "WARN",
    Status.SKIPPED: "SKIPPED",
    Status.OK: "OK",
}
_COLOR = {  # background, text
    Status.FAIL: ("#c62828", "#ffffff"),
    Status.ERROR: ("#6a1b9a", "#ffffff"),
    Status.WARN: ("#ef8f00", "#ffffff"),
    Status.SKIPPED: ("#9e9e9e", "#ffffff"),
    Status.OK: ("#2e7d32", "#ffffff"),
}
_SUBJECT_ORDER = (Status.FAIL, Status.ERROR, Status.WARN)


def count_phrase(run: ChecklistRun) -> str:
    """'2 FAIL, 1 WARN, 14 OK' (statuses that occurred; OK always), or 'all 17 OK'."""
    counts = run.counts
    parts = [f"{counts[s]} {_LABEL[s]}" for s in _SUBJECT_ORDER if counts[s]]
    if not parts and not counts[Status.SKIPPED]:
        return f"all {counts[Status.OK]} OK"
    parts.append(f"{counts[Status.OK]} OK")
    if counts[Status.SKIPPED]:
        parts.append(f"{counts[Status.SKIPPED]} SKIPPED")
    return ", ".join(parts)


def subject(run: ChecklistRun) -> str:
    return f"[ccwatch] {run.site} {run.checklist} checklist: {count_phrase(run)}"


def verdict(run: ChecklistRun) -> str:
    """'3 of 17 checks need attention', or that nothing does."""
    counts = run.counts
    problems = counts[Status.FAIL] + counts[Status.ERROR] + counts[Status.WARN]
    if problems:
        return f"{problems} of {len(run.results)} checks need attention"
    return "every check passed" if not counts[Status.SKIPPED] else "no problems found"


def summary_line(run: ChecklistRun, zone: tzinfo = UTC) -> str:
    when = datetime.fromtimestamp(run.started_at, zone).strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{run.site} {run.checklist} checklist, {when}: {verdict(run)} "
        f"({count_phrase(run)}; ran in {run.duration_seconds:.1f} s)"
    )


def render_text(run: ChecklistRun, zone: tzinfo = UTC) -> str:
    lines = [summary_line(run, zone), ""]
    width = max((len(r.id) + len(r.type) + 3 for r in run.results), default=0)
    for result in run.ordered():
        title = f"{result.id} ({result.type})"
        lines.append(f"{_LABEL[result.status]:<8}{title:<{width}}  {result.value}")
        if result.status is not Status.OK and result.status is not Status.SKIPPED:
            if result.threshold:
                lines.append(f"{'':8}threshold: {result.threshold}")
            if result.hint:
                lines.append(f"{'':8}what to do: {result.hint}")
            lines.extend(f"{'':8}| {line}" for line in result.detail.splitlines())
    return "\n".join(lines) + "\n"


def render_json(run: ChecklistRun) -> str:
    return json.dumps(run.as_dict(), indent=2, default=str)


# --- HTML ---------------------------------------------------------------------------

_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_MONO = "font-family:Consolas,'DejaVu Sans Mono',Menlo,monospace"


def _badge(status: Status, text: str | None = None) -> str:
    background, color = _COLOR[status]
    return (
        f'<span style="display:inline-block;min-width:52px;padding:2px 8px;border-radius:3px;'
        f"background:{background};color:{color};font-size:12px;font-weight:bold;"
        f'text-align:center;letter-spacing:0.5px">{html.escape(text or _LABEL[status])}</span>'
    )


def _problem_card(result: CheckResult) -> str:
    background, _ = _COLOR[result.status]
    e = html.escape
    rows = [
        f'<tr><td style="padding:0 0 6px 0">{_badge(result.status)}&nbsp; '
        f'<b style="font-size:15px;color:#212121">{e(result.id)}</b> '
        f'<span style="color:#757575;font-size:13px">{e(result.type)}</span>'
        + (
            f'<div style="color:#616161;font-size:13px;margin-top:2px">'
            f"{e(result.description)}</div>"
            if result.description
            else ""
        )
        + "</td></tr>",
        _field("Measured", result.value, bold=True),
    ]
    if result.threshold:
        rows.append(_field("Threshold", result.threshold))
    if result.hint:
        rows.append(_field("What to do", result.hint))
    if result.detail:
        rows.append(
            f'<tr><td style="padding:6px 0 0 0"><pre style="margin:0;padding:8px;'
            f"background:#f5f5f5;border:1px solid #e0e0e0;font-size:12px;{_MONO};"
            f'white-space:pre-wrap;color:#424242">{e(result.detail)}</pre></td></tr>'
        )
    return (
        f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'style="margin:0 0 12px 0;border:1px solid #e0e0e0;border-left:5px solid {background};'
        f'background:#ffffff"><tr><td style="padding:12px 14px">'
        f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0">'
        f"{''.join(rows)}</table></td></tr></table>"
    )


def _field(label: str, value: str, bold: bool = False) -> str:
    weight = "bold" if bold else "normal"
    return (
        f'<tr><td style="padding:2px 0;font-size:14px;color:#424242">'
        f'<span style="display:inline-block;width:96px;color:#757575">{html.escape(label)}</span>'
        f'<span style="font-weight:{weight}">{html.escape(value)}</span></td></tr>'
    )


def _passed_row(result: CheckResult) -> str:
    e = html.escape
    return (
        f'<tr><td style="padding:6px 8px;border-bottom:1px solid #eeeeee;width:70px">'
        f"{_badge(result.status)}</td>"
        f'<td style="padding:6px 8px;border-bottom:1px solid #eeeeee;font-size:14px;'
        f'color:#212121;white-space:nowrap">{e(result.id)}<br>'
        f'<span style="color:#9e9e9e;font-size:12px">{e(result.type)}</span></td>'
        f'<td style="padding:6px 8px;border-bottom:1px solid #eeeeee;font-size:13px;'
        f'color:#616161">{e(result.value)}</td></tr>'
    )


def render_html(run: ChecklistRun, zone: tzinfo = UTC) -> str:
    e = html.escape
    counts = run.counts
    problems = [r for r in run.ordered() if r.status in (Status.FAIL, Status.ERROR, Status.WARN)]
    rest = [r for r in run.ordered() if r not in problems]
    worst = problems[0].status if problems else Status.OK
    header_color = _COLOR[worst][0]
    chips = " ".join(
        _badge(status, f"{counts[status]} {_LABEL[status]}")
        for status in (Status.FAIL, Status.ERROR, Status.WARN, Status.OK, Status.SKIPPED)
        if counts[status] or status is Status.OK
    )
    sections = []
    if problems:
        sections.append(_heading("Needs attention") + "".join(map(_problem_card, problems)))
    if rest:
        sections.append(
            _heading("Passed" if not counts[Status.SKIPPED] else "Passed and skipped")
            + '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'style="border:1px solid #e0e0e0;background:#ffffff">'
            + "".join(map(_passed_row, rest))
            + "</table>"
        )
    when = datetime.fromtimestamp(run.started_at, zone).strftime("%A %d %B %Y, %H:%M %Z")
    return (
        "<!DOCTYPE html>"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(subject(run))}</title></head>"
        f'<body style="margin:0;padding:0;background:#f2f3f5;{_FONT}">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        'style="background:#f2f3f5"><tr><td align="center" style="padding:20px 10px">'
        '<table role="presentation" width="640" cellpadding="0" cellspacing="0" '
        'style="max-width:640px;width:100%">'
        f'<tr><td style="background:{header_color};padding:18px 20px;color:#ffffff">'
        f'<div style="font-size:13px;opacity:0.9;letter-spacing:0.5px">CCWATCH · '
        f"{e(run.site.upper())}</div>"
        f'<div style="font-size:22px;font-weight:bold;margin-top:4px">'
        f"{e(run.checklist.capitalize())} checklist: {e(count_phrase(run))}</div>"
        f'<div style="font-size:13px;margin-top:6px;opacity:0.9">{e(when)}</div></td></tr>'
        f'<tr><td style="background:#ffffff;padding:14px 20px;border:1px solid #e0e0e0;'
        f'border-top:0;font-size:15px;color:#424242"><b>{e(verdict(run).capitalize())}</b>'
        f'<span style="color:#757575">, ran in {run.duration_seconds:.1f} s.</span>'
        f'<div style="margin-top:10px">{chips}</div></td></tr>'
        f'<tr><td style="padding:16px 0 0 0">{"".join(sections)}</td></tr>'
        '<tr><td style="padding:14px 4px;font-size:12px;color:#9e9e9e">'
        f"Sent by ccwatch on {e(run.site)}. Run it again with "
        f'<span style="{_MONO}">ccwatch checklist run {e(run.checklist)}</span>.'
        "</td></tr></table></td></tr></table></body></html>"
    )


def _heading(text: str) -> str:
    return (
        f'<div style="font-size:13px;font-weight:bold;color:#616161;text-transform:uppercase;'
        f'letter-spacing:1px;margin:4px 0 8px 2px">{html.escape(text)}</div>'
    )


def email_message(
    run: ChecklistRun, sender: str, recipients: list[str], zone: tzinfo = UTC
) -> EmailMessage:
    """multipart/alternative: the text report, then the HTML one."""
    message = EmailMessage()
    message["Subject"] = subject(run)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(run.started_at, localtime=False)
    message["Message-ID"] = make_msgid("ccwatch")
    message["X-Ccwatch-Checklist"] = run.checklist
    message.set_content(render_text(run, zone))
    message.add_alternative(render_html(run, zone), subtype="html")
    return message
