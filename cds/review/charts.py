"""Server-rendered SVG charts (no JavaScript, no chart library): markup built here, every
label escaped. Colours are SVG presentation attributes, which the page's
Content-Security-Policy (no inline styles) allows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

#: Colour-blind-safe palette (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _ticks(value: int) -> list[int]:
    """Axis ticks from 0 in steps of 1, 2 or 5 x 10^n: at most 5 steps, the last >= value."""
    value = max(value, 1)
    magnitude = 1
    while True:
        for base in (1, 2, 5):
            step = base * magnitude
            if math.ceil(value / step) <= 5:
                return list(range(0, step * math.ceil(value / step) + 1, step))
        magnitude *= 10


def stacked_days(
    days: Sequence[date], series: Sequence[str], counts: dict[tuple[date, str], int]
) -> Markup:
    """Cards per day, one stacked bar per day, one colour per service (with a legend)."""
    width, height, left, bottom, top = 760, 260, 40, 40, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    totals = [sum(counts.get((day, s), 0) for s in series) for day in days]
    ticks = _ticks(max(totals, default=0))
    top_value = ticks[-1]
    slot = plot_w / max(len(days), 1)
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 20 * len(series)}"'
        ' role="img" class="chart" data-chart="cards-per-day">',
        f"<title>Cards per service per day, {escape(days[0])} to {escape(days[-1])}</title>"
        if days
        else "<title>Cards per service per day</title>",
    ]
    for value in ticks:
        y = top + plot_h - plot_h * value / top_value
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{value}</text>'
        )
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for j, service in enumerate(series):
            n = counts.get((day, service), 0)
            if not n:
                continue
            h = plot_h * n / top_value
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour(j)}" data-day="{escape(day)}" data-service="{escape(service)}" '
                f'data-count="{n}"><title>{escape(day)} {escape(service)}: {n}</title></rect>'
            )
        if len(days) <= 16 or i % max(1, len(days) // 8) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'font-size="10">{escape(day.strftime("%m-%d"))}</text>'
            )
    for j, service in enumerate(series):
        y = height + 20 * j
        parts.append(
            f'<rect x="{left}" y="{y - 10}" width="12" height="12" fill="{colour(j)}"/>'
            f'<text x="{left + 18}" y="{y}" font-size="12">{escape(service)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in ``parts`` is escaped


def rate_bars(rows: Sequence[tuple[str, float | None, str]], name: str) -> Markup:
    """Horizontal bars, one per row: (label, rate 0..1 or None, caption)."""
    width, row_h, label_w = 1000, 24, 280
    height = row_h * max(len(rows), 1) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="chart" data-chart="{escape(name)}"><title>Override rate: {escape(name)}</title>'
    ]
    scale = 360
    for i, (label, rate, caption) in enumerate(rows):
        y = 5 + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"{escape(label)}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{scale}" height="{row_h - 8}" fill="#eee"/>'
        )
        if rate is not None:
            parts.append(
                f'<rect x="{label_w}" y="{y + 3}" width="{scale * rate:.1f}" '
                f'height="{row_h - 8}" fill="#D55E00" data-rate="{rate:.4f}"/>'
            )
        parts.append(
            f'<text x="{label_w + scale + 6}" y="{y + 15}" font-size="12">{escape(caption)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in ``parts`` is escaped
