"""The heartbeat API through HTTP: every route, status code and field of the document."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from services.gateway.app import init_app
from shared import metrics
from shared.events import DeviceRegistered
from tests.conftest import SECRET, Services, admin, with_settings
from tests.integration.helpers import all_events

Client = TestClient[web.Request, web.Application]


async def register(client: Client, name: str = "Laptop") -> dict[str, Any]:
    resp = await client.post("/api/devices", json={"name": name}, headers=admin())
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def beat(client: Client, token: str) -> int:
    resp = await client.post("/api/beat", headers={"Authorization": token})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    return int(await resp.text())


async def stats(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/stats")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


async def test_register_device_returns_id_name_and_token(client: Client) -> None:
    first = await register(client, "Laptop")
    second = await register(client, "Phone")
    assert (first["id"], first["name"]) == (0, "Laptop")
    assert (second["id"], second["name"]) == (1, "Phone")
    assert set(first) == {"id", "name", "token"}
    # At least 128 random bits: 32 bytes base64url-encoded is 43 characters.
    assert len(first["token"]) >= 43 and first["token"] != second["token"]


async def test_concurrent_registrations_get_sequential_unique_ids(client: Client) -> None:
    bodies = await asyncio.gather(*(register(client, f"device-{i}") for i in range(25)))
    assert sorted(b["id"] for b in bodies) == list(range(25))
    s = await stats(client)
    assert [d["id"] for d in s["devices"]] == list(range(25))
    names = {b["id"]: b["name"] for b in bodies}
    assert all(names[d["id"]] == d["name"] for d in s["devices"])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"Laptop"',
        b"{}",
        b'{"name": ""}',
        b'{"name": "   "}',
        b'{"name": 7}',
        b'{"name": null}',
        json.dumps({"name": "x" * 201}).encode(),
        b'{"name": "a\\u0000b"}',
        b'{"name": "\\ud800"}',
        b'{"name": "\xff\xfe"}',
    ],
)
async def test_register_device_rejects_invalid_bodies_with_400(client: Client, body: bytes) -> None:
    resp = await client.post("/api/devices", data=body, headers=admin(**{"Content-Type": "application/json"}))
    assert resp.status == 400
    assert "error" in await resp.json()
    assert (await stats(client))["devices"] == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "wrong"}, {"Authorization": SECRET + "x"}, {"Authorization": SECRET[:-1]}],
)
async def test_device_routes_need_the_secret_key(client: Client, headers: dict[str, str]) -> None:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=headers)
    assert resp.status == 401
    assert "error" in await resp.json()
    await register(client)
    resp = await client.post("/api/devices/0/token/generate", headers=headers)
    assert resp.status == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/devices"),
        ("PUT", "/api/devices"),
        ("GET", "/api/devices/0/token/generate"),
        ("GET", "/api/beat"),
        ("DELETE", "/api/beat"),
        ("POST", "/api/stats"),
    ],
)
async def test_wrong_methods_are_405_with_allow(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path, headers=admin())
    assert resp.status == 405
    assert resp.headers["Allow"] in {"POST", "GET", "GET,HEAD"}
    assert "error" in await resp.json()


async def test_unknown_routes_are_json_404(client: Client) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert await resp.json() == {"error": "not found"}


async def test_device_routes_do_not_exist_without_a_secret_key(services: Services) -> None:
    settings = with_settings(services.settings, secret_key="")
    async with TestClient(TestServer(init_app(settings))) as client:
        for path in ("/api/devices", "/api/devices/0/token/generate"):
            resp = await client.post(path, json={"name": "x"}, headers={"Authorization": ""})
            assert resp.status == 404
            assert (await client.get(path)).status == 404
        assert (await client.get("/api/stats")).status == 200


async def test_regenerated_token_replaces_the_old_one_at_once(client: Client) -> None:
    device = await register(client)
    await beat(client, device["token"])
    resp = await client.post("/api/devices/0/token/generate", headers=admin())
    assert resp.status == 200
    renewed = await resp.json()
    assert renewed["id"] == 0 and renewed["name"] == "Laptop" and renewed["token"] != device["token"]
    old = await client.post("/api/beat", headers={"Authorization": device["token"]})
    assert old.status == 401
    await beat(client, renewed["token"])
    assert (await stats(client))["devices"][0]["num_beats"] == 2


@pytest.mark.parametrize("device_id", ["7", "999999999", "-1", "abc", "1e3"])
async def test_regenerate_unknown_device_is_404(client: Client, device_id: str) -> None:
    await register(client)
    resp = await client.post(f"/api/devices/{device_id}/token/generate", headers=admin())
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_beat_returns_the_acknowledged_unix_time(client: Client) -> None:
    device = await register(client)
    before = int(time.time())
    at = await beat(client, device["token"])
    assert before <= at <= int(time.time())
    s = await stats(client)
    assert s["last_seen"] == at and s["devices"][0]["last_beat"] == at


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "not-a-token"}])
async def test_beat_without_a_valid_token_is_401(client: Client, headers: dict[str, str]) -> None:
    await register(client)
    resp = await client.post("/api/beat", headers=headers)
    assert resp.status == 401
    assert "error" in await resp.json()
    assert (await stats(client))["total_beats"] == 0


async def test_stats_before_any_beat(client: Client) -> None:
    s = await stats(client)
    assert s["last_seen"] is None and s["last_seen_relative"] is None
    assert (s["longest_absence"], s["num_visits"], s["total_beats"], s["devices"]) == (0, 0, 0, [])
    assert s["uptime"] >= 0
    assert list(s) == [
        "last_seen",
        "last_seen_relative",
        "longest_absence",
        "num_visits",
        "total_beats",
        "devices",
        "uptime",
    ]


async def test_stats_count_each_device_on_its_own(client: Client) -> None:
    laptop, phone = await register(client, "Laptop"), await register(client, "Phone")
    await register(client, "Idle")
    for _ in range(3):
        await beat(client, laptop["token"])
    last = await beat(client, phone["token"])
    s = await stats(client)
    assert s["total_beats"] == 4
    assert [(d["id"], d["name"], d["num_beats"]) for d in s["devices"]] == [
        (0, "Laptop", 3),
        (1, "Phone", 1),
        (2, "Idle", 0),
    ]
    assert s["devices"][1]["last_beat"] == last and s["devices"][2]["last_beat"] is None
    assert all(set(d) == {"id", "name", "last_beat", "num_beats"} for d in s["devices"])


async def test_longest_absence_includes_the_gap_open_now(client: Client) -> None:
    device = await register(client)
    await beat(client, device["token"])
    await asyncio.sleep(2.1)
    s = await stats(client)
    assert s["last_seen_relative"] >= 2
    assert s["longest_absence"] >= 2
    await beat(client, device["token"])
    s = await stats(client)
    assert s["last_seen_relative"] <= 1
    assert s["longest_absence"] >= 2  # the closed gap is remembered


async def test_visits_count_page_views_not_api_calls(client: Client) -> None:
    await stats(client)
    await client.get("/api/stats")
    assert (await stats(client))["num_visits"] == 0
    for _ in range(3):
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
    # One visitor's views within 30 minutes are one visit (tests/e2e/test_heartbeat_visits.py).
    assert (await stats(client))["num_visits"] == 1


async def test_status_page_shows_the_statistics(client: Client) -> None:
    device = await register(client, "<Laptop & co>")
    await beat(client, device["token"])
    page = await (await client.get("/")).text()
    assert "&lt;Laptop &amp; co&gt;" in page and "<Laptop" not in page
    assert "/api/stats/ws" in page
    assert 'id="total_beats">1<' in page


async def test_uptime_counts_from_the_first_set_up_and_survives_restarts(services: Services) -> None:
    async with TestClient(TestServer(init_app(services.settings))) as client:
        first = (await stats(client))["uptime"]
        await asyncio.sleep(1.1)
        await services.stop_service("ingest")
        services.start_service("ingest")
        await asyncio.sleep(0.5)
        device = await register(client)  # served by the restarted ingest
        await beat(client, device["token"])
        assert (await stats(client))["uptime"] >= first + 1


async def test_websocket_streams_stats_every_second(client: Client) -> None:
    device = await register(client)
    started = time.monotonic()
    messages = []
    async with client.ws_connect("/api/stats/ws") as ws:
        messages.append(json.loads((await ws.receive(timeout=3)).data))
        await beat(client, device["token"])
        for _ in range(2):
            messages.append(json.loads((await ws.receive(timeout=3)).data))
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed <= 4.5
    assert all(set(m) >= {"last_seen", "total_beats", "devices", "uptime"} for m in messages)
    assert messages[0]["total_beats"] == 0
    assert messages[-1]["total_beats"] == 1 and messages[-1]["devices"][0]["num_beats"] == 1


async def test_many_websocket_clients_share_one_computation(client: Client) -> None:
    before = metrics.STATS_FEED_COMPUTATIONS._value.get()
    sockets = [await client.ws_connect("/api/stats/ws") for _ in range(20)]
    try:
        for _ in range(3):
            for ws in sockets:
                assert "total_beats" in json.loads((await ws.receive(timeout=3)).data)
    finally:
        for ws in sockets:
            await ws.close()
    # 20 clients x 3 messages, from one computation per tick (plus the tick a client may straddle).
    assert metrics.STATS_FEED_COMPUTATIONS._value.get() - before <= 5


async def test_healthz_and_readyz(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200, body
    assert body["nats"] and body["postgres"] and body["pending_migrations"] == []
    assert set(body["projection_lag"]) >= {"heartbeat", "idempotency"}


async def test_a_request_id_follows_the_write_into_its_event(client: Client, js: JetStreamContext) -> None:
    resp = await client.post(
        "/api/devices", json={"name": "Traced"}, headers=admin(**{"X-Request-Id": "trace-123"})
    )
    assert resp.status == 200 and resp.headers["X-Request-Id"] == "trace-123"
    events = [e for _, e in await all_events(js)]
    assert any(isinstance(e, DeviceRegistered) and e.request_id == "trace-123" for e in events)
    generated = (await client.get("/api/stats")).headers["X-Request-Id"]
    assert len(generated) == 32


async def test_a_reused_request_id_is_not_a_retry(client: Client) -> None:
    device = await register(client)
    for _ in range(3):
        headers = {"Authorization": device["token"], "X-Request-Id": "same"}
        resp = await client.post("/api/beat", headers=headers)
        assert resp.status == 200
    assert (await stats(client))["total_beats"] == 3
