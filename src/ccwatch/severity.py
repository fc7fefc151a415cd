"""Incident severities, ordered, with the priorities the support contract maps them to."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer


class Severity(enum.IntEnum):
    """Ordered so that ``max()`` and comparisons read naturally: NONE < MINOR < MAJOR < CRITICAL."""

    NONE = 0
    MINOR = 1
    MAJOR = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def priority(self) -> str:
        """P1 for critical, P2 for major, P3 for minor (seeds 000 and 002)."""
        return {Severity.CRITICAL: "P1", Severity.MAJOR: "P2", Severity.MINOR: "P3"}.get(self, "")

    @classmethod
    def parse(cls, value: object) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        raise ValueError(f"unknown severity {value!r}; use one of: minor, major, critical")


SeverityName = Annotated[
    Severity,
    BeforeValidator(Severity.parse),
    PlainSerializer(lambda severity: severity.label, return_type=str),
]
"""A severity in config files: written as ``minor``/``major``/``critical``."""
