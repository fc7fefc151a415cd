"""Options shared by the feature verbs of the ``ccwatch`` command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def format_option(dest: str = "output_format") -> Callable[[F], F]:
    """``--format text|json``: text for people, JSON for scripts and monitoring."""
    return click.option(
        "--format",
        dest,
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts.",
    )
