"""``ccwatch checklist run|list``: run checklists now, from cron or by hand.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed or could not run, or
the e-mail was not sent, 2 an invalid config/checklist or an unknown checklist name.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

import click

from ccwatch.checklists.definition import Checklist
from ccwatch.cliopts import format_option
from ccwatch.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    from ccwatch.cli import CliContext
    from ccwatch.config import Config

EXIT_FAILURE = 1
EXIT_CONFIG = 2


@click.group("checklist")
def checklist_group() -> None:
    """Run the daily setup checklist now, or list the checklists."""


def _select(context: CliContext, name: str | None) -> tuple[Config, list[Checklist]]:
    config = context.load()  # the checklist files included, validated
    checklists = list(config.checklists.definitions)
    if not checklists:
        click.echo(f"ccwatch: no checklist files in {config.checklists.dir}", err=True)
        sys.exit(EXIT_CONFIG)
    if name is None:
        return config, checklists
    chosen = [c for c in checklists if c.name == name]
    if not chosen:
        names = ", ".join(c.name for c in checklists)
        click.echo(f"ccwatch: no checklist named {name!r}; there are: {names}", err=True)
        sys.exit(EXIT_CONFIG)
    return config, chosen


@checklist_group.command("run")
@click.argument("name", required=False)
@click.option("--email", "send", is_flag=True, help="Also e-mail the report (email: section).")
@format_option()
@click.pass_obj
def run_command(context: CliContext, name: str | None, send: bool, output_format: str) -> None:
    """Run checklist NAME (default: every checklist) now and print the report.

    Exits 1 when a check fails or cannot run, so cron and monitoring can act on it.
    """
    from ccwatch.checklists.checks import CheckEnv
    from ccwatch.checklists.report import render_json, render_text
    from ccwatch.checklists.runner import run_checklist
    from ccwatch.checklists.service import report_zone, send_report

    config, checklists = _select(context, name)
    if send and config.email is None:
        click.echo("ccwatch: --email needs an `email:` section in the config", err=True)
        sys.exit(EXIT_CONFIG)
    env = CheckEnv(config=config.check_settings())
    exit_code = 0
    reports: list[str] = []
    for checklist in checklists:
        run = asyncio.run(run_checklist(checklist, env))
        zone = report_zone(checklist)
        if output_format == "json":
            reports.append(render_json(run))
        else:
            click.echo(render_text(run, zone))
        if run.failed:
            exit_code = EXIT_FAILURE
        if send:
            try:
                to = asyncio.run(send_report(run, checklist, config.email))
            except ConfigError as exc:
                click.echo(f"ccwatch: {checklist.name}: {'; '.join(exc.problems)}", err=True)
                sys.exit(EXIT_CONFIG)
            except UpstreamError as exc:
                click.echo(f"ccwatch: {checklist.name}: report not e-mailed: {exc}", err=True)
                exit_code = EXIT_FAILURE
            else:
                click.echo(f"{checklist.name}: report e-mailed to {', '.join(to)}", err=True)
    if output_format == "json":
        # One checklist: its report object; several: a list of them.
        objects = [json.loads(report) for report in reports]
        click.echo(json.dumps(objects[0] if len(objects) == 1 else objects, indent=2))
    sys.exit(exit_code)


@checklist_group.command("list")
@click.pass_obj
def list_command(context: CliContext) -> None:
    """List the checklists: name, schedule and number of checks."""
    _, checklists = _select(context, None)
    for checklist in checklists:
        schedule = checklist.schedule
        when = schedule.describe() if schedule else "not scheduled"
        enabled = len(checklist.enabled_checks())
        click.echo(f"{checklist.name:<16} {when:<32} {enabled} checks")
