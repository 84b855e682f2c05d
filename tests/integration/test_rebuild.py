"""``usagehub rebuild`` drops read models and replays them: the rows come back byte for byte."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway import keys
from tests.conftest import admin
from tests.integration.helpers import dump_tables

HEARTBEAT_TABLES = {
    "installation": "id",
    "heartbeat_devices": "device_id",
    "heartbeat_stats": "id",
    "idempotency_keys": "idempotency_key",
    "projection_checkpoints": "projection",
}


async def usagehub(*args: str, database_url: str, nats_url: str) -> str:
    env = {**os.environ, "USAGEHUB_DATABASE_URL": database_url, "USAGEHUB_NATS_URL": nats_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_rebuild_gives_identical_rows(client: TestClient[web.Request, web.Application]) -> None:
    settings = client.app[keys.SETTINGS]
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
    await client.post("/api/devices/1/token/generate", headers=admin())
    before = await dump_tables(settings.database_url, HEARTBEAT_TABLES)
    assert b"Workstation" in before["heartbeat_devices"] and before["idempotency_keys"]

    out = await usagehub("rebuild", "all", database_url=settings.database_url, nats_url=settings.nats_url)
    assert "rebuilt heartbeat" in out and "rebuilt idempotency" in out

    after = await dump_tables(settings.database_url, HEARTBEAT_TABLES)
    assert after == before
