"""The dashboard's beat counters against Postgres: any batching of the same beats gives the same
rows (old buckets pruned by event time alike), and the counts are the beats of each bucket."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.projector.beat_counts import HOURS_KEPT, MINUTES_KEPT, hour_of, minute_of
from services.projector.heartbeat import TABLES, apply_heartbeat
from shared.db import migrate
from shared.events import AnyEvent, BeatRecorded, DeviceRegistered
from tests.integration.helpers import dump_tables

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DUMPED = {
    "heartbeat_beats_minute": "device_id, minute",
    "heartbeat_beats_hour": "device_id, hour",
    "heartbeat_devices": "device_id",
}


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    yield c
    await c.close()


def history(rnd: random.Random, n: int) -> list[AnyEvent]:
    """Three devices beating over ten days, in time order but for a few beats a second late."""
    events: list[AnyEvent] = [
        DeviceRegistered(event_id=f"r{i}", occurred_at=T0, device_id=i, name=f"d{i}", token_hash="h")
        for i in range(3)
    ]
    at = T0
    for i in range(n):
        at += timedelta(seconds=rnd.choice([1, 20, 59, 600, 3600, 86_400]))
        late = timedelta(seconds=rnd.choice([0, 0, 0, 1]))
        events.append(BeatRecorded(event_id=f"b{i}", occurred_at=at - late, device_id=rnd.randrange(3)))
    return events


async def apply_in(conn: asyncpg.Connection, events: Sequence[AnyEvent], sizes: Sequence[int]) -> None:
    i = 0
    for size in [*sizes, len(events)]:
        batch = [(i + j + 1, e) for j, e in enumerate(events[i : i + size])]
        if batch:
            async with conn.transaction():
                await apply_heartbeat(conn, batch)
        i += size


async def test_any_batching_gives_the_same_counters(conn: asyncpg.Connection) -> None:
    rnd = random.Random(13)
    for _ in range(3):
        events = history(rnd, 150)
        await conn.execute("TRUNCATE " + ", ".join(TABLES))
        await apply_in(conn, events, [])
        expected = await dump_tables(conn, DUMPED)
        for _ in range(3):
            await conn.execute("TRUNCATE " + ", ".join(TABLES))
            await apply_in(conn, events, [rnd.randint(1, 30) for _ in range(12)])
            assert await dump_tables(conn, DUMPED) == expected

        beats = [e for e in events if isinstance(e, BeatRecorded)]
        newest = max(b.occurred_at for b in beats)
        minutes = Counter(
            (b.device_id, minute_of(b.occurred_at))
            for b in beats
            if minute_of(b.occurred_at) >= newest - MINUTES_KEPT
        )
        hours = Counter(
            (b.device_id, hour_of(b.occurred_at))
            for b in beats
            if hour_of(b.occurred_at) >= newest - HOURS_KEPT
        )
        stored_minutes = {
            (r["device_id"], r["minute"]): r["beats"]
            for r in await conn.fetch("SELECT device_id, minute, beats FROM heartbeat_beats_minute")
        }
        stored_hours = {
            (r["device_id"], r["hour"]): r["beats"]
            for r in await conn.fetch("SELECT device_id, hour, beats FROM heartbeat_beats_hour")
        }
        assert stored_minutes == dict(minutes) and stored_hours == dict(hours)
        assert len(stored_hours) < len({(b.device_id, hour_of(b.occurred_at)) for b in beats})  # some pruned
