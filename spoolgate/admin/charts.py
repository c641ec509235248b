"""Server-rendered SVG charts for the dashboard: no script, no CDN, nothing to load.

Owns turning series of counts into an inline ``<svg>``: a line chart of messages over
time. Colours are presentation attributes (the pages' CSP allows no inline style); every
label is escaped; the chart carries a text alternative (``role="img"`` and a title) and
the same figures are in a table beside it for screen readers and copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    colour: str           # an SVG colour keyword or #rrggbb (ours, never user input)
    values: tuple[int, ...]


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series],
               x_ticks: int = 6) -> Markup:
    """An SVG line chart of *series* over *labels* (one per point, shown at a few ticks)."""
    points = max((len(s.values) for s in series), default=0)
    top = _nice_max(max((v for s in series for v in s.values), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (points - 1) if points > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for step in range(5):
        value = top * step / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#d9dde3" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#5f6b7a">{value:g}</text>')
    if points:
        every = max(1, (points - 1) // max(1, x_ticks - 1))
        for i in range(0, points, every):
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                         f'font-size="11" fill="#5f6b7a">{escape(labels[i])}</text>')
    for s in series:
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{escape(s.colour)}" '
                     f'stroke-width="2" stroke-linejoin="round"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above *value* (at least 4: four grid steps)."""
    if value <= 4:
        return 4
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10
