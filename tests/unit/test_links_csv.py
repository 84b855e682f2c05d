"""CSV cells that a spreadsheet would run as a formula are neutralized (OWASP CSV injection)."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.links_read import FORMULA_STARTS, neutralize_cell, usage_csv


@given(st.text())
def test_no_cell_starts_a_formula_and_nothing_else_changes(value: str) -> None:
    cell = neutralize_cell(value)
    assert not cell.startswith(FORMULA_STARTS)
    if value.startswith(FORMULA_STARTS):
        assert cell == "'" + value
    else:
        assert cell == value


@given(st.sampled_from(FORMULA_STARTS), st.text())
def test_every_formula_start_is_neutralized(start: str, rest: str) -> None:
    assert neutralize_cell(start + rest) == "'" + start + rest


def test_examples() -> None:
    link = '=HYPERLINK("http://evil.example","click")'
    assert neutralize_cell(link) == "'" + link
    for value in ("+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralize_cell(value) == "'" + value
    for value in ("alice", "", "a=b", "'quoted", " =spaced"):
        assert neutralize_cell(value) == value


@given(st.lists(st.text(), max_size=10))
def test_the_export_neutralizes_users_and_round_trips_the_rest(users: list[str]) -> None:
    items = [{"user": u, "date": "2016-03-04T14:53:25.740Z", "duration": 5} for u in users]
    rows = list(csv.reader(io.StringIO(usage_csv(items), newline="")))
    assert rows[0] == ["user", "date", "duration"]
    assert [r[0] for r in rows[1:]] == [neutralize_cell(u) for u in users]
    assert all(r[1:] == ["2016-03-04T14:53:25.740Z", "5"] for r in rows[1:])
