"""``ccwatch maintenance add|list|end``: ad-hoc maintenance windows.

``add`` and ``end`` go through the running daemon's API (``/api/maintenance``, with the
token of http.token_env/_file) so its calendar hears of them at once; when no daemon
listens they write the state database, which the daemon reads when it starts. ``list``
shows the scheduled (config) and ad-hoc windows, active and upcoming.
"""

from __future__ import annotations

import getpass
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from ccwatch.commands.daemon import call_daemon
from ccwatch.config import Config
from ccwatch.incidents.model import rfc3339
from ccwatch.maintenance.config import schedules
from ccwatch.maintenance.store import (
    MaintenanceCalendar,
    UnknownWindowError,
    add_window,
    end_window,
)
from ccwatch.maintenance.windows import Window

EXIT_FAILURE = 1
EXIT_NOT_FOUND = 3


def _config() -> Config:
    config: Config = click.get_current_context().find_root().obj.load()
    return config


def _daemon(
    config: Config, method: str, path: str, payload: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Call the running daemon's API; None when no daemon listens. 404 → LookupError,
    400 → ValueError."""
    return call_daemon(config, method, path, payload, "the change")


def _describe(window: Window | dict[str, Any]) -> str:
    w = window.as_dict() if isinstance(window, Window) else window
    start, end = w["start"], w["end"]
    start = rfc3339(start) if isinstance(start, float | int) else start
    end = rfc3339(end) if isinstance(end, float | int) else end
    components = ",".join(w["components"])  # type: ignore[arg-type]
    return f"{w['id']:<10} {w['source']:<9} {components:<16} {start} .. {end}  {w['reason']}"


@click.group("maintenance")
def maintenance() -> None:
    """Maintenance windows: incidents starting inside one are recorded, not sent, no SLA."""


@maintenance.command("add")
@click.option("--component", "components", multiple=True, help="A component (repeat) or '*'.")
@click.option("--for", "length", required=True, help="How long, e.g. 30m, 2h.")
@click.option("--reason", required=True, help="Shown on pages, timelines and tickets.")
@click.option("--by", "by", default=None, help="Who adds it [default: your user name].")
def add_command(components: tuple[str, ...], length: str, reason: str, by: str | None) -> None:
    """Start an ad-hoc window now, e.g. --component acd --for 30m --reason "ACD patch"."""
    from ccwatch.durations import parse_duration

    config = _config()
    names = list(components) or ["*"]
    unknown = [c for c in names if c != "*" and c not in config.components]
    if unknown:
        raise click.UsageError(
            f"unknown component(s) {', '.join(unknown)}; known: {', '.join(config.components)}"
        )
    try:
        seconds = parse_duration(length).total_seconds()
    except ValueError as exc:
        raise click.UsageError(f"--for: {exc}") from None
    if seconds <= 0:
        raise click.UsageError("--for must be longer than 0")
    who = by or getpass.getuser()
    payload = {"components": names, "for": length, "reason": reason, "by": who}
    try:
        answer = _daemon(config, "POST", "/api/maintenance", payload)
        if answer is None:
            from ccwatch.compose import open_state

            store = open_state(config.state)
            try:
                now = time.time()
                window = store.run_sync(
                    lambda conn: add_window(conn, names, now, now + seconds, reason, who, now)
                )
            finally:
                store.close()
            answer = window.as_dict()
    except ValueError as exc:
        click.echo(f"ccwatch: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None
    click.echo(f"maintenance window added: {_describe(answer)}")


@maintenance.command("list")
def list_command() -> None:
    """Active and upcoming (7 days) windows, and ad-hoc ones ended recently."""
    from ccwatch.compose import open_state

    config = _config()
    store = open_state(config.state)
    try:
        calendar = MaintenanceCalendar(schedules(config.maintenance))
        now = time.time()
        calendar.refresh_sync(store, now)
    finally:
        store.close()
    listing = calendar.listing(now)
    for name, windows in listing.items():
        click.echo(f"{name}:")
        if not windows:
            click.echo("  (none)")
        for window in windows:
            click.echo(f"  {_describe(window)}")


@maintenance.command("end")
@click.argument("window_id")
def end_command(window_id: str) -> None:
    """End an ad-hoc window now (incidents held back by it open upstream if still active)."""
    config = _config()
    quoted = urllib.parse.quote(window_id)
    try:
        answer = _daemon(config, "DELETE", f"/api/maintenance/{quoted}", None)
        if answer is None:
            from ccwatch.compose import open_state

            store = open_state(config.state)
            try:
                now = time.time()
                answer = store.run_sync(lambda conn: end_window(conn, window_id, now)).as_dict()
            finally:
                store.close()
    except (LookupError, UnknownWindowError):
        click.echo(f"no ad-hoc window with id {window_id!r}", err=True)
        raise SystemExit(EXIT_NOT_FOUND) from None
    click.echo(f"maintenance window ended: {_describe(answer)}")
