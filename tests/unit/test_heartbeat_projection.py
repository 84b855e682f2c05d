"""The heartbeat fold and the stats view, against a simple model of what they should compute."""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.heartbeat_read import DeviceStats, StatsSnapshot, stats_view
from services.projector.heartbeat import (
    VISIT_SESSION,
    DeviceRow,
    HeartbeatState,
    StatsRow,
    fold_heartbeat,
    fold_heartbeat_events,
    starts_visit,
)
from shared.events import (
    AnyEvent,
    BeatRecorded,
    DeviceRegistered,
    DeviceTokenRegenerated,
    InstallationSetUp,
    PageVisited,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(us: int) -> datetime:
    return T0 + timedelta(microseconds=us)


def beat(device_id: int, us: int) -> BeatRecorded:
    return BeatRecorded(event_id="e", occurred_at=at(us), device_id=device_id)


def registered(device_id: int, us: int = 0) -> DeviceRegistered:
    return DeviceRegistered(
        event_id="e", occurred_at=at(us), device_id=device_id, name=f"d{device_id}", token_hash="h"
    )


# A history: some devices, then beats (device, microsecond offset) and page visits in stream order.
histories = st.tuples(
    st.integers(min_value=1, max_value=4),
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 3), st.integers(0, 10**10)),
            st.just("visit"),
        ),
        max_size=60,
    ),
)


def build(n_devices: int, items: list[tuple[int, int] | str]) -> list[AnyEvent]:
    events: list[AnyEvent] = [InstallationSetUp(event_id="e", occurred_at=T0)]
    events += [registered(i) for i in range(n_devices)]
    for item in items:
        if item == "visit":
            events.append(PageVisited(event_id="e", occurred_at=T0, path="/"))
        else:
            device, us = item  # type: ignore[misc]
            events.append(beat(device % n_devices, us))
    return events


@given(histories)
def test_fold_matches_a_simple_model(history: tuple[int, list[tuple[int, int] | str]]) -> None:
    n_devices, items = history
    events = build(n_devices, items)
    state = fold_heartbeat_events(HeartbeatState(), events)

    beats = [e for e in events if isinstance(e, BeatRecorded)]
    assert state.stats.total_beats == len(beats)
    assert state.stats.num_visits == sum(1 for i in items if i == "visit")
    for device_id in range(n_devices):
        mine = [b.occurred_at for b in beats if b.device_id == device_id]
        assert state.devices[device_id].num_beats == len(mine)
        assert state.devices[device_id].last_beat == (max(mine) if mine else None)
    times = [b.occurred_at for b in beats]
    assert state.stats.last_beat == (max(times) if times else None)
    # Model: the longest forward gap from the latest beat seen so far to the next beat in stream order.
    longest, latest = 0, None
    for t in times:
        if latest is not None:
            longest = max(longest, int((t - latest) / timedelta(microseconds=1)))
        latest = t if latest is None else max(latest, t)
    assert state.stats.longest_absence_us == longest
    assert state.set_up_at == T0


@given(histories, st.integers(min_value=0, max_value=60))
def test_folding_in_batches_equals_folding_at_once(
    history: tuple[int, list[tuple[int, int] | str]], cut: int
) -> None:
    events = build(*history)
    whole = fold_heartbeat_events(HeartbeatState(), events)
    split = fold_heartbeat_events(fold_heartbeat_events(HeartbeatState(), events[:cut]), events[cut:])
    assert whole == split


def test_gaps_in_time_order() -> None:
    events = [registered(0), beat(0, 0), beat(0, 5_000_000), beat(0, 6_000_000), beat(0, 20_000_000)]
    assert fold_heartbeat_events(HeartbeatState(), events).stats.longest_absence_us == 14_000_000


def test_a_late_arriving_older_beat_opens_no_gap() -> None:
    events = [registered(0), beat(0, 10_000_000), beat(0, 9_000_000), beat(0, 11_000_000)]
    state = fold_heartbeat_events(HeartbeatState(), events)
    assert state.stats.longest_absence_us == 1_000_000
    assert state.stats.last_beat == at(11_000_000)


def test_first_set_up_wins() -> None:
    state = fold_heartbeat(HeartbeatState(), InstallationSetUp(event_id="a", occurred_at=T0))
    state = fold_heartbeat(state, InstallationSetUp(event_id="b", occurred_at=at(5)))
    assert state.set_up_at == T0


def snapshot(last_beat: datetime | None, longest_us: int, set_up_at: datetime | None = T0) -> StatsSnapshot:
    return StatsSnapshot(
        set_up_at=set_up_at,
        total_beats=0 if last_beat is None else 1,
        last_beat=last_beat,
        longest_absence_us=longest_us,
        num_visits=0,
        devices=(DeviceStats(0, "Laptop", last_beat, 0 if last_beat is None else 1),),
    )


def test_stats_with_no_beats() -> None:
    view = stats_view(snapshot(None, 0), T0 + timedelta(seconds=90))
    assert view["last_seen"] is None and view["last_seen_relative"] is None
    assert view["longest_absence"] == 0 and view["uptime"] == 90
    assert view["devices"] == [{"id": 0, "name": "Laptop", "last_beat": None, "num_beats": 0}]


@given(st.integers(0, 10**6), st.integers(0, 10**12), st.integers(0, 10**6))
def test_longest_absence_includes_the_open_gap(last_s: int, longest_us: int, since_s: int) -> None:
    last = T0 + timedelta(seconds=last_s)
    now = last + timedelta(seconds=since_s, microseconds=999)
    view = stats_view(snapshot(last, longest_us), now)
    assert view["last_seen"] == int(last.timestamp())
    assert view["last_seen_relative"] == since_s
    assert view["longest_absence"] == max(longest_us // 1_000_000, since_s)
    assert view["uptime"] == last_s + since_s


def test_device_rows_are_plain_values() -> None:
    row = DeviceRow(device_id=1, name="x", registered_at=T0)
    assert (row.num_beats, row.last_beat) == (0, None)
    assert StatsRow().total_beats == 0


# --- visits: a visitor's session --------------------------------------------------------------


def visit(visitor: str, minutes: float) -> PageVisited:
    return PageVisited(event_id="e", occurred_at=T0 + timedelta(minutes=minutes), path="/", visitor=visitor)


# Views as (visitor, whole seconds since T0, as minutes), in time order, as one gateway sees them.
views = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 36_000)), max_size=80).map(
    lambda vs: [(v, s / 60) for v, s in sorted(vs, key=lambda v: v[1])]
)


def sessions_model(vs: list[tuple[str, float]]) -> int:
    """Web analytics' rule, directly: per visitor, one visit plus one per gap over 30 minutes."""
    count = 0
    for visitor in {v for v, _ in vs}:
        times = [round(t * 60) for v, t in vs if v == visitor]
        count += 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 1800)
    return count


@given(views)
def test_each_view_appended_counts_the_sessions_web_analytics_count(vs: list[tuple[str, float]]) -> None:
    state = fold_heartbeat_events(HeartbeatState(), [visit(v, t) for v, t in vs])
    assert state.stats.num_visits == sessions_model(vs)


@given(views, st.randoms(use_true_random=False))
def test_views_appended_twice_by_several_gateways_count_once(vs: list[tuple[str, float]], rnd: Any) -> None:
    # Some views reach the stream twice (two gateways that each did not know of the other's
    # view), stamped by ingest a few milliseconds apart; concurrent appends may land in either order.
    events = [visit(v, t) for v, t in vs]
    events += [visit(v, t + rnd.randint(1, 9) / 60_000) for v, t in vs if rnd.random() < 0.5]
    events.sort(key=lambda e: e.occurred_at)
    for i in range(len(events) - 1):
        close = events[i + 1].occurred_at - events[i].occurred_at < timedelta(milliseconds=10)
        if close and rnd.random() < 0.5:
            events[i], events[i + 1] = events[i + 1], events[i]
    assert fold_heartbeat_events(HeartbeatState(), events).stats.num_visits == sessions_model(vs)


@given(views, st.integers(0, 80))
def test_visits_fold_the_same_in_any_batches(vs: list[tuple[str, float]], cut: int) -> None:
    events = [visit(v, t) for v, t in vs]
    whole = fold_heartbeat_events(HeartbeatState(), events)
    first = fold_heartbeat_events(HeartbeatState(), events[:cut])
    # A new batch starts from the rows the database holds: the visitors' latest visits.
    split = fold_heartbeat_events(replace(first, visitors=dict(first.visitors)), events[cut:])
    assert whole.stats == split.stats and whole.visitors == split.visitors


def test_the_session_rule() -> None:
    reloads = [visit("a", m * 0.5) for m in range(50)]  # 50 reloads over 25 minutes
    assert fold_heartbeat_events(HeartbeatState(), reloads).stats.num_visits == 1
    assert fold_heartbeat_events(HeartbeatState(), [visit("a", 0), visit("b", 1)]).stats.num_visits == 2
    again = [visit("a", 0), visit("a", 30), visit("a", 61)]  # 30 is within; 61 is 31 after 30
    assert fold_heartbeat_events(HeartbeatState(), again).stats.num_visits == 2
    assert starts_visit(None, T0) and not starts_visit(T0, T0 + VISIT_SESSION)
    assert starts_visit(T0, T0 + VISIT_SESSION + timedelta(microseconds=1))
    assert not starts_visit(T0, T0 - timedelta(hours=2))  # an older copy arriving late
    # Events from before visits were sessions (no visitor) each count, as they did.
    legacy = [PageVisited(event_id="e", occurred_at=T0, path="/") for _ in range(3)]
    assert fold_heartbeat_events(HeartbeatState(), legacy).stats.num_visits == 3


def test_a_first_view_without_a_cookie_starts_the_session_of_the_cookie_it_was_given() -> None:
    first = PageVisited(event_id="e", occurred_at=T0, path="/", visitor="f", cookie_visitor="c")
    later = [visit("c", 10), visit("c", 40)]  # other gateways, which had not seen the first view
    state = fold_heartbeat_events(HeartbeatState(), [first, *later])
    assert state.stats.num_visits == 1 and state.visitors == {"f": T0, "c": T0 + timedelta(minutes=40)}
    assert fold_heartbeat_events(state, [visit("c", 71)]).stats.num_visits == 2


# --- the batch fold is the event fold, folded ---------------------------------------------------

mixed_events = st.lists(
    st.one_of(
        st.builds(lambda d, us: beat(d, us), st.integers(0, 4), st.integers(0, 10**10)),
        st.builds(lambda d, us: registered(d, us), st.integers(0, 4), st.integers(0, 10**10)),
        st.builds(
            lambda v, c, s: PageVisited(
                event_id="e", occurred_at=at(s * 1_000_000), path="/", visitor=v, cookie_visitor=c
            ),
            st.sampled_from(["", "a", "b", "c"]),
            st.sampled_from(["", "b", "d"]),
            st.integers(0, 36_000),
        ),
        st.builds(lambda us: InstallationSetUp(event_id="e", occurred_at=at(us)), st.integers(0, 10**10)),
        st.builds(
            lambda d: DeviceTokenRegenerated(event_id="e", occurred_at=T0, device_id=d, token_hash="h"),
            st.integers(0, 4),
        ),
    ),
    max_size=60,
)


@given(mixed_events, mixed_events)
def test_the_batch_fold_equals_folding_each_event_in_turn(
    first: list[AnyEvent], then: list[AnyEvent]
) -> None:
    start = functools.reduce(fold_heartbeat, first, HeartbeatState())
    assert fold_heartbeat_events(start, then) == functools.reduce(fold_heartbeat, then, start)
    assert fold_heartbeat_events(HeartbeatState(), first + then) == functools.reduce(
        fold_heartbeat, first + then, HeartbeatState()
    )
