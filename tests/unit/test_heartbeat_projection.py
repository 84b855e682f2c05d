"""The heartbeat fold and the stats view, against a simple model of what they should compute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.heartbeat_read import DeviceStats, StatsSnapshot, stats_view
from services.projector.heartbeat import (
    DeviceRow,
    HeartbeatState,
    StatsRow,
    fold_heartbeat,
    fold_heartbeat_events,
)
from shared.events import AnyEvent, BeatRecorded, DeviceRegistered, InstallationSetUp, PageVisited

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
