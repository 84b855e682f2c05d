"""A link's usage has a default and a largest page (10,000, with a Link to the rest); the link list's
(50 and 1000) are in test_links_api.py."""

from __future__ import annotations

import csv
import io

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway import keys
from tests.conftest import admin

Client = TestClient[web.Request, web.Application]
URL = "https://tool.example/"


async def test_usage_pages_by_10000_by_default_and_at_most(client: Client) -> None:
    resp = await client.post("/api/links", json={"name": "Busy", "url": URL}, headers=admin())
    assert resp.status == 201
    # 10,001 usages, written straight into the read model (posting them would take minutes).
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await conn.execute(
            "INSERT INTO link_usage_sessions (link_id, user_name, started_at, last_at, duration)"
            " SELECT 1, 'user-' || n, t, t, 0 FROM generate_series(1, 10001) AS n,"
            " LATERAL (SELECT timestamptz '2016-03-04 00:00Z' + n * interval '1 minute' AS t) AS at"
        )
    finally:
        await conn.close()

    resp = await client.get("/api/links/1/usage")
    first = await resp.json()
    assert len(first) == 10_000 and first[0]["user"] == "user-1"
    assert resp.headers["Link"] == '</api/links/1/usage?offset=10000&limit=10000>; rel="next"'
    resp = await client.get("/api/links/1/usage?offset=10000&limit=10000")
    assert [u["user"] for u in await resp.json()] == ["user-10001"] and "Link" not in resp.headers

    resp = await client.get("/api/links/1/usage?format=csv&user=user-7")
    assert "Link" not in resp.headers
    resp = await client.get("/api/links/1/usage?format=csv")
    assert len(list(csv.reader(io.StringIO(await resp.text())))) == 1 + 10_000
    assert resp.headers["Link"] == '</api/links/1/usage?format=csv&offset=10000&limit=10000>; rel="next"'

    resp = await client.get("/api/links/1/usage?limit=2&offset=3")
    assert [u["user"] for u in await resp.json()] == ["user-4", "user-5"]
    assert resp.headers["Link"] == '</api/links/1/usage?limit=2&offset=5>; rel="next"'
    assert (await client.get("/api/links/1/usage?limit=10000")).status == 200
    resp = await client.get("/api/links/1/usage?limit=10001")
    assert resp.status == 400 and "10000" in (await resp.json())["error"]
