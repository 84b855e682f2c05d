"""``usagehub rebuild`` drops read models and replays them: the rows come back byte for byte."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from tests.conftest import Services, admin
from tests.integration.helpers import dump_tables, keys_recorded, run_usagehub

HEARTBEAT_TABLES = {
    "installation": "id",
    "heartbeat_devices": "device_id",
    "heartbeat_stats": "id",
    "heartbeat_visitors": "visitor",
    "heartbeat_beats_minute": "device_id, minute",
    "heartbeat_beats_hour": "device_id, hour",
    "idempotency_keys": "idempotency_key",
    "projection_checkpoints": "projection",
}


async def test_rebuild_gives_identical_rows(
    client: TestClient[web.Request, web.Application], services: Services, js: JetStreamContext
) -> None:
    settings = services.settings_for("projector")  # rebuilds run where the projector does
    tokens = []
    for name in ("Laptop", "Phone", "Workstation"):
        resp = await client.post("/api/devices", json={"name": name}, headers=admin())
        tokens.append((await resp.json())["token"])
    for i in range(60):
        headers = {"Authorization": tokens[i % 3]}
        if i % 7 == 0:
            headers["Idempotency-Key"] = f"beat-{i}"
        assert (await client.post("/api/beat", headers=headers)).status == 200
    await client.get("/")
    async with aiohttp.ClientSession() as another:  # a second visitor
        await (await another.get(client.make_url("/"), headers={"User-Agent": "another"})).read()
    await client.post("/api/devices/1/token/generate", headers=admin())
    conn = await asyncpg.connect(settings.database_url)
    await keys_recorded(conn, js)
    before = await dump_tables(conn, HEARTBEAT_TABLES)
    assert b"Workstation" in before["heartbeat_devices"] and before["idempotency_keys"]
    assert before["heartbeat_visitors"].count(b"\n") == 4  # each first view: two names
    assert before["heartbeat_beats_minute"] and before["heartbeat_beats_hour"]  # the dashboard's counters

    code, out, err = await run_usagehub("rebuild", "all", settings=settings)
    assert code == 0, err
    assert "rebuilt heartbeat" in out and "rebuilt idempotency" in out
    # Each replay ends with its progress line: the whole stream as it was at the start, done.
    assert re.search(r"^rebuild heartbeat \[#+\] 100% (\d+)/\1 events .*/s  in +\d+:\d\d$", err, re.M), err

    try:
        assert await dump_tables(conn, HEARTBEAT_TABLES) == before
    finally:
        await conn.close()


async def test_a_rebuild_during_writes_loses_and_doubles_nothing(
    client: TestClient[web.Request, web.Application], services: Services
) -> None:
    settings = services.settings_for("projector")
    token = (await (await client.post("/api/devices", json={"name": "Busy"}, headers=admin())).json())[
        "token"
    ]

    async def beats(n: int) -> None:
        for _ in range(n):
            assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200

    writers = [asyncio.create_task(beats(250)) for _ in range(4)]
    await asyncio.sleep(0.3)  # the rebuild starts while beats keep arriving
    code, _, err = await run_usagehub("rebuild", "heartbeat", settings=settings)
    assert code == 0, err
    await asyncio.gather(*writers)
    stats = await (await client.get("/api/stats")).json()
    assert stats["total_beats"] == 1000 and stats["devices"][0]["num_beats"] == 1000
