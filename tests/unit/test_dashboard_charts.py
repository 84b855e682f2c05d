"""The dashboard's server-drawn charts and its online rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.charts import HEIGHT, bar_chart, bar_heights, series_of
from services.gateway.dashboard_page import ONLINE_WITHIN, is_online

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_a_series_is_a_fixed_window_with_zeros_where_nothing_was_counted() -> None:
    counts = {T0: 2, T0 - 3 * MINUTE: 5, T0 - 60 * MINUTE: 9}  # the last one is outside the hour
    s = series_of(counts, T0, MINUTE, 60)
    assert len(s.values) == 60 and s.values[-1] == 2 and s.values[-4] == 5 and sum(s.values) == 7
    assert s.start == T0 - 59 * MINUTE and s.end == T0


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=100))
def test_bars_fit_the_height_the_largest_fills_it_and_none_that_counted_vanishes(values: list[int]) -> None:
    heights = bar_heights(tuple(values), HEIGHT)
    assert all(0 <= h <= HEIGHT for h in heights)
    assert all((h > 0) == (v > 0) for h, v in zip(heights, values, strict=True))
    if max(values):
        assert max(heights) == HEIGHT


def test_a_chart_has_a_text_alternative_and_a_bar_per_bucket() -> None:
    svg = bar_chart("c1", "Beats of <Laptop>", series_of({T0: 3}, T0, MINUTE, 60), "beats")
    assert 'role="img"' in svg and 'aria-labelledby="c1-t c1-d"' in svg
    assert '<title id="c1-t">Beats of &lt;Laptop&gt;</title>' in svg
    assert "3 beats in all; most at 12:00 UTC: 3" in svg
    assert len(re.findall(r"<rect ", svg)) == 60 and "style=" not in svg
    assert f'data-end="{int(T0.timestamp())}" data-step="60"' in svg


def test_an_empty_chart_says_so() -> None:
    svg = bar_chart("c2", "Nothing", series_of({}, T0, MINUTE, 24), "calls")
    assert "0 calls in all</desc>" in svg


def test_online_means_a_beat_within_the_threshold() -> None:
    assert is_online(T0 - ONLINE_WITHIN, T0) and not is_online(T0 - ONLINE_WITHIN - MINUTE, T0)
    assert not is_online(None, T0)
