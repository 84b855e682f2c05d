"""The usage list as JSON built by Postgres (and kept per read-model version) answers exactly what the
dicts of ``links_read.usage`` encoded by ``json.dumps`` answered, on values that are hard to escape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway import keys, links_read
from tests.conftest import admin

Client = TestClient[web.Request, web.Application]
START = datetime(2016, 3, 4, 14, 53, 25, 740_123, tzinfo=UTC)
TRICKY = [
    "zoë",
    "日本語の名前",
    "party 🎉 (outside the BMP)",
    "\"quoted\" and 'single'",
    "back\\slash \\u0041 \\n",
    "tab\there, new\nline, return\r, bell\x07, escape\x1b, unit\x1f, del\x7f",
    "backspace\b formfeed\f",
    "</script><script>alert(1)</script>",
    "line\u2028separator\u2029paragraph",
    "a/b",
    "=HYPERLINK(1)",
    " ",
    "u" * 200,
]


async def _old_answer(conn: asyncpg.Connection, query: links_read.UsageFilter) -> tuple[bytes, bool]:
    """The answer as it was made before: a dict per row, encoded by ``json.dumps`` (without the ASCII
    escapes, which Postgres does not write: the same JSON, byte for byte otherwise)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        items, more = await links_read.usage(conn, 1, query)
    return json.dumps(items, ensure_ascii=False).encode(), more


async def test_usage_json_equals_the_old_answer_on_tricky_values_and_across_pages(client: Client) -> None:
    resp = await client.post(
        "/api/links", json={"name": "Tricky", "url": "https://t.example/"}, headers=admin()
    )
    assert resp.status == 201
    rows = []
    for i in range(2_500):
        user = TRICKY[i % len(TRICKY)] + (f" #{i}" if i >= len(TRICKY) else "")
        # Microseconds that a rounding (rather than truncating) formatter would get wrong.
        started = START + timedelta(seconds=37 * i, microseconds=(0, 999_999, 999, 500_500)[i % 4])
        rows.append((user, started, started + timedelta(seconds=i % 5), (i % 5) + (2**40 if i == 7 else 0)))
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await conn.executemany(
            "INSERT INTO link_usage_sessions (link_id, user_name, started_at, last_at, duration)"
            " VALUES (1, $1, $2, $3, $4)",
            rows,
        )
        pages = [
            ("", links_read.UsageFilter(limit=10_000)),
            ("?limit=1000", links_read.UsageFilter(limit=1000)),
            ("?limit=1000&offset=1000", links_read.UsageFilter(limit=1000, offset=1000)),
            ("?limit=1000&offset=2000", links_read.UsageFilter(limit=1000, offset=2000)),
            ("?limit=7&offset=2499", links_read.UsageFilter(limit=7, offset=2499)),
            ("?offset=2500", links_read.UsageFilter(limit=10_000, offset=2500)),
            ("?user=zoë", links_read.UsageFilter(user="zoë", limit=10_000)),
            (
                "?since=2016-03-04T15:00:00Z&until=2016-03-04T16:00:00Z&limit=20",
                links_read.UsageFilter(
                    since=datetime(2016, 3, 4, 15, tzinfo=UTC),
                    until=datetime(2016, 3, 4, 16, tzinfo=UTC),
                    limit=20,
                ),
            ),
        ]
        for query, as_filter in pages:
            old_body, old_more = await _old_answer(conn, as_filter)
            for _ in range(2):  # read, then answered again from what was kept
                resp = await client.get(f"/api/links/1/usage{query}")
                assert resp.status == 200 and resp.content_type == "application/json"
                assert resp.charset == "utf-8"
                body = await resp.read()
                assert body == old_body, query
                assert json.loads(body) == json.loads(json.dumps(json.loads(old_body)))
                assert ("Link" in resp.headers) == old_more, query
        # Without a page size (no route asks for one, but the filter allows it): every usage, no more.
        assert await links_read.usage_json(conn, 1, links_read.UsageFilter()) == await _old_answer(
            conn, links_read.UsageFilter()
        )
        whole = json.loads(await (await client.get("/api/links/1/usage")).read())
        assert [u["user"] for u in whole[: len(TRICKY)]] == TRICKY
        assert whole[1]["date"] == "2016-03-04T14:54:03.740Z"  # .740123 + .999999 s, truncated
        assert whole[7]["duration"] == 2 + 2**40
    finally:
        await conn.close()


async def test_a_kept_answer_is_never_served_after_the_read_model_moved_on(client: Client) -> None:
    resp = await client.post(
        "/api/links", json={"name": "Kept", "url": "https://k.example/"}, headers=admin()
    )
    assert resp.status == 201
    for user in ("ann", "bob", "cy"):
        resp = await client.post("/api/links/1/usage", data={"user": user})
        assert resp.status == 201
        first = await (await client.get("/api/links/1/usage")).json()
        again = await (await client.get("/api/links/1/usage")).json()
        assert first == again and first[-1]["user"] == user
    resp = await client.delete("/api/links/1", headers=admin())
    assert resp.status == 204
    assert (await client.get("/api/links/1/usage")).status == 404
