"""``apply_heartbeat`` against Postgres with constructed visits: sessions by event time, in any batches."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.projector.heartbeat import apply_heartbeat
from shared.db import migrate
from shared.events import AnyEvent, PageVisited

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
ALICE, BOB = "a" * 64, "b" * 64


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    yield c
    await c.close()


def visit(visitor: str, minutes: float) -> PageVisited:
    return PageVisited(event_id="v", occurred_at=T0 + timedelta(minutes=minutes), path="/", visitor=visitor)


async def apply_in(conn: asyncpg.Connection, events: Sequence[AnyEvent], sizes: Sequence[int]) -> None:
    i = 0
    for size in [*sizes, len(events)]:
        batch = [(i + j + 1, e) for j, e in enumerate(events[i : i + size])]
        if batch:
            async with conn.transaction():
                await apply_heartbeat(conn, batch)
        i += size


async def visits(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(num_visits), 0) FROM heartbeat_stats"))


async def test_a_visitor_is_counted_again_31_minutes_after_their_last_visit(conn: asyncpg.Connection) -> None:
    await apply_in(conn, [visit(ALICE, 0), visit(ALICE, 10), visit(BOB, 12)], [1])
    assert await visits(conn) == 2  # alice once, bob once
    await apply_in(conn, [visit(ALICE, 40)], [])  # 30 minutes after her last visit at 10: same one
    assert await visits(conn) == 2
    await apply_in(conn, [visit(ALICE, 71)], [])  # 31 minutes after 40
    assert await visits(conn) == 3
    rows = dict(await conn.fetch("SELECT visitor, last_visit FROM heartbeat_visitors"))
    assert rows == {ALICE: T0 + timedelta(minutes=71), BOB: T0 + timedelta(minutes=12)}


async def test_any_batching_counts_the_same(conn: asyncpg.Connection) -> None:
    rnd = random.Random(7)
    times = sorted(rnd.uniform(0, 600) for _ in range(60))
    events = [visit(rnd.choice([ALICE, BOB, "c" * 64]), m) for m in times]
    await apply_in(conn, events, [len(events)])
    expected = await visits(conn)
    for _ in range(5):
        await conn.execute("TRUNCATE heartbeat_stats, heartbeat_visitors")
        await apply_in(conn, events, [rnd.randint(1, 7) for _ in range(20)])
        assert await visits(conn) == expected


async def test_visitors_a_day_older_than_the_newest_visit_are_pruned(conn: asyncpg.Connection) -> None:
    await apply_in(conn, [visit(ALICE, 0), visit(BOB, 60 * 24 + 1)], [1])
    assert [r[0] for r in await conn.fetch("SELECT visitor FROM heartbeat_visitors")] == [BOB]
    await apply_in(conn, [visit(ALICE, 60 * 24 + 2)], [])
    assert await visits(conn) == 3  # alice's second visit, a day later, is one
