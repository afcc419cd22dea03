"""Server-rendered SVG charts for the operator's dashboard: no JavaScript library, no CDN, nothing to download.

Three shapes cover the page: stacked bars (questions per day by platform or agent), lines (first-token p50/p95 per
day) and horizontal share bars (👍 rate, declined and handed-off shares). Each function is pure: data in, an
`<svg>` string out, every label escaped. Charts carry `role="img"` and an `aria-label`, and each bar or point a
`<title>` with its value, so hovering shows the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#4f46e5", "#0891b2", "#16a34a", "#ea580c", "#db2777", "#7c3aed", "#ca8a04", "#475569")
WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 22, 10, 40


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _frame(title: str, body: list[str], legend: Sequence[str], height: int = HEIGHT) -> str:
    keys = "".join(
        f'<g transform="translate({LEFT + i * 110},{height - 12})"><rect width="10" height="10" fill="{color(i)}"/>'
        f'<text x="14" y="9">{escape(name[:14])}</text></g>' for i, name in enumerate(legend))
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{escape(title)}" font-size="11" font-family="system-ui, sans-serif">'
            + "".join(body) + keys + "</svg>")


def _axis(top: float, unit: str, plot_h: float) -> list[str]:
    parts = []
    for i in range(3):
        value = top * i / 2
        y = TOP + plot_h - plot_h * i / 2
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{_fmt(value)}{unit}</text>')
    return parts


def _day_labels(days: Sequence[str], x_of: object, every: int) -> list[str]:
    return [f'<text x="{x_of(i):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" fill="#6b7280">'  # type: ignore[operator]
            f"{escape(day[5:])}</text>" for i, day in enumerate(days) if i % every == 0 or i == len(days) - 1]


def stacked_bars(title: str, days: Sequence[str], series: dict[str, Sequence[int]]) -> str:
    """One bar per day (`YYYY-MM-DD`), stacked by group; `series[group][i]` is that group's count on day i."""
    groups = sorted(series, key=lambda g: -sum(series[g]))
    totals = [sum(series[g][i] for g in groups) for i in range(len(days))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(2.0, slot * 0.7)
    body = _axis(top, "", plot_h)
    for i, day in enumerate(days):
        y = TOP + plot_h
        for g_index, group in enumerate(groups):
            count = series[group][i]
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            body.append(f'<rect class="bar" x="{LEFT + i * slot + (slot - bar) / 2:.1f}" y="{y:.1f}" '
                        f'width="{bar:.1f}" height="{h:.1f}" fill="{color(g_index)}">'
                        f"<title>{escape(day)} · {escape(group)}: {count}</title></rect>")
    body += _day_labels(days, lambda i: LEFT + i * slot + slot / 2, max(1, len(days) // 7))
    return _frame(title, body, groups)


def lines(title: str, days: Sequence[str], series: dict[str, Sequence[float | None]], unit: str = "") -> str:
    """One line per series over the days; a None is a day without data (the line skips it)."""
    values = [v for s in series.values() for v in s if v is not None]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    def x_of(i: int) -> float:
        return LEFT + i * step if len(days) > 1 else LEFT + plot_w / 2

    body = _axis(top, "", plot_h)  # the unit is in the card's title and each point's tooltip
    for index, (name, points) in enumerate(series.items()):
        coords = [(x_of(i), TOP + plot_h - plot_h * v / top, v) for i, v in enumerate(points) if v is not None]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            body.append(f'<polyline class="line" points="{path}" fill="none" stroke="{color(index)}" '
                        f'stroke-width="2"/>')
        body += [f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color(index)}">'
                 f"<title>{escape(name)}: {_fmt(v)}{escape(unit)}</title></circle>" for x, y, v in coords]
    body += _day_labels(days, x_of, max(1, len(days) // 7))
    return _frame(title, body, list(series))


def shares(title: str, items: Sequence[tuple[str, float | None, str]]) -> str:
    """Horizontal bars of fractions (0–1): (label, fraction or None when there is no data, detail text)."""
    row, height = 30, 20 + 30 * len(items)
    label_w, bar_w = 150, WIDTH - 150 - 110
    body = []
    for i, (label, fraction, detail) in enumerate(items):
        y = 10 + i * row
        body.append(f'<text x="0" y="{y + 14}">{escape(label)}</text>'
                    f'<rect x="{label_w}" y="{y}" width="{bar_w}" height="18" fill="#f3f4f6"/>')
        if fraction is not None:
            body.append(f'<rect class="bar" x="{label_w}" y="{y}" width="{bar_w * max(0.0, min(1.0, fraction)):.1f}" '
                        f'height="18" fill="{color(i)}"><title>{escape(label)}: {fraction:.0%}</title></rect>')
        shown = f"{fraction:.0%}" if fraction is not None else "no data"
        body.append(f'<text x="{label_w + bar_w + 8}" y="{y + 14}">{shown} {escape(detail)}</text>')
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{escape(title)}" font-size="11" font-family="system-ui, sans-serif">' + "".join(body)
            + "</svg>")
