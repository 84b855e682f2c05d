"""``apply_links`` against Postgres with constructed events: hour boundaries, any batching, any order."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.projector.link_usage import LinksState, fold_usage_events
from services.projector.links import apply_links
from shared.db import migrate
from shared.events import AnyEvent, LinkCreated, LinkDeleted, LinkUpdated, LinkUsed

T0 = datetime(2016, 3, 4, 14, 53, 25, 740000, tzinfo=UTC)
Rows = list[tuple[int, str, datetime, datetime, int]]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    yield c
    await c.close()


def created(link_id: int) -> LinkCreated:
    return LinkCreated(event_id=f"c{link_id}", occurred_at=T0, link_id=link_id, name="L", url="https://x/")


def used(link_id: int, user: str, seconds: float) -> LinkUsed:
    at = T0 + timedelta(seconds=seconds)
    return LinkUsed(
        event_id=f"u{link_id}{user}{seconds}", occurred_at=at, link_id=link_id, user=user, used_at=at
    )


async def apply_in(conn: asyncpg.Connection, events: Sequence[AnyEvent], sizes: Sequence[int]) -> None:
    """Apply ``events`` in batches of the given sizes (the rest in one last batch)."""
    i = 0
    for size in [*sizes, len(events)]:
        batch = [(i + j + 1, e) for j, e in enumerate(events[i : i + size])]
        if batch:
            async with conn.transaction():
                await apply_links(conn, batch)
        i += size


async def sessions(conn: asyncpg.Connection) -> Rows:
    rows = await conn.fetch(
        "SELECT link_id, user_name, started_at, last_at, duration FROM link_usage_sessions"
        " ORDER BY link_id, user_name, started_at"
    )
    return [tuple(r) for r in rows]


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE link_usage_sessions, links")


@pytest.mark.parametrize(
    ("gap", "expected"), [(3599, [(0, 3599)]), (3600, [(0, 3600)]), (3601, [(0, 0), (3601, 0)])]
)
async def test_the_hour_boundary_in_the_read_model(
    conn: asyncpg.Connection, gap: int, expected: list[tuple[int, int]]
) -> None:
    events = [created(1), used(1, "bob", 0), used(1, "bob", gap)]
    for sizes in ([], [1, 1], [2]):  # one batch, or the second use in a later batch
        await reset(conn)
        await apply_in(conn, events, sizes)
        rows = await sessions(conn)
        assert [((r[2] - T0).seconds, r[4]) for r in rows] == expected


async def test_late_uses_across_batches_land_where_their_time_says(conn: asyncpg.Connection) -> None:
    # Two usages, two hours apart; late uses then extend, bridge and precede them.
    events: list[AnyEvent] = [created(1), used(1, "u", 0), used(1, "u", 7200)]
    late = [used(1, "u", 1800), used(1, "u", 5400), used(1, "u", -3600), used(1, "u", 100)]
    await apply_in(conn, [*events, *late], [3, 1, 1, 1, 1])
    assert [(r[2], r[4]) for r in await sessions(conn)] == [(T0 - timedelta(hours=1), 3 * 3600)]


async def test_any_batching_and_order_gives_the_same_rows(conn: asyncpg.Connection) -> None:
    rnd = random.Random(5)
    uses = [
        used(
            rnd.choice([1, 2]),
            rnd.choice(["a", "b", "c"]),
            rnd.choice([0, 3599, 3600, 3601, 7200]) + 1800 * rnd.randint(0, 8),
        )
        for _ in range(60)
    ]
    expected_state = fold_usage_events(LinksState(), [created(1), created(2), *uses])
    expected = sorted(
        (link_id, user, s.start, s.last, s.duration)
        for (link_id, user), ss in expected_state.sessions.items()
        for s in ss
    )
    for _ in range(6):
        shuffled = list(uses)
        rnd.shuffle(shuffled)
        sizes = [rnd.randint(1, 15) for _ in range(8)]
        await reset(conn)
        await apply_in(conn, [created(1), created(2), *shuffled], sizes)
        assert await sessions(conn) == expected


async def test_updates_and_deletes(conn: asyncpg.Connection) -> None:
    events: list[AnyEvent] = [
        created(1),
        created(2),
        used(1, "a", 0),
        used(2, "a", 0),
        LinkUpdated(event_id="up", occurred_at=T0, link_id=2, name="Renamed"),
        LinkDeleted(event_id="del", occurred_at=T0, link_id=1),
        used(1, "a", 10),  # after the delete: ignored
        LinkUpdated(event_id="up2", occurred_at=T0, link_id=1, name="Ghost"),
    ]
    for sizes in ([], [1, 1, 1, 1, 1, 1, 1], [3, 2]):
        await reset(conn)
        await apply_in(conn, events, sizes)
        links = await conn.fetch("SELECT link_id, name FROM links ORDER BY link_id")
        assert [tuple(r) for r in links] == [(2, "Renamed")]
        assert [(r[0], r[1]) for r in await sessions(conn)] == [(2, "a")]
