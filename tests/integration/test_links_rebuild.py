"""Rebuilding the links projection from the event stream gives the same rows, byte for byte."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from services.gateway import keys
from services.projector.projections import PROJECTIONS
from services.projector.rebuild import rebuild
from shared.bus import EVENTS_STREAM
from shared.db import checkpoints
from tests.conftest import admin
from tests.integration.helpers import dump_tables, last_sequence

Client = TestClient[web.Request, web.Application]
# Each table of the projection with its primary key.
LINK_TABLES = {"links": "link_id", "link_usage_sessions": "link_id, user_name, started_at"}


async def uses_stored(js: JetStreamContext, count: int) -> None:
    for _ in range(200):
        info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.links.used")
        if sum((info.state.subjects or {}).values()) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} uses reached the event stream")


async def caught_up(conn: asyncpg.Connection, js: JetStreamContext) -> int:
    last = await last_sequence(js, "usagehub.events.links.>")
    for _ in range(200):
        if (await checkpoints(conn)).get("links", 0) >= last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError("the links projection did not catch up")


async def test_rebuild_gives_identical_rows(client: Client, js: JetStreamContext) -> None:
    for name in ("Docs", "Wiki", "Gone", "Chat"):
        body = {"name": name, "url": f"https://{name.lower()}.example.org/", "description": name * 3}
        assert (await client.post("/api/links", json=body, headers=admin())).status == 201
    patch = {"url": "http://wiki.example.com/", "description": None}
    assert (await client.patch("/api/links/2", json=patch, headers=admin())).status == 200
    for i in range(30):
        user = ["alice", "bob", "carol"][i % 3]
        assert (await client.post(f"/api/links/{1 + i % 4}/usage", data={"user": user})).status == 201
    assert (await client.delete("/api/links/3", headers=admin())).status == 204
    # Another service's uses with its own times, out of order, bridging and extending usages.
    now = datetime.now(UTC)
    for i, minutes in enumerate([4, 1, 3.5, 2, 4.5, 0.5]):
        payload = {"link_id": 4, "user": "dave", "used_at": (now - timedelta(minutes=minutes)).isoformat()}
        data = json.dumps(payload).encode()
        await js.publish("usagehub.ingest.link_usage", data, headers={"Nats-Msg-Id": f"m{i}"})
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await uses_stored(js, 36)  # the intake is asynchronous: wait for its six
        last = await caught_up(conn, js)
        before = await dump_tables(conn, LINK_TABLES)
        assert before["links"].count(b"\n") == 3 and b"Gone" not in before["links"]
        assert b"dave" in before["link_usage_sessions"]

        position = await rebuild(conn, js, PROJECTIONS["links"])

        assert position == last
        assert await dump_tables(conn, LINK_TABLES) == before
        assert (await checkpoints(conn))["links"] == last
    finally:
        await conn.close()
    # The gateway reads the rebuilt rows as before.
    resp = await client.get("/api/links/4/usage")
    assert [u["user"] for u in await resp.json()].count("dave") == 1
