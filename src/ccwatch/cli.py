"""The ``ccwatch`` command line.

``-c/--config`` is resolved as: the option, else ``$CCWATCH_CONFIG``, else
./config.yaml, else /etc/ccwatch/config.yaml. Exit codes: 0 success, 1 a run-time
failure, 2 an invalid config or usage error. Feature commands live beside their feature
and are registered at the bottom of this module.
"""

from __future__ import annotations

import sys

import click

from ccwatch import __version__
from ccwatch.config import Config, load_config, resolve_config_path
from ccwatch.errors import ConfigError, StateStoreError

EXIT_FAILURE = 1
EXIT_CONFIG = 2


class CliContext:
    def __init__(self, config_option: str | None) -> None:
        self.config_path = resolve_config_path(config_option)

    def load(self) -> Config:
        """The validated config, or print every problem and exit 2."""
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"{exc.source}: {problem}", err=True)
            raise SystemExit(EXIT_CONFIG) from None


pass_context = click.make_pass_decorator(CliContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file [default: $CCWATCH_CONFIG, ./config.yaml, /etc/ccwatch/config.yaml].",
)
@click.version_option(__version__, "-V", "--version", prog_name="ccwatch")
@click.pass_context
def cli(context: click.Context, config_option: str | None) -> None:
    """ccwatch: watch a contact center's ACD/IVR/dialer metrics, open and track incidents,
    send tickets upstream, run the daily checklist and enforce database retention."""
    context.obj = CliContext(config_option)


@cli.command()
@pass_context
def run(context: CliContext) -> None:
    """Run the daemon in the foreground (what the systemd unit starts).

    SIGTERM/SIGINT stop it; SIGHUP reloads the config (an invalid one is refused and
    the running config kept). Logs go to stderr.
    """
    from ccwatch.app import run_daemon  # deferred: the other verbs need not import asyncio

    config = context.load()
    try:
        sys.exit(run_daemon(config, context.config_path))
    except StateStoreError as exc:
        click.echo(f"ccwatch: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        click.echo(f"ccwatch: cannot start: {exc}", err=True)
        sys.exit(EXIT_FAILURE)


@cli.command("check-config")
@pass_context
def check_config(context: CliContext) -> None:
    """Validate the config without touching the network.

    Prints every problem on its own line with its key path and exits 2, or prints a
    one-line summary and exits 0.
    """
    config = context.load()
    click.echo(f"{context.config_path}: OK, {config.summary()}")


@cli.command()
def version() -> None:
    """Print the ccwatch version."""
    click.echo(f"ccwatch {__version__}")


def main() -> None:
    cli(prog_name="ccwatch")


# Feature commands register below (one line each).
from ccwatch.retention.cli import retention as retention_group  # noqa: E402

cli.add_command(retention_group)
from ccwatch.checklists.cli import checklist_group  # noqa: E402

cli.add_command(checklist_group)
from ccwatch.incidents.cli import classify as classify_command  # noqa: E402
from ccwatch.incidents.cli import incidents as incidents_group  # noqa: E402
from ccwatch.ingest.simulate import simulate as simulate_command  # noqa: E402

cli.add_command(classify_command)
cli.add_command(incidents_group)
cli.add_command(simulate_command)
from ccwatch.tickets.cli import ack_command, tickets_group  # noqa: E402

incidents_group.add_command(ack_command)
cli.add_command(tickets_group)

if __name__ == "__main__":  # pragma: no cover
    main()
