"""The gateway's side of visits: naming a visitor by a hash, and remembering recent views, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.heartbeat_visits import (
    RecentVisitors,
    cookie_visitor,
    fallback_visitor,
    is_visitor_cookie,
    new_cookie_value,
)


def test_visitors_are_named_by_hashes_only() -> None:
    cookie = new_cookie_value()
    assert is_visitor_cookie(cookie) and new_cookie_value() != cookie
    visitor = cookie_visitor(cookie)
    assert len(visitor) == 64 and cookie not in visitor and cookie_visitor(cookie) == visitor
    for bad in (None, "", "short", "x" * 65, "a b" * 10, "é" * 30):
        assert not is_visitor_cookie(bad)
    address, agent = "198.51.100.7", "Mozilla/5.0"
    fallback = fallback_visitor(address, agent, b"key")
    assert len(fallback) == 64 and address not in fallback
    assert fallback == fallback_visitor(address, agent, b"key")
    assert fallback != fallback_visitor(address, agent, b"other key")  # keyed: not reversible by guessing
    assert fallback != fallback_visitor(address, "curl/8", b"key")
    assert len(fallback_visitor(address, "caf\udce9", b"key")) == 64  # undecodable header bytes


# (seconds since the previous view, visitor)
view_runs = st.lists(st.tuples(st.floats(0, 1000, allow_nan=False), st.integers(0, 9)), max_size=200)


@given(view_runs)
def test_a_session_starts_after_30_minutes_without_a_view(run: list[tuple[float, int]]) -> None:
    recent = RecentVisitors(max_size=5, session=1800.0)
    now = 0.0
    last: dict[int, float] = {}
    for dt, visitor in run:
        now += dt
        starts = recent.starts_session(str(visitor), now)
        # Forgetting (beyond 5 visitors) may start a session early, never hide one.
        if visitor not in last or now - last[visitor] > 1800:
            assert starts
        recent.viewed(str(visitor), now)
        last[visitor] = now
        assert not recent.starts_session(str(visitor), now)
        assert len(recent) <= 5
