"""The dashboard's charts: small inline SVG drawn here, in Python, from plain numbers.

    line_chart([1, 2, 3], {"train_loss": [0.9, 0.5, 0.4]}, title="loss")   # → Markup
    bar_chart(["2026-11-01", ...], [12, 0, 40], title="units per day")
    sparkline([0, 3, 1, 7])

Inline SVG needs no script, no network and no chart library, so the page works offline
and under a strict Content-Security-Policy (no inline styles: colours are SVG attributes).
Every piece of text (metric names, days) is escaped; numbers are formatted here. A
hover shows each point's value (an SVG `<title>`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
"""Line colours, in series order (distinguishable, and readable on white)."""
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 28, 34
"""Pixels around the plot area: y labels on the left, the legend on top, x labels below."""


def number(value: float | int | None) -> str:
    """4 significant digits for measurements, thousands separators for counts."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _svg_open(width: int, height: int, title: str) -> str:
    label = escape(title)
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{label}"><title>{label}</title>')


def line_chart(
    x: Sequence[float | int],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    x_label: str = "epoch",
    marker_x: float | int | None = None,
    width: int = 520,
    height: int = 220,
) -> Markup:
    """One line per series against `x` (missing values break nothing: they are skipped).
    `marker_x` draws a dotted vertical line there (the best epoch). Empty Markup when
    there is nothing to draw."""
    values = [v for s in series.values() for v in _finite(s)]
    if not values or not x:
        return Markup("")
    lo, hi = min(values), max(values)
    if hi == lo:  # a flat line: give it some room
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    x0, x1 = float(min(x)), float(max(x))
    span = (x1 - x0) or 1.0
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def px(v: float) -> float:
        return _LEFT + (float(v) - x0) / span * plot_w if x1 > x0 else _LEFT + plot_w / 2

    def py(v: float) -> float:
        return _TOP + (hi - v) / (hi - lo) * plot_h

    parts = [_svg_open(width, height, title), *_axes(width, height, lo, hi)]
    parts.append(f'<text x="{_LEFT}" y="{height - 6}" class="tick">{escape(number(x[0]))}</text>')
    parts.append(f'<text x="{width - _RIGHT}" y="{height - 6}" class="tick" '
                 f'text-anchor="end">{escape(number(x[-1]))}</text>')
    parts.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{height - 6}" class="tick" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    if marker_x is not None and x0 <= float(marker_x) <= x1:
        mx = px(marker_x)
        parts.append(f'<line x1="{mx:.1f}" y1="{_TOP}" x2="{mx:.1f}" y2="{_TOP + plot_h}" '
                     f'stroke="#9ca3af" stroke-dasharray="3 3"><title>best {escape(x_label)} '
                     f'{escape(number(marker_x))}</title></line>')
    legend_x = _LEFT
    for i, (name, ys) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        points = [(px(xv), py(float(yv)), xv, yv) for xv, yv in zip(x, ys, strict=False)
                  if yv is not None and math.isfinite(float(yv))]
        if len(points) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                         'stroke-width="2"/>')
        for a, b, xv, yv in points:
            tip = escape(f"{name} at {x_label} {number(xv)}: {number(float(yv))}")
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}">'
                         f'<title>{tip}</title></circle>')
        parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="17" class="legend">{escape(name)}</text>')
        legend_x += 24 + 7 * len(str(name))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | int],
    *,
    title: str,
    unit: str = "units",
    notes: Sequence[str] | None = None,
    width: int = 720,
    height: int = 200,
) -> Markup:
    """One bar per label (a day), from zero. `notes[i]` is added to bar i's hover text."""
    if not labels:
        return Markup("")
    hi = max([float(v) for v in values] + [0.0]) or 1.0
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    step = plot_w / len(labels)
    bar = max(1.0, step * 0.8)
    parts = [_svg_open(width, height, title), *_axes(width, height, 0.0, hi)]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = float(value) / hi * plot_h
        x = _LEFT + i * step + (step - bar) / 2
        tip = f"{label}: {number(value)} {unit}"
        if notes:
            tip += f", {notes[i]}"
        parts.append(f'<rect x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                     f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="{_LEFT}" y="{height - 6}" class="tick">{escape(labels[0])}</text>')
    parts.append(f'<text x="{width - _RIGHT}" y="{height - 6}" class="tick" '
                 f'text-anchor="end">{escape(labels[-1])}</text>')
    parts.append(f'<text x="{_LEFT}" y="17" class="legend">{escape(title)}</text></svg>')
    return Markup("".join(parts))


def sparkline(values: Sequence[float | int], *, width: int = 120, height: int = 24) -> Markup:
    """A tiny line of daily values (no axes), for a table cell."""
    if not values:
        return Markup("")
    hi = max(float(v) for v in values) or 1.0
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - float(v) / hi * (height - 4):.1f}"
                      for i, v in enumerate(values))
    tip = escape(f"per day: {', '.join(number(v) for v in values)}")
    return Markup(f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}" role="img" aria-label="{tip}"><title>{tip}</title>'
                  f'<polyline points="{points}" fill="none" stroke="{PALETTE[0]}" '
                  'stroke-width="1.5"/></svg>')


def _axes(width: int, height: int, lo: float, hi: float) -> list[str]:
    """The frame and three y labels (min, middle, max)."""
    plot_h = height - _TOP - _BOTTOM
    parts = [f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{width - _RIGHT}" '
             f'y2="{_TOP + plot_h}" stroke="#9ca3af"/>',
             f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#9ca3af"/>']
    for frac in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - frac)
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                     f'{escape(number(lo + (hi - lo) * frac))}</text>')
    return parts
