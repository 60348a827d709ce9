"""Small inline SVG charts: a sparkline per trending item and bars of an item's daily events.

Drawn on the server, so they show without JavaScript and need no charting library in the
browser. Each chart carries a text equivalent (its ``label``) for screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sparkline:
    points: str  # the SVG polyline's "x,y ..." list
    width: int
    height: int
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    top: int  # the largest value, the height of the plot
    first: str  # the first and last bars' labels, for the axis
    last: str


def sparkline(values: list[int], width: int = 120, height: int = 28, what: str = "distinct users per hour") -> Sparkline:
    top = max(values, default=0) or 1
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{n * step:.1f},{height - 2 - (height - 4) * v / top:.1f}" for n, v in enumerate(values))
    label = f"{what}, oldest first: {', '.join(map(str, values))}"
    return Sparkline(points, width, height, label)


def bars(values: list[tuple[str, int]], width: int = 560, height: int = 160) -> BarChart:
    """One bar per (label, value), left to right, scaled to the largest value."""
    top = max((v for _, v in values), default=0)
    slot = width / max(1, len(values))
    scale = height / (top or 1)
    drawn = [Bar(n * slot + slot * 0.1, height - v * scale, slot * 0.8, v * scale, f"{label}: {v}")
             for n, (label, v) in enumerate(values)]
    return BarChart(drawn, top, values[0][0] if values else "", values[-1][0] if values else "")
