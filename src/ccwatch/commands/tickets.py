"""``ccwatch incidents ack`` and ``ccwatch tickets list|retry``.

``ack`` is an incident change, so it goes through an incident service: the running
daemon's (over its API) or, when none runs, one of its own. ``tickets list|retry`` read
and re-queue outbox rows in the state database directly (SQLite WAL lets them work beside
the daemon, whose dispatcher picks re-queued rows up within its poll interval).
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable
from typing import TypeVar

import click

from ccwatch.cliopts import format_option
from ccwatch.commands.daemon import change_incident
from ccwatch.config import Config
from ccwatch.incidents import repository
from ccwatch.incidents.model import rfc3339
from ccwatch.incidents.repository import outbox_rows, retry_dead
from ccwatch.state import Connection, StateStore
from ccwatch.tickets import links
from ccwatch.tickets.links import TicketLink

T = TypeVar("T")
EXIT_FAILURE = 1
EXIT_NOT_FOUND = 3


def _config() -> Config:
    # The root context object is cli.CliContext (not imported: cli.py imports this
    # module, and under ``python -m ccwatch.cli`` it is ``__main__``).
    config: Config = click.get_current_context().find_root().obj.load()
    return config


def _with_store(fn: Callable[[Connection], T]) -> T:
    from ccwatch.compose import open_state

    store: StateStore = open_state(_config().state)
    try:
        return store.run_sync(fn)
    finally:
        store.close()


@click.command("ack")
@click.argument("incident_id")
@click.option("--by", "by", default=None, help="Who acknowledges [default: your user name].")
def ack_command(incident_id: str, by: str | None) -> None:
    """Acknowledge an incident: stops its first-response SLA clock.

    Goes through the running daemon's API when one listens on http.listen (with the
    token of http.token_env/_file), else writes through an incident service of its own.
    """
    config = _config()
    who = by or getpass.getuser()
    found = _with_store(lambda conn: repository.find_by_prefix(conn, incident_id))
    if found is None:
        click.echo(f"no incident with id {incident_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    answer = change_incident(
        config,
        found.id,
        "ack",
        {"by": who},
        "the acknowledgement",
        lambda service: service.acknowledge(found.id, who),
    )
    if isinstance(answer, dict):
        by_name, at = answer.get("acknowledged_by"), answer.get("acknowledged_at")
    else:
        by_name, at = answer.acknowledged_by, rfc3339(answer.acknowledged_at)
    click.echo(f"incident {found.id} acknowledged by {by_name} at {at}")


@click.group("tickets")
def tickets_group() -> None:
    """Ticket events in the outbox: what was delivered upstream, what waits, what failed."""


@tickets_group.command("list")
@click.option("--incident", "incident_id", help="Only events of this incident.")
@click.option("--dead", is_flag=True, help="Only dead-lettered events (refused for good).")
@click.option("--pending", is_flag=True, help="Only events still waiting to be delivered.")
@click.option(
    "--desk", is_flag=True, help="Only the service desks' tickets (id, URL, status, last poll)."
)
@click.option("--limit", type=int, default=50, show_default=True)
@format_option("output")
def list_command(
    incident_id: str | None, dead: bool, pending: bool, desk: bool, limit: int, output: str
) -> None:
    """The service desks' tickets (per incident and upstream: id, URL, the status last
    seen upstream and when it was polled), then the outbox events, newest first, with
    their delivery state and last error. ``--format json`` prints the events (or, with
    ``--desk``, the desk tickets)."""
    status = "dead" if dead else "pending" if pending else None
    if desk or not (dead or pending):
        tickets = _with_store(lambda c: _desk_tickets(c, incident_id, limit))
        if desk:
            if output == "json":
                click.echo(json.dumps([t.as_json() for t in tickets], indent=2))
            else:
                _print_desk_tickets(tickets)
            return
        if tickets and output != "json":
            _print_desk_tickets(tickets)
            click.echo("")
    rows = _with_store(
        lambda c: outbox_rows(c, incident_id=incident_id, status=status, limit=limit)
    )
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no ticket events")
        return
    click.echo(f"{'ID':>6}  {'UPSTREAM':<14} {'EVENT':<12} {'STATUS':<9} {'TRIES':>5}  KEY / ERROR")
    for row in rows:
        click.echo(
            f"{row['id']:>6}  {row['upstream']:<14} {row['event']:<12} {row['status']:<9} "
            f"{row['attempts']:>5}  {row['idempotency_key']}"
        )
        if row["last_error"]:
            click.echo(f"{'':>6}  {'':<14} last error: {row['last_error']}")


def _desk_tickets(
    conn: Connection, incident_id: str | None, limit: int
) -> list[TicketLink]:
    if incident_id:
        return links.for_incident(conn, incident_id)
    return links.listing(conn, include_closed=True, limit=limit)


def _print_desk_tickets(tickets: list[TicketLink]) -> None:
    if not tickets:
        click.echo("no service-desk tickets")
        return
    click.echo(f"{'INCIDENT':<10} {'UPSTREAM':<14} {'TICKET':<12} {'STATUS':<22} POLLED / URL")
    for t in tickets:
        upstream_status = (t.status or "-") + (" (closed)" if t.closed else "")
        polled = rfc3339(t.polled_at) if t.polled_at else "never"
        click.echo(
            f"{t.incident_id:<10} {t.upstream:<14} {t.ticket_id:<12} {upstream_status:<22} "
            f"{polled}  {t.url or ''}"
        )
        if t.poll_error:
            click.echo(f"{'':<10} {'':<14} last poll error: {t.poll_error}")


@tickets_group.command("retry")
@click.argument("event_ids", nargs=-1, type=int, required=True)
def retry_command(event_ids: tuple[int, ...]) -> None:
    """Send dead-lettered events again (after fixing what the upstream refused)."""
    changed = _with_store(lambda c: retry_dead(c, event_ids, time.time()))
    click.echo(f"{changed} event(s) queued again")
    if changed < len(event_ids):
        raise SystemExit(EXIT_FAILURE)
