"""``ccwatch retention run``: one cleanup (or dry run) of the configured databases.

Exit codes: 0 every database ok (or cut short by the window), 1 a database failed,
2 an invalid config or an unknown ``--database``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from ccwatch.cliopts import format_option
from ccwatch.errors import RetentionError
from ccwatch.retention.job import RetentionJob

if TYPE_CHECKING:
    from ccwatch.cli import CliContext

EXIT_FAILURE = 1
EXIT_CONFIG = 2


@click.group()
def retention() -> None:
    """Database retention (seed 004: 90 days on ameyodb, 180 days on reportsdb)."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--database", "database", metavar="NAME", help="Only this database.")
@format_option()
@click.option(
    "--ignore-window",
    is_flag=True,
    help="Run now even outside the maintenance window (the window is for the schedule).",
)
@click.pass_obj
def run_command(
    context: CliContext,
    dry_run: bool,
    database: str | None,
    output_format: str,
    ignore_window: bool,
) -> None:
    """Delete rows older than keep_days + grace_days, in batches, and print a report.

    Outside the maintenance window no batch starts unless --ignore-window is given;
    a dry run always counts. Exit 0 ok, 1 a database failed, 2 config error.
    """
    config = context.load()
    job = RetentionJob(config.retention)
    try:
        job.databases(database)
    except RetentionError as exc:
        click.echo(f"ccwatch: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    report = asyncio.run(job.run(dry_run=dry_run, database=database, ignore_window=ignore_window))
    click.echo(report.to_json() if output_format == "json" else report.to_text())
    sys.exit(0 if report.ok else EXIT_FAILURE)
