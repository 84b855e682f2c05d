"""``GET /api/stats``'s document, read with one statement that has Postgres write the devices' JSON
(kept while the read model's version is unchanged), is what ``json.dumps(stats_view(...))`` wrote."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.gateway.heartbeat_read import LastDevicesJson, read_snapshot, read_stats_json, stats_view
from shared.db import create_pool, migrate

NOW = datetime(2026, 3, 4, 12, 0, 0, 250_000, tzinfo=UTC)
NAMES = [
    "Laptop",
    "zoë's phone",
    "日本語 🎉",
    '"quoted" \\back\\slash',
    "tab\t new\nline\r bell\x07 unit\x1f del\x7f",
    "</script>",
    "line\u2028separator",
]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=2, reset_sessions=False)
    try:
        async with p.acquire() as conn:
            await migrate(conn)
        yield p
    finally:
        await p.close()


async def old_document(pool: asyncpg.Pool) -> str:
    """As the answer was made before: a Python object per device, ``json.dumps`` without the ASCII
    escapes (which Postgres does not write; otherwise the same text)."""
    return json.dumps(stats_view(await read_snapshot(pool), NOW), ensure_ascii=False)


async def checkpoint(pool: asyncpg.Pool, position: int) -> None:
    await pool.execute(
        "INSERT INTO projection_checkpoints (projection, position) VALUES ('heartbeat', $1)"
        " ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position",
        position,
    )


async def test_the_document_is_the_old_one_before_anything_happened(pool: asyncpg.Pool) -> None:
    last = LastDevicesJson()
    assert await read_stats_json(pool, last, NOW) == await old_document(pool)
    assert last.kept is None  # no version to keep it by


async def test_the_document_is_the_old_one_on_tricky_devices_and_follows_each_version(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("INSERT INTO installation (set_up_at) VALUES ($1)", NOW - timedelta(days=3, seconds=1))
    await pool.execute(
        "INSERT INTO heartbeat_stats (total_beats, last_beat, longest_absence_us, num_visits)"
        " VALUES (4321, $1, 7200999999, 17)",
        NOW - timedelta(seconds=90, microseconds=1),
    )
    rows = []
    for i in range(1_000):
        # Beats a microsecond before a whole second, at half of one and after; a device that never beat.
        beat = None if i == 3 else NOW - timedelta(seconds=i * 61, microseconds=(0, 250_001, 750_000)[i % 3])
        rows.append((i, NAMES[i % len(NAMES)] + (f" {i}" if i >= len(NAMES) else ""), NOW, beat, i * 7))
    await pool.executemany(
        "INSERT INTO heartbeat_devices (device_id, name, registered_at, last_beat, num_beats)"
        " VALUES ($1, $2, $3, $4, $5)",
        rows,
    )
    await checkpoint(pool, 10)
    last = LastDevicesJson()
    document = await read_stats_json(pool, last, NOW)
    assert document == await old_document(pool)
    assert json.loads(document) == json.loads(json.dumps(json.loads(document)))
    assert [d["name"] for d in json.loads(document)["devices"][: len(NAMES)]] == NAMES
    assert last.kept is not None and last.kept.position == 10

    # Unchanged version: the kept devices' JSON is used (a row changed behind the projection's back
    # shows that it is), and the rest is read afresh.
    kept = last.kept
    await pool.execute("UPDATE heartbeat_devices SET name = 'renamed' WHERE device_id = 0")
    await pool.execute("UPDATE heartbeat_stats SET num_visits = 18")
    again = json.loads(await read_stats_json(pool, last, NOW))
    assert last.kept is kept and again["devices"][0]["name"] == "Laptop" and again["num_visits"] == 18

    # A new position, or the same position written again (as a rebuild does): read afresh.
    await checkpoint(pool, 11)
    assert await read_stats_json(pool, last, NOW) == await old_document(pool)
    await pool.execute("UPDATE heartbeat_devices SET name = 'rebuilt' WHERE device_id = 0")
    await pool.execute("DELETE FROM projection_checkpoints WHERE projection = 'heartbeat'")
    await checkpoint(pool, 11)
    assert await read_stats_json(pool, last, NOW) == await old_document(pool)
    assert last.kept is not None and last.kept.text.startswith('[{"id": 0, "name": "rebuilt"')
