"""The dashboard's HTML from a board, without a database: escaping, captions, empty states."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.dashboard_page import (
    LIVE_PANELS,
    dashboard_body,
    etag_matches,
    live_panels,
    panels_etag,
)
from services.gateway.dashboard_read import Board, DeviceBoard, LinkBoard, MeteredBoard

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
VIEW = {
    "last_seen": int((NOW - timedelta(seconds=125)).timestamp()),
    "last_seen_relative": 125,
    "longest_absence": 93 * 86_400 + 8 * 3_600,
    "num_visits": 4,
    "total_beats": 12,
    "devices": [],
    "uptime": 8_082_297,
}


def board(**changes: Any) -> Board:
    return replace(Board(NOW, [], 0, [], 0, [], [], [], [], []), **changes)


def test_the_summary_reads_as_people_speak() -> None:
    html = dashboard_body(board(), VIEW, "http://h")
    assert ">2 min ago</time>" in html and 'id="longest_absence">93 d 8 h<' in html
    assert 'id="uptime">93 d 13 h<' in html and 'id="total_beats">12<' in html


def test_hostile_names_are_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    device = DeviceBoard(1, evil, NOW, 1, 0, None, {NOW.replace(second=0): 1}, {})
    link = LinkBoard(2, evil, {}, [(evil, 1, 60)])
    metered = MeteredBoard('o"1', evil, evil, {})
    html = dashboard_body(
        board(
            devices=[device],
            device_count=1,
            links=[link],
            link_count=1,
            media=[(evil, evil, 1)],
            media_ids=[evil],
            metered=[metered],
            modules=[(evil, 1, 2)],
            companies=[(evil, 1, 2)],
        ),
        VIEW,
        'http://"><script>',
    )
    assert "<script" not in html and 'id="calls-o_221-' in html


def test_captions_say_how_many_are_not_shown() -> None:
    device = DeviceBoard(1, "Laptop", None, 0, 0, None)
    html = dashboard_body(board(devices=[device], device_count=51), VIEW, "http://h")
    assert "50 more not shown" in html and 'class="status offline"' in html


def test_every_empty_panel_says_what_to_do_next() -> None:
    html = dashboard_body(board(), VIEW, "http://example.test:8080")
    assert "usagehub devices add Laptop" in html and "http://example.test:8080/api/beat" in html
    assert "usagehub links add" in html and "POST /usages/digital" in html
    assert "POST /api</code> with an org key" in html and "usagehub import git" in html


def test_the_refreshed_panels_are_the_pages_own_after_the_heartbeat_one() -> None:
    full = board(links=[LinkBoard(2, "Docs", {}, [])], link_count=1, media=[("ok", "web", 3)])
    page = dashboard_body(full, VIEW, "http://h")
    fragment = live_panels(full, "http://h")
    assert page.endswith(fragment) and page.startswith('<section id="heartbeat"')
    assert re.findall(r'<section id="([a-z]+)"', fragment) == list(LIVE_PANELS)
    assert 'id="heartbeat"' not in fragment


@given(st.text(max_size=200), st.text(max_size=200))
def test_an_etag_names_its_fragment_alone(a: str, b: str) -> None:
    assert panels_etag(a) == panels_etag(a)
    assert (panels_etag(a) == panels_etag(b)) == (a == b)
    assert re.fullmatch(r'"[0-9a-f]{32}"', panels_etag(a))


def test_if_none_match_is_read_as_a_list_of_tags_weak_or_strong() -> None:
    tag = panels_etag("x")
    assert etag_matches(tag, tag) and etag_matches(f"W/{tag}", tag)
    assert etag_matches(f'"other", {tag}', tag) and etag_matches("*", tag)
    assert not etag_matches(None, tag) and not etag_matches("", tag)
    assert not etag_matches('"other"', tag) and not etag_matches(tag[1:-1], tag)
