"""Beats per device per minute and per hour: the dashboard's chart read models.

``count_beats`` is pure and uses only event time, so a rebuild adds up to the same counters. Each
batch adds its counts to the stored ones (in the projection's transaction), then drops the buckets
too old for any chart: a day of minutes and eight days of hours before the batch's newest beat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from shared.db import Conn
from shared.events import BeatRecorded

MINUTES_KEPT = timedelta(days=1)
HOURS_KEPT = timedelta(days=8)


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def count_beats(
    beats: Iterable[BeatRecorded],
) -> tuple[Counter[tuple[int, datetime]], Counter[tuple[int, datetime]]]:
    """Beats per (device, minute) and per (device, hour), by each beat's event time."""
    minutes: Counter[tuple[int, datetime]] = Counter()
    hours: Counter[tuple[int, datetime]] = Counter()
    for beat in beats:
        minutes[beat.device_id, minute_of(beat.occurred_at)] += 1
        hours[beat.device_id, hour_of(beat.occurred_at)] += 1
    return minutes, hours


async def _add(conn: Conn, table: str, column: str, counts: Counter[tuple[int, datetime]]) -> None:
    keys = sorted(counts)
    # One statement per batch; the table and column names are this module's constants.
    await conn.execute(
        f"INSERT INTO {table} (device_id, {column}, beats)"
        " SELECT * FROM unnest($1::int[], $2::timestamptz[], $3::bigint[])"
        f" ON CONFLICT (device_id, {column}) DO UPDATE SET beats = {table}.beats + EXCLUDED.beats",
        [d for d, _ in keys],
        [at for _, at in keys],
        [counts[k] for k in keys],
    )


async def apply_beat_counts(conn: Conn, beats: list[BeatRecorded]) -> None:
    if not beats:
        return
    minutes, hours = count_beats(beats)
    await _add(conn, "heartbeat_beats_minute", "minute", minutes)
    await _add(conn, "heartbeat_beats_hour", "hour", hours)
    newest = max(b.occurred_at for b in beats)
    await conn.execute("DELETE FROM heartbeat_beats_minute WHERE minute < $1", newest - MINUTES_KEPT)
    await conn.execute("DELETE FROM heartbeat_beats_hour WHERE hour < $1", newest - HOURS_KEPT)
