"""Small charts drawn on the server as inline SVG: no JavaScript, no CDN, readable without the network.

Each function returns safe markup for a template. Every text and tooltip is escaped; points carry a
<title> so hovering one shows its exact value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Formatter = Callable[[float], str]
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 12, 12, 22


def _label(when: date | datetime) -> str:
    return f"{when:%m-%d %H:%M}" if isinstance(when, datetime) else f"{when:%m-%d}"


def _frame(width: int, height: int, title: str, body: list[str]) -> SafeString:
    return mark_safe(
        f'<svg class="backups-chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(body) + "</svg>")


def _empty(width: int, height: int, title: str) -> SafeString:
    return _frame(width, height, title, [
        f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" class="muted">No data yet</text>'])


def _axes(width: int, height: int, top: float, fmt: Formatter, first: str, last: str) -> list[str]:
    bottom_y = height - PAD_BOTTOM
    return [
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom_y}" class="axis"/>',
        f'<line x1="{PAD_LEFT}" y1="{bottom_y}" x2="{width - PAD_RIGHT}" y2="{bottom_y}" class="axis"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" text-anchor="end">{escape(fmt(top))}</text>',
        f'<text x="{PAD_LEFT - 4}" y="{bottom_y}" text-anchor="end">{escape(fmt(0))}</text>',
        f'<text x="{PAD_LEFT}" y="{height - 6}">{escape(first)}</text>',
        f'<text x="{width - PAD_RIGHT}" y="{height - 6}" text-anchor="end">{escape(last)}</text>',
    ]


def line_chart(points: Sequence[tuple[date | datetime, float | None]], *, title: str, fmt: Formatter,
               width: int = 560, height: int = 160, css_class: str = "series-a") -> SafeString:
    """Values over time (x spaced by time, y from zero); None values are skipped."""
    points = [(when, float(value)) for when, value in points if value is not None]
    if not points:
        return _empty(width, height, title)
    stamps = [datetime(w.year, w.month, w.day).timestamp() if not isinstance(w, datetime) else w.timestamp()
              for w, _ in points]
    t0, t1 = min(stamps), max(stamps)
    top = max(v for _, v in points) or 1.0
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def xy(stamp: float, value: float) -> tuple[float, float]:
        x = PAD_LEFT + (plot_w / 2 if t1 == t0 else plot_w * (stamp - t0) / (t1 - t0))
        return x, PAD_TOP + plot_h * (1 - value / top)

    coords = [xy(s, v) for s, (_, v) in zip(stamps, points, strict=True)]
    body = _axes(width, height, top, fmt, _label(points[0][0]), _label(points[-1][0]))
    body.append(f'<polyline class="{css_class}" fill="none" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
    for (x, y), (when, value) in zip(coords, points, strict=True):
        body.append(f'<circle class="{css_class}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                    f"<title>{escape(_label(when))}: {escape(fmt(value))}</title></circle>")
    return _frame(width, height, title, body)


def stacked_bars(days: Sequence[date], series: Sequence[tuple[str, str, Sequence[int]]], *, title: str,
                 width: int = 560, height: int = 160) -> SafeString:
    """One bar a day, stacked by series: (label, css class, one value per day)."""
    if not days:
        return _empty(width, height, title)
    totals = [sum(values[i] for _, _, values in series) for i in range(len(days))]
    top = max(totals) or 1
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / len(days)
    bar = max(1.0, slot * 0.7)
    body = _axes(width, height, top, lambda v: f"{v:.0f}", _label(days[0]), _label(days[-1]))
    for i, day in enumerate(days):
        y = PAD_TOP + plot_h
        x = PAD_LEFT + slot * i + (slot - bar) / 2
        for label, css, values in series:
            h = plot_h * values[i] / top
            if h <= 0:
                continue
            y -= h
            body.append(f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                        f"<title>{escape(_label(day))}: {values[i]} {escape(label)}</title></rect>")
    return _frame(width, height, title, body)


def sparkline(values: Sequence[float | None], *, title: str, width: int = 140, height: int = 28,
              css_class: str = "series-a") -> SafeString:
    """A tiny trend line, no axes; the tooltip says the first, last and highest value."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return _empty(width, height, title)
    top = max(values) or 1.0
    step = (width - 4) / max(1, len(values) - 1)
    pts = " ".join(f"{2 + step * i:.1f},{height - 2 - (height - 4) * v / top:.1f}" for i, v in enumerate(values))
    if len(values) == 1:
        pts = f"2,{height / 2:.1f} {width - 2},{height / 2:.1f}"
    return _frame(width, height, title, [f'<polyline class="{css_class}" fill="none" points="{pts}"/>'])
