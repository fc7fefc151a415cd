"""Loss charts as inline SVG geometry, computed on the server (pure: values in, values out).

A chart is drawn in a ``WIDTH`` by ``HEIGHT`` viewBox that the page stretches to its box
(``preserveAspectRatio="none"``, strokes that do not scale). Every stored minute is one
point of the path; a missing minute starts a new sub-path, so a gap shows as a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ccwatch.classify import Thresholds

WIDTH = 1000.0
HEIGHT = 100.0
MINUTE = 60


@dataclass(frozen=True, slots=True)
class Line:
    y: float
    label: str
    kind: str  # "major" | "critical"


@dataclass(frozen=True, slots=True)
class Marker:
    x: float
    label: str
    kind: str  # the timeline change: "opened", "escalated", "resolved", …


@dataclass(frozen=True, slots=True)
class Chart:
    path: str
    points: int
    top: float  # the loss at the top edge (0..1)
    start: float
    end: float
    lines: tuple[Line, ...]
    markers: tuple[Marker, ...] = ()

    def to_api(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "points": self.points,
            "top": self.top,
            "markers": [{"x": m.x, "label": m.label, "kind": m.kind} for m in self.markers],
        }


def _top(losses: Iterable[float], thresholds: Thresholds) -> float:
    """The scale: room above the critical line, more when the loss went higher."""
    highest = max(losses, default=0.0)
    return min(1.0, max(thresholds.critical_at * 1.25, highest * 1.1, 0.05))


def loss_chart(
    points: Sequence[tuple[float, float]],
    start: float,
    end: float,
    thresholds: Thresholds,
    markers: Sequence[tuple[float, str, str]] = (),
) -> Chart:
    """``points`` are ``(minute, loss)`` oldest first, within ``[start, end)``;
    ``markers`` are ``(time, kind, label)``."""
    span = max(end - start, 1.0)
    top = _top((loss for _, loss in points), thresholds)
    parts: list[str] = []
    previous: float | None = None
    for minute, loss in points:
        x = (minute - start) / span * WIDTH
        y = HEIGHT - min(loss, top) / top * HEIGHT
        command = "L" if previous is not None and minute - previous <= MINUTE else "M"
        parts.append(f"{command}{x:.1f} {y:.1f}")
        previous = minute
    lines = tuple(
        Line(round(HEIGHT - value / top * HEIGHT, 1), f"{kind} {value * 100:g}%", kind)
        for value, kind in (
            (thresholds.major_above, "major"),
            (thresholds.critical_at, "critical"),
        )
        if value <= top
    )
    placed = tuple(
        Marker(round(min(max((at - start) / span, 0.0), 1.0) * WIDTH, 1), label, kind)
        for at, kind, label in markers
    )
    return Chart(" ".join(parts), len(points), top, start, end, lines, placed)
