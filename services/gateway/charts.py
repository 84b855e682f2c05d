"""Bar charts as inline SVG, drawn on the server: no script, no library, and a text alternative each.

A chart is a fixed window of equal buckets (``Series``); the page's script may move the window on
and add to its last bucket live, from the ``data-*`` attributes written here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH = 240
HEIGHT = 40


@dataclass(frozen=True, slots=True)
class Series:
    """``values[i]`` is the count of the bucket starting at ``start + i * step``."""

    start: datetime
    step: timedelta
    values: tuple[int, ...]

    @property
    def end(self) -> datetime:
        """The start of the last bucket."""
        return self.start + self.step * (len(self.values) - 1)


def series_of(counts: Mapping[datetime, int], last: datetime, step: timedelta, n: int) -> Series:
    """The ``n`` buckets ending with the one starting at ``last``, zero where ``counts`` has none."""
    start = last - step * (n - 1)
    return Series(start, step, tuple(counts.get(start + step * i, 0) for i in range(n)))


def bar_heights(values: tuple[int, ...], height: int) -> list[int]:
    """Each value's bar height, the largest filling ``height``; a non-zero value is never invisible."""
    top = max(values, default=0)
    if top <= 0:
        return [0] * len(values)
    return [0 if v <= 0 else max(1, round(v * height / top)) for v in values]


def _label(at: datetime, step: timedelta) -> str:
    return at.strftime("%H:%M" if step < timedelta(days=1) else "%Y-%m-%d")


def bar_chart(chart_id: str, title: str, series: Series, unit: str) -> str:
    """An SVG bar chart of ``series`` named by ``title`` (its accessible name); ``unit`` names what
    is counted ("beats"). Each bar has its bucket and count as a tooltip."""
    n = len(series.values)
    total = sum(series.values)
    summary = f"{total} {unit} in all"
    if total:
        peak = max(range(n), key=lambda i: series.values[i])
        at = series.start + series.step * peak
        summary += f"; most at {_label(at, series.step)} UTC: {series.values[peak]}"
    width = WIDTH / n
    bars = []
    for i, (value, h) in enumerate(zip(series.values, bar_heights(series.values, HEIGHT), strict=True)):
        at = series.start + series.step * i
        bars.append(
            f'<rect x="{i * width:.2f}" y="{HEIGHT - h}" width="{max(width - 1, 1):.2f}" height="{h}"'
            f' data-v="{value}"><title>{_label(at, series.step)} UTC: {value} {unit}</title></rect>'
        )
    name = html.escape(title)
    return (
        f'<svg class="chart" id="{chart_id}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' data-end="{int(series.end.timestamp())}" data-step="{int(series.step.total_seconds())}"'
        f' data-unit="{html.escape(unit)}">'
        f'<title id="{chart_id}-t">{name}</title><desc id="{chart_id}-d">{html.escape(summary)}</desc>'
        f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>'
        + "".join(bars)
        + "</svg>"
    )
