"""The ``ccwatch`` command line.

``-c/--config`` is resolved as: the option, else ``$CCWATCH_CONFIG``, else
./config.yaml, else /etc/ccwatch/config.yaml. Exit codes: 0 success, 1 a run-time
failure, 2 an invalid config or usage error. Feature commands live beside their feature
and are listed in ``LAZY_COMMANDS``, imported on first use.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ccwatch import __version__
from ccwatch.errors import ConfigError, StateStoreError

if TYPE_CHECKING:
    from ccwatch.config import Config

EXIT_FAILURE = 1
EXIT_CONFIG = 2


class CliContext:
    # ccwatch.config is imported on first use: its models import every check type, which
    # `ccwatch --help` and `ccwatch version` do not need.
    def __init__(self, config_option: str | None) -> None:
        self.config_option = config_option

    @functools.cached_property
    def config_path(self) -> Path:
        from ccwatch.config import resolve_config_path

        return resolve_config_path(self.config_option)

    def load(self) -> Config:
        """The validated config (checklist files included), or print every problem and
        exit 2."""
        from ccwatch.config import load_config

        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"{exc.source}: {problem}", err=True)
            raise SystemExit(EXIT_CONFIG) from None


pass_context = click.make_pass_decorator(CliContext)


def _incidents_with_ack() -> click.Command:
    from ccwatch.commands.incidents import incidents
    from ccwatch.commands.tickets import ack_command

    incidents.add_command(ack_command)
    return incidents


# Feature verbs, loaded only when used: `ccwatch check-config` or `incidents list` should
# not pay for importing the HTTP client, PostgreSQL driver and every check type.
LAZY_COMMANDS: dict[str, tuple[str, str] | Callable[[], click.Command]] = {
    "checklist": ("ccwatch.commands.checklists", "checklist_group"),
    "classify": ("ccwatch.commands.incidents", "classify"),
    "incidents": _incidents_with_ack,
    "maintenance": ("ccwatch.commands.maintenance", "maintenance"),
    "retention": ("ccwatch.commands.retention", "retention"),
    "simulate": ("ccwatch.ingest.simulate", "simulate"),
    "tickets": ("ccwatch.commands.tickets", "tickets_group"),
}


class LazyGroup(click.Group):
    """A click group whose feature subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        target = LAZY_COMMANDS[cmd_name]
        if callable(target):
            command = target()
        else:
            module_name, attribute = target
            command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    one-line summary and exits 0. Warnings (escalation levels that tell nobody) go to
    stderr and leave the exit code 0.
    """
    from ccwatch.sla import escalation_warnings

    config = context.load()
    for warning in escalation_warnings(config.escalation):
        click.echo(f"{context.config_path}: warning: {warning}", err=True)
    click.echo(f"{context.config_path}: OK, {config.summary()}")


@cli.command()
def version() -> None:
    """Print the ccwatch version."""
    click.echo(f"ccwatch {__version__}")


def main() -> None:
    cli(prog_name="ccwatch")


if __name__ == "__main__":  # pragma: no cover
    main()
