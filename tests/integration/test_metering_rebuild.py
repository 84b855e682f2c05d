"""Rebuilding the metering projections from the event stream gives the same tables, byte for byte."""

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
from shared.db import checkpoints
from tests.conftest import admin
from tests.integration.helpers import dump_tables, last_sequence
from tests.integration.test_metering_projection import API_CALL_TABLES, METERING_TABLES

Client = TestClient[web.Request, web.Application]


async def caught_up(conn: asyncpg.Connection, js: JetStreamContext, name: str) -> int:
    last = max([await last_sequence(js, subject) for subject in PROJECTIONS[name].filters])
    for _ in range(200):
        if (await checkpoints(conn)).get(name, 0) >= last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {name} projection did not catch up")


async def test_rebuild_gives_identical_counters_and_registry(client: Client, js: JetStreamContext) -> None:
    orgs = [
        ("acme", "America/New_York", None),
        ("acme-eu", "Europe/Paris", "acme"),
        ("globex", "Asia/Kolkata", None),
    ]
    for org_id, zone, parent in orgs:
        body = {"id": org_id, "name": org_id, "time_zone": zone, **({"parent": parent} if parent else {})}
        assert (await client.post("/api/orgs", json=body, headers=admin())).status == 201
    assert (
        await client.post("/api/principals", json={"id": "ops", "super_ops": True}, headers=admin())
    ).status == 201
    issued = [
        await (await client.post(f"/api/orgs/{o}/keys", json={}, headers=admin())).json() for o, _, _ in orgs
    ]
    assert (await client.delete(f"/api/keys/{issued[2]['id']}", headers=admin())).status == 204
    for i, key in enumerate((issued[0]["key"], issued[1]["key"]) * 5):
        assert (
            await client.get("/api/links" if i % 2 else "/api/stats", headers={"X-Api-Key": key})
        ).status == 200
        login = {"a": {"command": "api.authenticate", "params": {"key": key, "ttl": 1 + i * 60}}}
        assert (await (await client.post("/api", json=login)).json())["a"]["success"]
    now = datetime.now(UTC)
    for i in range(12):
        payload = {
            "org": "globex",
            "service": "billing",
            "time": (now - timedelta(hours=i)).isoformat(),
            "count": i + 1,
            "id": f"b{i}",
        }
        await js.publish("usagehub.ingest.metering.billing", json.dumps(payload).encode())
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        for _ in range(200):  # the intake and the gateway's tally are asynchronous: wait for all of it
            calls = await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM api_call_counts")
            if calls >= 78 + 10 + 10:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the last tally flush
        metering = await caught_up(conn, js, "metering")
        api_calls = await caught_up(conn, js, "api_calls")
        before = await dump_tables(conn, {**METERING_TABLES, **API_CALL_TABLES})
        assert before["api_call_counts"] and before["metering_sessions"] and before["api_call_subtree_months"]

        assert await rebuild(conn, js, PROJECTIONS["metering"]) == metering
        assert await rebuild(conn, js, PROJECTIONS["api_calls"]) == api_calls

        assert await dump_tables(conn, {**METERING_TABLES, **API_CALL_TABLES}) == before
    finally:
        await conn.close()
