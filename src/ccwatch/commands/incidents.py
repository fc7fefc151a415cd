"""``ccwatch classify`` and ``ccwatch incidents list|show``.

``incidents`` reads the state database directly (WAL lets it read while the daemon
writes), so it works whether the daemon runs or not. Other features add verbs to the
group with ``incidents.add_command(...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from ccwatch.classify import assess
from ccwatch.cliopts import format_option
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.model import Incident, rfc3339
from ccwatch.settings import ClassificationConfig, host_timezone
from ccwatch.severity import Severity
from ccwatch.state import Connection

T = TypeVar("T")
EXIT_FAILURE = 1
EXIT_NOT_FOUND = 3


def _context() -> Any:
    # The CLI's context object (cli.CliContext); imported lazily to avoid a cycle.
    return click.get_current_context().find_root().obj


def _load_config_if_present() -> Config | None:
    context = _context()
    path: Path = context.config_path
    if not path.exists():
        return None
    config: Config = context.load()
    return config


# --- classify ------------------------------------------------------------------------


@click.command()
@click.option("--seats", type=float, help="Seats of the component (or components.<name>.seats).")
@click.option("--unable-to-take-calls", type=float, help="Agents who cannot take calls.")
@click.option("--unable-to-login", type=float, help="Agents who cannot log in.")
@click.option(
    "--agents-expected",
    type=float,
    help="Agents expected to be logged in (default: components.<name>.staffing at --at, "
    "else the seats).",
)
@click.option("--agents-logged-in", type=float, help="Agents logged in.")
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="When, for the staffing table: HH:MM (site time zone) or an ISO 8601 time (default: now).",
)
@click.option("--calls-offered", type=float, help="Calls offered in the window.")
@click.option("--calls-rejected", type=float, help="Calls rejected in the window.")
@click.option("--down", is_flag=True, help="The component is down.")
@click.option("--component", default="acd", show_default=True, help="Component name.")
@format_option("output")
def classify(
    seats: float | None,
    unable_to_take_calls: float | None,
    unable_to_login: float | None,
    agents_expected: float | None,
    agents_logged_in: float | None,
    at_text: str | None,
    calls_offered: float | None,
    calls_rejected: float | None,
    down: bool,
    component: str,
    output: str,
) -> None:
    """Classify a case by hand: prints the severity, the production loss and the impact.

    Uses the thresholds of the config if one is found, seed 004's defaults otherwise.

    \b
    Examples: ccwatch classify --seats 100 --unable-to-take-calls 23
              ccwatch classify --seats 100 --agents-logged-in 80
              ccwatch classify --agents-logged-in 8 --at 03:00
    """
    config = _load_config_if_present()
    classification = config.classification if config else ClassificationConfig()
    zone = config.site_timezone if config else host_timezone()
    at = _parse_at(at_text, zone)
    max_severity = Severity.CRITICAL
    expected_from = ""
    if config is not None and component in config.components:
        settings = config.components[component]
        max_severity = settings.max_severity
        if seats is None and settings.seats is not None:
            seats = float(settings.seats)
        staffing = settings.staffing_table(zone)
        if agents_logged_in is not None and agents_expected is None and staffing is not None:
            agents_expected = float(staffing.expected_at_local(at.time()))
            expected_from = f"components.{component}.staffing at {at:%H:%M} {zone}"
    elif config is None and component == "reports":
        max_severity = Severity.MAJOR  # the shipped default cap (seed 004)
    values = [unable_to_take_calls, unable_to_login, agents_expected, agents_logged_in]
    values += [calls_offered, calls_rejected, seats]
    if any(v is not None and v < 0 for v in values):
        raise click.UsageError("counts cannot be negative")
    if agents_expected is not None and agents_logged_in is None:
        raise click.UsageError("--agents-expected needs --agents-logged-in")
    if at_text is not None and agents_logged_in is None:
        raise click.UsageError("--at is for the staffing table: give --agents-logged-in")
    if (calls_offered is None) != (calls_rejected is None):
        raise click.UsageError("give both --calls-offered and --calls-rejected")
    if calls_offered is not None and calls_rejected is not None and calls_rejected > calls_offered:
        raise click.UsageError("--calls-rejected cannot exceed --calls-offered")
    seat_measures = (unable_to_take_calls, unable_to_login, agents_logged_in)
    if seats is None and any(v is not None for v in seat_measures):
        raise click.UsageError(f"give --seats (or set components.{component}.seats in the config)")
    if agents_logged_in is not None and agents_expected is None:
        agents_expected, expected_from = seats, "the seats"
    thresholds = classification.thresholds
    result = assess(
        component=component,
        thresholds=thresholds,
        max_severity=max_severity,
        seats=seats,
        agents_unable_to_take_calls=unable_to_take_calls,
        agents_unable_to_login=unable_to_login,
        agents_expected=agents_expected,
        agents_logged_in=agents_logged_in,
        calls_offered=calls_offered,
        calls_rejected=calls_rejected,
        up=False if down else None,
    )
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "component": component,
                    "severity": result.severity.label,
                    "priority": result.severity.priority or None,
                    "production_loss": round(result.loss, 6),
                    "impact": result.impact,
                    "cause": result.cause,
                    "agents_expected": agents_expected,
                    "agents_expected_from": expected_from or None,
                    "thresholds": {
                        "critical_at": thresholds.critical_at,
                        "major_above": thresholds.major_above,
                        "min_calls_offered": thresholds.min_calls_offered,
                    },
                    "max_severity": max_severity.label,
                }
            )
        )
        return
    label = result.severity.label
    if result.severity:
        label = f"{label} ({result.severity.priority})"
    click.echo(f"severity: {label}")
    click.echo(f"loss:     {result.loss * 100:.1f}%")
    click.echo(f"impact:   {result.impact}")
    if expected_from:
        click.echo(f"expected: {agents_expected:g} agents ({expected_from})")
    if calls_offered is not None and calls_offered < thresholds.min_calls_offered:
        click.echo(
            f"note:     fewer than {thresholds.min_calls_offered} calls offered: a small "
            "sample counts by the lower bound of its 95 % Wilson interval, at most major"
        )


def _parse_at(text: str | None, zone: ZoneInfo) -> datetime:
    """``--at``: HH:MM today in the site zone, an ISO 8601 time (naive = site zone), or now."""
    if text is None:
        return datetime.now(zone)
    try:
        clock = time.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(datetime.now(zone).date(), clock.replace(tzinfo=None), zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not HH:MM or an ISO 8601 time (e.g. 03:00, 2026-12-01T03:00+05:30)",
            param_hint="--at",
        ) from None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


# --- incidents list / show -----------------------------------------------------------


def _with_store(fn: Callable[[Connection], T]) -> T:
    config = _context().load()
    path = config.state.path
    if config.state.backend == "sqlite" and not Path(path).exists():
        raise click.ClickException(
            f"no state database at {path} yet (the daemon creates it on its first start)"
        )
    from ccwatch.compose import open_state

    store = open_state(config.state)
    try:
        return store.run_sync(fn)
    finally:
        store.close()


@click.group("incidents")
def incidents() -> None:
    """Incidents in the state database (works while the daemon runs)."""


@incidents.command("list")
@click.option(
    "--state",
    type=click.Choice([*repository.STATES, repository.ACTIVE]),
    help="Only incidents in this state (active: not resolved).",
)
@click.option("--limit", type=int, default=100, show_default=True)
@format_option("output")
def list_command(state: str | None, limit: int, output: str) -> None:
    """List incidents, newest first."""
    found = _with_store(lambda conn: repository.list_incidents(conn, state=state, limit=limit))
    if output == "json":
        click.echo(json.dumps([i.to_api() for i in found], indent=2))
        return
    if not found:
        click.echo("no incidents" + (f" in state {state}" if state else ""))
        return
    click.echo(
        f"{'ID':<32}  {'PRI':<3}  {'SEVERITY':<8}  {'STATE':<12}  {'COMPONENT':<12}  "
        f"{'LOSS':>6}  OPENED                IMPACT"
    )
    for incident in found:
        click.echo(
            f"{incident.id:<32}  {incident.priority:<3}  {incident.severity.label:<8}  "
            f"{incident.state:<12}  {incident.component:<12}  "
            f"{incident.production_loss * 100:5.1f}%  {rfc3339(incident.opened_at):<20}  "
            f"{incident.impact}"
        )


@incidents.command("show")
@click.argument("incident_id")
@format_option("output")
def show_command(incident_id: str, output: str) -> None:
    """Show one incident with its timeline (an id prefix of 6+ characters will do)."""

    def load(conn: Connection) -> tuple[Incident | None, list[Any]]:
        incident = repository.find_by_prefix(conn, incident_id)
        if incident is None:
            return None, []
        return incident, repository.load_timeline(conn, incident.id)

    incident, timeline = _with_store(load)
    if incident is None:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    body = incident.to_api(timeline)
    if output == "json":
        click.echo(json.dumps(body, indent=2))
        return
    for key in ("id", "site", "component", "kind", "severity", "priority", "state", "impact"):
        click.echo(f"{key + ':':<18}{body[key]}")
    if body["affected_components"]:
        click.echo(f"{'also affected:':<18}{', '.join(body['affected_components'])}")
    click.echo(
        f"{'production_loss:':<18}{incident.production_loss * 100:.1f}% "
        f"(peak {incident.peak_loss * 100:.1f}%, {incident.peak_severity.label})"
    )
    for key in ("opened_at", "updated_at", "acknowledged_at", "acknowledged_by", "resolved_at"):
        if body[key] is not None:
            click.echo(f"{key + ':':<18}{body[key]}")
    for key, value in body["sla"].items():
        if value is not None:
            click.echo(f"{key + ':':<18}{value}")
    click.echo("timeline:")
    for entry in timeline:
        click.echo(
            f"  {rfc3339(entry.at)}  {entry.change:<13} {entry.severity.label:<8} "
            f"{entry.state:<12} {entry.production_loss * 100:5.1f}%  {entry.detail}"
        )


# --- incidents rca / rca-draft -----------------------------------------------------------


@incidents.command("rca")
@click.argument("incident_id")
@click.option("--delivered", help="The RCA was delivered: its URL or a short text.")
@click.option("--deferred", help="The RCA waits (e.g. for debug data): the reason.")
@click.option("--until", "until", help="With --deferred: the new due time (RFC 3339).")
@click.option("--by", "by", default=None, help="Who records it [default: your user name].")
def rca_command(
    incident_id: str, delivered: str | None, deferred: str | None, until: str | None, by: str | None
) -> None:
    """Record an RCA: --delivered stops the RCA clock; --deferred REASON --until TIME moves it.

    Goes through the running daemon's API when one listens (POST /api/incidents/<id>/rca
    with the token of http.token_env/_file), else through an incident service of its own.
    """
    import getpass

    from ccwatch.api.tickets import parse_instant
    from ccwatch.commands.daemon import change_incident

    if (delivered is None) == (deferred is None):
        raise click.UsageError("give either --delivered URL_OR_TEXT or --deferred REASON --until")
    if deferred is not None and until is None:
        raise click.UsageError("--deferred needs --until TIME (e.g. 2026-11-25T10:00:00Z)")
    config = _context().load()
    who = by or getpass.getuser()
    found = _with_store(lambda conn: repository.find_by_prefix(conn, incident_id))
    if found is None:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    payload: dict[str, Any] = {"by": who}
    if delivered is not None:
        payload["delivered"] = delivered
    else:
        payload.update(deferred=deferred, until=until)

    def local(service: Any) -> Any:
        if delivered is not None:
            return service.rca_delivered(found.id, delivered, who)
        assert deferred is not None and until is not None
        return service.rca_deferred(found.id, deferred, parse_instant(until), who)

    change_incident(config, found.id, "rca", payload, "the RCA", local)
    if delivered is not None:
        click.echo(f"incident {found.id}: RCA delivered ({delivered}); the RCA clock stopped")
    else:
        click.echo(f"incident {found.id}: RCA deferred until {until}: {deferred}")


@incidents.command("exempt")
@click.argument("incident_id")
@click.option("--reason", help="Why it is outside the SLA (e.g. customer hardware).")
@click.option(
    "--lift", is_flag=True, help="Put it back inside the SLA: its clocks resume (--reason: why)."
)
@click.option("--by", "by", default=None, help="Who records it [default: your user name].")
def exempt_command(incident_id: str, reason: str | None, lift: bool, by: str | None) -> None:
    """Take an incident out of the SLA: its clocks pause, event sla_exempt goes upstream.
    With --lift, put it back: its clocks resume without counting the exempt span (event
    sla_exempt_lifted).

    Goes through the running daemon's API when one listens (POST
    /api/incidents/<id>/exempt with the token of http.token_env/_file), else through an
    incident service of its own.
    """
    import getpass

    from ccwatch.commands.daemon import change_incident

    if not lift and not reason:
        raise click.UsageError("give --reason WHY (or --lift to end an exemption)")
    config = _context().load()
    who = by or getpass.getuser()
    found = _with_store(lambda conn: repository.find_by_prefix(conn, incident_id))
    if found is None:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    if lift:
        change_incident(
            config,
            found.id,
            "exempt",
            {"lift": True, "reason": reason or "", "by": who},
            "lifting the exemption",
            lambda service: service.lift_sla_exemption(found.id, who, reason or ""),
        )
        click.echo(
            f"incident {found.id}: back inside the SLA; its clocks resume (the exempt span "
            "is not counted)"
        )
        return
    assert reason is not None
    change_incident(
        config,
        found.id,
        "exempt",
        {"reason": reason, "by": who},
        "the exemption",
        lambda service: service.exempt_sla(found.id, reason, who),
    )
    click.echo(f"incident {found.id}: outside the SLA ({reason}); its SLA clocks are paused")


@incidents.command("rca-draft")
@click.argument("incident_id")
def rca_draft_command(incident_id: str) -> None:
    """Print the RCA draft of an incident (Markdown): timeline, loss, SLA, escalations."""
    import time

    from ccwatch.tickets.service import load_rca_draft

    config = _context().load()
    now = time.time()
    found = _with_store(lambda conn: load_rca_draft(conn, config.sla, incident_id, now))
    if found is None:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    click.echo(found[1], nl=False)
