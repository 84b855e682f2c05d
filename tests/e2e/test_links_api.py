"""The Lighthouse usage API through HTTP: every route, status code and field, and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from services.gateway import keys
from services.gateway.app import init_app
from tests.conftest import SECRET, Services, admin, with_settings
from tests.integration.helpers import run_usagehub

Client = TestClient[web.Request, web.Application]
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def create(client: Client, name: str = "Docs", url: str = "https://example.org/", **more: Any) -> Any:
    resp = await client.post("/api/links", json={"name": name, "url": url, **more}, headers=admin())
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def post_usage(client: Client, link_id: int, user: str) -> None:
    resp = await client.post(f"/api/links/{link_id}/usage", data={"user": user})
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {"status": "ok"}


async def usage(client: Client, link_id: int, query: str = "") -> Any:
    resp = await client.get(f"/api/links/{link_id}/usage{query}")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def links(client: Client, query: str = "") -> Any:
    resp = await client.get(f"/api/links{query}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def error(resp: Any, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


# --- links ------------------------------------------------------------------------------------


async def test_create_link_returns_it_with_a_sequential_id(client: Client) -> None:
    before = datetime.now(UTC)
    first = await create(client, "Docs", "https://example.org/docs", description="The manual")
    second = await create(client, "Wiki", "http://wiki.example.org")
    assert first == {
        "id": 1,
        "name": "Docs",
        "url": "https://example.org/docs",
        "description": "The manual",
        "created_at": first["created_at"],
    }
    assert (second["id"], second["description"]) == (2, "")
    assert DATE.match(first["created_at"])
    created_at = datetime.fromisoformat(first["created_at"])
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC)
    # Read-your-writes: the answer and a GET straight after agree, byte for byte.
    resp = await client.get("/api/links/1")
    assert resp.status == 200 and await resp.json() == first


async def test_concurrent_creations_get_unique_sequential_ids(client: Client) -> None:
    made = await asyncio.gather(*(create(client, f"link-{i}") for i in range(20)))
    assert sorted(m["id"] for m in made) == list(range(1, 21))
    page = await links(client, "?limit=100")
    assert {i["id"]: i["name"] for i in page["items"]} == {m["id"]: m["name"] for m in made}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1]",
        b"{}",
        b'{"url": "https://example.org/"}',
        b'{"name": "Docs"}',
        b'{"name": "", "url": "https://example.org/"}',
        b'{"name": "   ", "url": "https://example.org/"}',
        b'{"name": 7, "url": "https://example.org/"}',
        b'{"name": "Docs", "url": 7}',
        b'{"name": "Docs", "url": "https://example.org/", "description": 7}',
        json.dumps({"name": "x" * 201, "url": "https://example.org/"}).encode(),
        b'{"name": "Docs", "url": "/relative"}',
        b'{"name": "Docs", "url": "ftp://example.org/"}',
        b'{"name": "Docs", "url": "https://"}',
        json.dumps({"name": "Docs", "url": "https://example.org/" + "x" * 1981}).encode(),
        json.dumps({"name": "Docs", "url": "https://example.org/", "description": "d" * 2001}).encode(),
        b'{"name": "Docs", "url": "https://example.org/", "description": "a\\u0000b"}',
        b'{"name": "Docs\\ud800", "url": "https://example.org/"}',
    ],
)
async def test_create_link_rejects_invalid_bodies_with_400(client: Client, body: bytes) -> None:
    resp = await client.post("/api/links", data=body, headers=admin(**{"Content-Type": "application/json"}))
    await error(resp, 400)
    assert (await links(client))["total"] == 0


async def test_create_link_accepts_the_limits(client: Client) -> None:
    url = "https://example.org/" + "x" * 1980
    made = await create(client, "n" * 200, url, description="d" * 2000)
    assert (len(made["name"]), len(made["url"]), len(made["description"])) == (200, 2000, 2000)
    lines = await create(client, "Ünïcode ✓", "http://example.org/ä?q=1#x", description="one\ntwo\tthree")
    assert await (await client.get(f"/api/links/{lines['id']}")).json() == lines


async def test_list_links_pages_by_id(client: Client) -> None:
    for i in range(5):
        await create(client, f"link-{i}")
    page = await links(client, "?limit=2")
    assert [i["id"] for i in page["items"]] == [1, 2]
    assert (page["total"], page["limit"], page["offset"], page["next_offset"]) == (5, 2, 0, 2)
    page = await links(client, "?limit=2&offset=4")
    assert [i["id"] for i in page["items"]] == [5] and page["next_offset"] is None
    default = await links(client)
    assert (default["limit"], default["offset"], len(default["items"])) == (50, 0, 5)
    assert set(default["items"][0]) == {"id", "name", "url", "description", "created_at"}
    for query in ("?limit=0", "?limit=1001", "?limit=x", "?offset=-1", "?offset=1.5"):
        await error(await client.get(f"/api/links{query}"), 400)


async def test_get_unknown_link_is_404(client: Client) -> None:
    await create(client)
    for link_id in ("2", "0", "-1", "abc", "1e3", "9999999999"):
        await error(await client.get(f"/api/links/{link_id}"), 404)


async def test_patch_changes_only_the_given_fields(client: Client) -> None:
    made = await create(client, "Docs", "https://example.org/", description="old")
    resp = await client.patch("/api/links/1", json={"name": "Manual"}, headers=admin())
    assert resp.status == 200
    assert await resp.json() == {**made, "name": "Manual"}
    resp = await client.patch(
        "/api/links/1", json={"url": "http://example.com/x", "description": None}, headers=admin()
    )
    changed = {**made, "name": "Manual", "url": "http://example.com/x", "description": ""}
    assert await resp.json() == changed
    assert await (await client.get("/api/links/1")).json() == changed


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"not json",
        b'{"name": ""}',
        b'{"name": null}',
        b'{"url": "nope"}',
        b'{"colour": "red"}',
        json.dumps({"description": "d" * 2001}).encode(),
    ],
)
async def test_patch_with_bad_arguments_is_400_for_a_link_and_404_without(
    client: Client, body: bytes
) -> None:
    made = await create(client)
    headers = admin(**{"Content-Type": "application/json"})
    await error(await client.patch("/api/links/1", data=body, headers=headers), 400)
    await error(await client.patch("/api/links/2", data=body, headers=headers), 404)
    assert await (await client.get("/api/links/1")).json() == made


async def test_delete_makes_a_link_404_everywhere(client: Client) -> None:
    await create(client, "Gone")
    kept = await create(client, "Kept")
    await post_usage(client, 1, "alice")
    resp = await client.delete("/api/links/1", headers=admin())
    assert resp.status == 204 and await resp.read() == b""
    await error(await client.get("/api/links/1"), 404)
    await error(await client.get("/api/links/1/usage"), 404)
    await error(await client.get("/api/links/1/usage?format=csv"), 404)
    await error(await client.get("/api/links/1/stats"), 404)
    await error(await client.post("/api/links/1/usage", data={"user": "alice"}), 404)
    await error(await client.patch("/api/links/1", json={"name": "Back"}, headers=admin()), 404)
    await error(await client.delete("/api/links/1", headers=admin()), 404)
    assert (await links(client))["items"] == [kept]
    assert (await create(client, "New"))["id"] == 3  # ids are never reused


async def test_concurrent_deletes_succeed_once(client: Client) -> None:
    await create(client)
    statuses = await asyncio.gather(*(client.delete("/api/links/1", headers=admin()) for _ in range(5)))
    assert sorted(r.status for r in statuses) == [204, 404, 404, 404, 404]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "wrong"}, {"Authorization": SECRET + "x"}, {"Authorization": SECRET[:-1]}],
)
async def test_admin_routes_need_the_secret_key(client: Client, headers: dict[str, str]) -> None:
    await create(client)
    await error(await client.post("/api/links", json={"name": "x", "url": "http://x/"}, headers=headers), 401)
    await error(await client.patch("/api/links/1", json={"name": "y"}, headers=headers), 401)
    await error(await client.patch("/api/links/7", json={"name": "y"}, headers=headers), 401)
    await error(await client.delete("/api/links/1", headers=headers), 401)
    assert (await links(client))["total"] == 1
    # Reading and posting usage need no key.
    assert (await client.get("/api/links/1")).status == 200
    await post_usage(client, 1, "alice")


async def test_admin_routes_do_not_exist_without_a_secret_key(services: Services) -> None:
    async with TestClient(TestServer(init_app(services.settings))) as keyed:
        await create(keyed)
    settings = with_settings(services.settings, secret_key="")
    async with TestClient(TestServer(init_app(settings))) as client:
        for headers in ({}, {"Authorization": ""}):
            resp = await client.post("/api/links", json={"name": "x", "url": "http://x/"}, headers=headers)
            assert await resp.json() == {"error": "not found"} and resp.status == 404
            assert (await client.patch("/api/links/1", json={"name": "y"}, headers=headers)).status == 404
            assert (await client.delete("/api/links/1", headers=headers)).status == 404
        assert (await links(client))["total"] == 1
        await post_usage(client, 1, "alice")
        assert len(await usage(client, 1)) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/links"),
        ("DELETE", "/api/links"),
        ("PUT", "/api/links/1"),
        ("POST", "/api/links/1"),
        ("PUT", "/api/links/1/usage"),
        ("DELETE", "/api/links/1/usage"),
        ("POST", "/api/links/1/stats"),
    ],
)
async def test_wrong_methods_are_405_with_allow(client: Client, method: str, path: str) -> None:
    await create(client)
    resp = await client.request(method, path, headers=admin())
    await error(resp, 405)
    assert set(resp.headers["Allow"].split(",")) <= {"GET", "HEAD", "POST", "PATCH", "DELETE"}


# --- usage ------------------------------------------------------------------------------------


async def test_post_usage_then_get_shows_it(client: Client) -> None:
    await create(client)
    before = datetime.now(UTC)
    await post_usage(client, 1, "alice")
    items = await usage(client, 1)
    assert len(items) == 1 and set(items[0]) == {"user", "date", "duration"}
    assert (items[0]["user"], items[0]["duration"]) == ("alice", 0)
    assert DATE.match(items[0]["date"])
    date = datetime.fromisoformat(items[0]["date"])
    assert before - timedelta(milliseconds=1) <= date <= datetime.now(UTC)


async def test_read_your_writes_for_every_post(client: Client) -> None:
    await create(client)
    for i in range(10):
        await post_usage(client, 1, f"user-{i}")
        assert [u["user"] for u in await usage(client, 1)] == [f"user-{j}" for j in range(i + 1)]


async def test_a_post_within_the_hour_extends_the_usage(client: Client) -> None:
    await create(client)
    await post_usage(client, 1, "bob")
    await asyncio.sleep(1.1)
    await post_usage(client, 1, "bob")
    items = await usage(client, 1)
    assert len(items) == 1 and items[0]["user"] == "bob" and 1 <= items[0]["duration"] <= 3


async def test_usage_accepts_a_json_body(client: Client) -> None:
    await create(client)
    resp = await client.post("/api/links/1/usage", json={"user": "claire"})
    assert resp.status == 201 and await resp.json() == {"status": "ok"}
    resp = await client.post(
        "/api/links/1/usage", data="user=dave", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 201
    assert sorted(u["user"] for u in await usage(client, 1)) == ["claire", "dave"]


async def test_usage_accepts_a_multipart_form(client: Client) -> None:
    await create(client)
    form = aiohttp.FormData({"user": "erin"}, default_to_multipart=True)
    assert (await client.post("/api/links/1/usage", data=form)).status == 201
    assert [u["user"] for u in await usage(client, 1)] == ["erin"]


BAD_USAGE_BODIES: list[tuple[dict[str, str], bytes, str]] = [
    ({}, b"", "user is required"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=alice", "user is required"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"user=", "non-empty"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"user=%20%20", "non-empty"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"user=" + b"x" * 201, "at most 200"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"user=a%00b", "control"),
    ({"Content-Type": "application/json"}, b'{"user": ""}', "non-empty"),
    ({"Content-Type": "application/json"}, b'{"user": 7}', "must be a string"),
    ({"Content-Type": "application/json"}, b'{"user": null}', "user is required"),
    ({"Content-Type": "application/json"}, b'["alice"]', "JSON object"),
    ({"Content-Type": "application/json"}, b"{nope", "JSON object"),
    ({"Content-Type": "application/json"}, b'{"user": "' + b"x" * 20000 + b'"}', "too large"),
    # Text that could never be encoded (a lone surrogate) or decoded (not UTF-8).
    ({"Content-Type": "application/json"}, rb'{"user": "a\ud800"}', "JSON object"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"user=\xff", "UTF-8"),
]


@pytest.mark.parametrize(("headers", "body", "detail"), BAD_USAGE_BODIES)
async def test_bad_usage_arguments_are_400_with_detail(
    client: Client, headers: dict[str, str], body: bytes, detail: str
) -> None:
    await create(client)
    message = await error(await client.post("/api/links/1/usage", data=body, headers=headers), 400)
    assert detail in message
    assert await usage(client, 1) == []


@pytest.mark.parametrize(("headers", "body", "detail"), BAD_USAGE_BODIES)
async def test_an_unknown_link_is_404_before_the_arguments_are_checked(
    client: Client, headers: dict[str, str], body: bytes, detail: str
) -> None:
    await create(client)
    for link_id in ("2", "0", "abc"):
        resp = await client.post(f"/api/links/{link_id}/usage", data=body, headers=headers)
        await error(resp, 404)


async def test_user_of_200_characters_is_accepted(client: Client) -> None:
    await create(client)
    await post_usage(client, 1, "u" * 200)
    assert (await usage(client, 1))[0]["user"] == "u" * 200


async def test_200_parallel_posts_by_one_user_are_one_usage(client: Client) -> None:
    await create(client)
    await create(client, "Other")
    resps = await asyncio.gather(
        *(client.post("/api/links/1/usage", data={"user": "alice"}) for _ in range(200)),
        *(client.post("/api/links/2/usage", data={"user": "alice"}) for _ in range(20)),
    )
    assert [r.status for r in resps] == [201] * 220
    first = await usage(client, 1)
    assert len(first) == 1 and first[0]["user"] == "alice" and first[0]["duration"] <= 60
    assert len(await usage(client, 2)) == 1


async def test_an_idempotency_key_makes_a_retry_one_use(client: Client) -> None:
    await create(client)
    for _ in range(3):
        resp = await client.post(
            "/api/links/1/usage", data={"user": "alice"}, headers={"Idempotency-Key": "use-1"}
        )
        assert resp.status == 201 and await resp.json() == {"status": "ok"}
    assert len(await usage(client, 1)) == 1


async def test_a_user_with_a_nul_and_an_idempotency_key_is_400(client: Client) -> None:
    """Found by the fuzzer: the user is part of the key's scope, and a NUL in it made the key's
    lookup in Postgres fail (503) before the user was checked."""
    link = await (
        await client.post("/api/links", json={"name": "Wiki", "url": "https://wiki.example"}, headers=admin())
    ).json()
    resp = await client.post(
        f"/api/links/{link['id']}/usage", json={"user": "a\u0000b"}, headers={"Idempotency-Key": "nul-1"}
    )
    assert resp.status == 400, await resp.text()
    assert "control characters" in (await resp.json())["error"]


async def test_usage_is_oldest_first_with_filters_and_stable_paging(client: Client) -> None:
    await create(client)
    users = ["carol", "alice", "bob", "alice2", "dave"]
    for user in users:
        await post_usage(client, 1, user)
    items = await usage(client, 1)
    assert [u["user"] for u in items] == users
    assert [u["date"] for u in items] == sorted(u["date"] for u in items)
    assert await usage(client, 1, "?user=alice") == [items[1]]
    assert await usage(client, 1, "?user=nobody") == []
    assert await usage(client, 1, "?limit=2") == items[:2]
    assert await usage(client, 1, "?limit=2&offset=2") == items[2:4]
    assert await usage(client, 1, "?offset=4") == items[4:]
    since = items[2]["date"]
    assert await usage(client, 1, f"?since={since}") == items[2:]
    assert await usage(client, 1, f"?until={since}") == items[:2]
    assert await usage(client, 1, f"?since={items[1]['date']}&until={items[3]['date']}") == items[1:3]
    assert await usage(client, 1, "?since=2000-01-01") == items
    for query in (
        "?limit=0",
        "?limit=-1",
        "?offset=x",
        "?since=yesterday",
        "?until=2016-13-01",
        "?format=xml",
        "?user=%00",
        "?user=" + "u" * 201,
    ):
        await error(await client.get(f"/api/links/1/usage{query}"), 400)


async def test_usage_as_csv(client: Client) -> None:
    await create(client)
    await post_usage(client, 1, "alice")
    await post_usage(client, 1, 'bob, "the builder"')
    items = await usage(client, 1)
    for resp in (
        await client.get("/api/links/1/usage?format=csv"),
        await client.get("/api/links/1/usage", headers={"Accept": "text/csv"}),
        await client.get("/api/links/1/usage", headers={"Accept": "application/json;q=0.5, text/csv"}),
    ):
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.reader(io.StringIO(await resp.text())))
        assert rows == [
            ["user", "date", "duration"],
            *([u["user"], u["date"], str(u["duration"])] for u in items),
        ]
    for accept in ("application/json", "text/csv;q=0.5, application/json", "*/*"):
        resp = await client.get("/api/links/1/usage", headers={"Accept": accept})
        assert resp.content_type == "application/json"
    resp = await client.get("/api/links/1/usage?format=json", headers={"Accept": "text/csv"})
    assert resp.content_type == "application/json"
    empty = await client.get("/api/links/1/usage?format=csv&user=nobody")
    assert await empty.text() == "user,date,duration\r\n"


async def test_unknown_link_usage_is_404(client: Client) -> None:
    await create(client)
    for path in (
        "/api/links/2/usage",
        "/api/links/x/usage",
        "/api/links/2/stats",
        "/api/links/2/usage?limit=0",
    ):
        await error(await client.get(path), 404)


# --- statistics -------------------------------------------------------------------------------


async def publish_use(js: JetStreamContext, msg_id: str, link_id: int, user: str, at: datetime) -> None:
    payload = {"link_id": link_id, "user": user, "used_at": at.isoformat()}
    await js.publish(
        "usagehub.ingest.link_usage", json.dumps(payload).encode(), headers={"Nats-Msg-Id": msg_id}
    )


async def until_usage(client: Client, link_id: int, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        items: list[dict[str, Any]] = await usage(client, link_id)
        if len(items) >= count:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usages, have {items}")


async def test_stats_of_a_link(client: Client, js: JetStreamContext) -> None:
    await create(client)
    empty = await (await client.get("/api/links/1/stats")).json()
    assert empty == {
        "link_id": 1,
        "users": 0,
        "sessions": 0,
        "total_duration": 0,
        "median_duration": None,
        "by_day": [],
    }
    now = datetime.now(UTC).replace(microsecond=0)
    # Client times within the accepted skew give real durations without waiting.
    await publish_use(js, "s1", 1, "alice", now - timedelta(seconds=290))
    await publish_use(js, "s2", 1, "alice", now - timedelta(seconds=10))
    await publish_use(js, "s3", 1, "bob", now - timedelta(seconds=200))
    await publish_use(js, "s4", 1, "bob", now - timedelta(seconds=100))
    await publish_use(js, "s5", 1, "carol", now - timedelta(seconds=50))
    expected = [("alice", 280), ("bob", 100), ("carol", 0)]
    # Three sessions can show before the last of the five uses is projected (intake order is not
    # publish order): wait for the durations, not only for the count.
    for _ in range(200):
        items = await until_usage(client, 1, 3)
        if sorted((u["user"], u["duration"]) for u in items) == expected:
            break
        await asyncio.sleep(0.05)
    assert sorted((u["user"], u["duration"]) for u in items) == expected
    stats = await (await client.get("/api/links/1/stats")).json()
    days: dict[str, list[int]] = {}
    for u in items:
        days.setdefault(u["date"][:10], []).append(u["duration"])
    assert stats == {
        "link_id": 1,
        "users": 3,
        "sessions": 3,
        "total_duration": 380,
        "median_duration": 100,
        "by_day": [
            {
                "date": day,
                "users": len(durations),
                "sessions": len(durations),
                "total_duration": sum(durations),
                "median_duration": stats["by_day"][i]["median_duration"],
            }
            for i, (day, durations) in enumerate(sorted(days.items()))
        ],
    }
    await post_usage(client, 1, "dave")
    stats = await (await client.get("/api/links/1/stats")).json()
    assert (stats["users"], stats["sessions"], stats["median_duration"]) == (4, 4, 50)  # (0+100)/2
    alice = await (await client.get("/api/links/1/stats?user=alice")).json()
    assert (alice["users"], alice["sessions"], alice["total_duration"]) == (1, 1, 280)
    await error(await client.get("/api/links/1/stats?since=never"), 400)


# --- the command line -------------------------------------------------------------------------


async def test_cli_links_add(client: Client) -> None:
    settings = client.app[keys.SETTINGS]

    async def usagehub(*args: str) -> tuple[int, str, str]:
        return await run_usagehub(*args, settings=settings)  # the gateway's user sends commands

    code, out, err = await usagehub("links", "add", "Docs", "https://example.org/", "--description", "Manual")
    assert code == 0, err
    printed = json.loads(out)
    assert (printed["id"], printed["name"], printed["url"], printed["description"]) == (
        1,
        "Docs",
        "https://example.org/",
        "Manual",
    )
    assert DATE.match(printed["created_at"])
    for _ in range(100):
        resp = await client.get("/api/links/1")
        if resp.status == 200:
            break
        await asyncio.sleep(0.05)
    assert await resp.json() == printed
    code, out, err = await usagehub("links", "add", "Bad", "not-a-url")
    assert code == 1 and "url" in err and out == ""
