"""The dashboard's chart read models: beats per device per minute and hour, and each device's longest
absence, against simple models of what they should be."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.projector.beat_counts import count_beats, hour_of, minute_of
from services.projector.heartbeat import DeviceRow, HeartbeatState, device_beat, fold_heartbeat_events
from shared.events import BeatRecorded, DeviceRegistered

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def beat(device_id: int, us: int) -> BeatRecorded:
    return BeatRecorded(event_id="e", occurred_at=T0 + timedelta(microseconds=us), device_id=device_id)


beats = st.lists(
    st.builds(beat, st.integers(0, 3), st.integers(0, 3 * 86_400 * 10**6)),
    max_size=80,
)


def test_buckets_are_the_minute_and_hour_a_beat_falls_in() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    assert minute_of(at) == datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    assert hour_of(at) == datetime(2026, 3, 4, 5, tzinfo=UTC)


@given(beats)
def test_counts_are_the_beats_of_each_device_in_each_bucket(bs: list[BeatRecorded]) -> None:
    minutes, hours = count_beats(bs)
    for (device, minute), n in minutes.items():
        assert n == sum(1 for b in bs if b.device_id == device and minute_of(b.occurred_at) == minute)
    assert sum(minutes.values()) == sum(hours.values()) == len(bs)
    assert all(h.minute == 0 for _, h in hours)


@given(beats, st.integers(0, 80))
def test_counts_added_batch_by_batch_equal_counting_at_once(bs: list[BeatRecorded], cut: int) -> None:
    # What a rebuild relies on: the stored counters add each batch's counts.
    first, second = count_beats(bs[:cut]), count_beats(bs[cut:])
    at_once = count_beats(bs)
    assert first[0] + second[0] == at_once[0] and first[1] + second[1] == at_once[1]


def model_longest_absence(times: list[int]) -> int:
    """Longest gap from a device's latest beat so far to a later one, in stream order."""
    longest, latest = 0, None
    for t in times:
        if latest is not None:
            longest = max(longest, t - latest)
        latest = t if latest is None else max(latest, t)
    return longest


@given(st.lists(st.integers(0, 10**12), max_size=40))
def test_a_devices_longest_absence_is_its_longest_gap_between_its_own_beats(times: list[int]) -> None:
    device = DeviceRow(1, "d", T0)
    for t in times:
        device = device_beat(device, T0 + timedelta(microseconds=t))
    assert device.num_beats == len(times)
    assert device.longest_absence_us == model_longest_absence(times)
    assert (device.longest_absence_ended is None) == (device.longest_absence_us == 0)


def test_the_absence_ends_at_the_beat_that_closed_it_and_late_beats_open_none() -> None:
    device = DeviceRow(1, "d", T0)
    for us in (0, 10, 1000, 500, 1010):
        device = device_beat(device, T0 + timedelta(microseconds=us))
    assert device.longest_absence_us == 990
    assert device.longest_absence_ended == T0 + timedelta(microseconds=1000)
    assert device.last_beat == T0 + timedelta(microseconds=1010)


def test_each_device_keeps_its_own_absence_beside_the_installations() -> None:
    registered = [
        DeviceRegistered(event_id="e", occurred_at=T0, device_id=i, name=f"d{i}", token_hash="h")
        for i in (1, 2)
    ]
    state = fold_heartbeat_events(HeartbeatState(), [*registered, beat(1, 0), beat(2, 5), beat(1, 100)])
    assert state.devices[1].longest_absence_us == 100 and state.devices[2].longest_absence_us == 0
    assert state.stats.longest_absence_us == 95


def test_counters_are_counters() -> None:
    minutes, _ = count_beats([beat(1, 0), beat(1, 1), beat(2, 61 * 10**6)])
    assert minutes == Counter({(1, T0): 2, (2, T0 + timedelta(minutes=1)): 1})
