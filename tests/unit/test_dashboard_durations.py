"""Durations on the dashboard, as people read them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.durations import UNITS, ago, human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (42, "42 s"),
        (60, "1 min"),
        (303, "5 min 3 s"),
        (7_500, "2 h 5 min"),
        (8_082_297, "93 d 13 h"),
        (93 * 86_400 + 8 * 3_600 + 59, "93 d 8 h"),
        (3 * 86_400 + 300, "3 d"),  # the minutes are not the unit right below days
        (-5, "0 s"),
    ],
)
def test_human_durations(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@given(st.integers(1, 10**9), st.integers(1, 4))
def test_a_duration_never_reads_longer_than_it_was(seconds: int, parts: int) -> None:
    words = human_duration(seconds, parts).split()
    sizes = dict(UNITS)
    shown = sum(int(n) * sizes[unit] for n, unit in zip(words[::2], words[1::2], strict=True))
    assert 0 < shown <= seconds and len(words) <= 2 * parts


def test_ago() -> None:
    assert ago(None) == "never" and ago(0) == "just now"
    assert ago(125) == "2 min ago" and ago(86_400 * 3 + 5) == "3 d ago"
