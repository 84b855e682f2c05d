"""While a rebuild holds a projection's batches, the live projector does not wait on the lock inside a
batch (a statement that would time out, and be logged as a failure, every minute of a long rebuild):
it waits outside and projects what arrived meanwhile once the lock is released."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient

from services.gateway import keys
from services.projector.consumer import lock_batches
from tests.conftest import admin


async def test_the_live_projector_waits_for_a_rebuild_outside_its_batches(client: TestClient) -> None:
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        async with conn.transaction():
            await lock_batches(conn, "links")  # as `usagehub rebuild links` does for its whole replay
            # Read-your-writes: the answer waits for the links projection, which waits for the lock.
            body = {"name": "Docs", "url": "https://example.org/"}
            create = asyncio.create_task(client.post("/api/links", json=body, headers=admin()))
            await asyncio.sleep(3)
            assert not create.done()
            assert await conn.fetchval("SELECT count(*) FROM links") == 0
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            assert waiting == 0
        resp = await asyncio.wait_for(create, 15)
        assert resp.status == 201, await resp.text()
        assert await conn.fetchval("SELECT count(*) FROM links") == 1
    finally:
        await conn.close()
