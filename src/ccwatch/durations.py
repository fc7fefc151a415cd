"""Durations as the config writes them: ``30s``, ``5m``, ``6h``, ``2d``, ``1h30m``, ``0``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``/``5m``/``1h30m``/``0`` (or a bare number of seconds) into a timedelta.

    Raises ValueError with a message that says what a valid duration looks like.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is a string such as '30s', '5m', '6h' or '2d'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise ValueError(f"duration {value!r} is negative; use 0 or more")
        if text in {"0", "0.0"}:
            return timedelta(0)
        position, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            position = match.end()
        if position != len(text) or not text:
            raise ValueError(
                f"invalid duration {value!r}; write a number and a unit (ms, s, m, h, d, w), "
                "e.g. '30s', '5m', '1h30m'"
            )
    else:
        raise ValueError("a duration is a string such as '30s', '5m', '6h' or '2d'")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative; use 0 or more")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the config's own syntax."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, unit_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A non-negative config duration."""
