"""Retries with the same Idempotency-Key are one write: inside JetStream's window and after it."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from services.gateway import keys
from services.gateway.app import init_app
from shared.bus import EVENTS_STREAM
from shared.events import BeatRecorded, DeviceRegistered, DeviceTokenRegenerated
from shared.secrets import hash_token
from tests.conftest import Services, admin, with_settings
from tests.integration.helpers import all_events

Client = TestClient[web.Request, web.Application]


async def token_of(client: Client) -> str:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
    token: str = (await resp.json())["token"]
    return token


async def beats_in_stream(js: JetStreamContext) -> int:
    return sum(1 for _, e in await all_events(js) if isinstance(e, BeatRecorded))


async def test_a_retried_beat_is_stored_once(client: Client, js: JetStreamContext) -> None:
    token = await token_of(client)
    headers = {"Authorization": token, "Idempotency-Key": "retry-me"}
    answers = [await (await client.post("/api/beat", headers=headers)).text() for _ in range(3)]
    answers += [
        await r.text()
        for r in await asyncio.gather(*(client.post("/api/beat", headers=headers) for _ in range(5)))
    ]
    assert len(set(answers)) == 1
    assert await beats_in_stream(js) == 1
    assert (await (await client.get("/api/stats")).json())["total_beats"] == 1
    # The same key on another route is another write.
    other = await client.post(
        "/api/devices", json={"name": "Other"}, headers=admin(**{"Idempotency-Key": "retry-me"})
    )
    assert other.status == 200


async def test_a_retry_after_the_duplicate_window_is_still_stored_once(
    client: Client, js: JetStreamContext
) -> None:
    token = await token_of(client)
    info = await js.stream_info(EVENTS_STREAM)
    info.config.duplicate_window = 0.5
    await js.update_stream(info.config)
    headers = {"Authorization": token, "Idempotency-Key": "late-retry"}
    first = await (await client.post("/api/beat", headers=headers)).text()
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        for _ in range(200):  # the key is kept by the idempotency projection
            if await conn.fetchval("SELECT count(*) FROM idempotency_keys"):
                break
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    await asyncio.sleep(1.0)  # JetStream has forgotten the message id by now
    second = await (await client.post("/api/beat", headers=headers)).text()
    assert first == second
    assert await beats_in_stream(js) == 1
    # Without a key, every request is its own write.
    await client.post("/api/beat", headers={"Authorization": token})
    assert await beats_in_stream(js) == 2


async def test_a_retried_registration_is_the_same_device_with_a_fresh_token(
    client: Client, js: JetStreamContext
) -> None:
    headers = admin(**{"Idempotency-Key": "register-laptop"})
    first = await (await client.post("/api/devices", json={"name": "Laptop"}, headers=headers)).json()
    again = await (await client.post("/api/devices", json={"name": "Laptop"}, headers=headers)).json()
    assert first["id"] == again["id"] == 0 and first["token"] != again["token"]
    # The first answer may never have reached the client, so its token is revoked.
    assert (await client.post("/api/beat", headers={"Authorization": first["token"]})).status == 401
    assert (await client.post("/api/beat", headers={"Authorization": again["token"]})).status == 200
    kinds = [type(e) for _, e in await all_events(js)]
    assert kinds.count(DeviceRegistered) == 1 and kinds.count(DeviceTokenRegenerated) == 1


async def test_a_retry_is_refused_while_neither_jetstream_nor_postgres_can_vouch_for_its_key(
    services: Services, js: JetStreamContext
) -> None:
    settings = with_settings(services.settings, read_your_writes_timeout=0.1)
    async with TestClient(TestServer(init_app(settings))) as client:
        token = await token_of(client)
        info = await js.stream_info(EVENTS_STREAM)
        info.config.duplicate_window = 1.0
        await js.update_stream(info.config)
        await services.stop_service("projector")  # the key projection falls behind
        headers = {"Authorization": token, "Idempotency-Key": "in-the-gap"}
        first = await client.post("/api/beat", headers=headers)
        assert first.status == 200
        await asyncio.sleep(1.5)  # JetStream's window has passed; Postgres has not seen the key
        refused = await client.post("/api/beat", headers=headers)
        assert refused.status == 503 and "idempotency" in (await refused.json())["error"]
        services.start_service("projector")
        for _ in range(100):
            retried = await client.post("/api/beat", headers=headers)
            if retried.status == 200:
                break
            await asyncio.sleep(0.1)
        assert await retried.text() == await first.text()
        assert await beats_in_stream(js) == 1


# --- keys belong to their caller and target ----------------------------------------------------


async def test_two_devices_with_one_key_are_both_counted(client: Client, js: JetStreamContext) -> None:
    a, b = await token_of(client), await token_of(client)
    first = await client.post("/api/beat", headers={"Authorization": a, "Idempotency-Key": "k"})
    second = await client.post("/api/beat", headers={"Authorization": b, "Idempotency-Key": "k"})
    assert first.status == second.status == 200
    assert await beats_in_stream(js) == 2
    devices = (await (await client.get("/api/stats")).json())["devices"]
    assert [d["num_beats"] for d in devices] == [1, 1]


async def test_a_bad_token_with_a_used_key_is_401(client: Client, js: JetStreamContext) -> None:
    token = await token_of(client)
    assert (
        await client.post("/api/beat", headers={"Authorization": token, "Idempotency-Key": "u"})
    ).status == 200
    for bad in ("garbage", "", "Bearer x" * 100):
        resp = await client.post("/api/beat", headers={"Authorization": bad, "Idempotency-Key": "u"})
        assert resp.status == 401, bad
    assert await beats_in_stream(js) == 1


async def test_a_key_reused_for_a_different_request_is_422(client: Client, js: JetStreamContext) -> None:
    key = {"Idempotency-Key": "reg"}
    first = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin(**key))
    assert first.status == 200
    other = await client.post("/api/devices", json={"name": "Phone"}, headers=admin(**key))
    assert other.status == 422
    assert "different request" in (await other.json())["error"]
    # ... also past JetStream's duplicate window, where the key projection answers.
    info = await js.stream_info(EVENTS_STREAM)
    info.config.duplicate_window = 0.5
    await js.update_stream(info.config)
    await asyncio.sleep(1.0)
    assert (await client.post("/api/devices", json={"name": "Phone"}, headers=admin(**key))).status == 422
    registered = [e for _, e in await all_events(js) if isinstance(e, DeviceRegistered)]
    assert [e.name for e in registered] == ["Laptop"]
    link = {"name": "Wiki", "url": "https://wiki.example"}
    assert (await client.post("/api/links", json=link, headers=admin(**key))).status == 201
    changed = {**link, "url": "https://other.example"}
    assert (await client.post("/api/links", json=changed, headers=admin(**key))).status == 422


async def test_a_usage_key_is_scoped_to_its_link_and_checked_after_the_link(
    client: Client, js: JetStreamContext
) -> None:
    for name in ("one", "two"):
        link = {"name": name, "url": f"https://{name}.example"}
        assert (await client.post("/api/links", json=link, headers=admin())).status == 201
    key = {"Idempotency-Key": "use-1"}
    assert (await client.post("/api/links/1/usage", data={"user": "dave"}, headers=key)).status == 201
    # Another link with the same key is another use; a link that does not exist is 404, not a replay.
    assert (await client.post("/api/links/2/usage", data={"user": "dave"}, headers=key)).status == 201
    assert (await client.post("/api/links/9/usage", data={"user": "dave"}, headers=key)).status == 404
    # The same user, link and key again is the retry it claims to be.
    assert (await client.post("/api/links/1/usage", data={"user": "dave"}, headers=key)).status == 201
    for link_id in (1, 2):
        rows = await (await client.get(f"/api/links/{link_id}/usage")).json()
        assert [r["user"] for r in rows] == ["dave"]
    used = [e for _, e in await all_events(js) if type(e).__name__ == "LinkUsed"]
    assert sorted(e.link_id for e in used) == [1, 2]


async def test_an_intake_message_is_never_swallowed_by_an_http_key(
    client: Client, js: JetStreamContext
) -> None:
    token = await token_of(client)
    assert (
        await client.post("/api/beat", headers={"Authorization": token, "Idempotency-Key": "m-1"})
    ).status == 200
    beat = json.dumps({"token_hash": hash_token(token)}).encode()
    await js.publish("usagehub.ingest.beats", beat, headers={"Nats-Msg-Id": "m-1"})
    # (JetStream deduplicates message ids per stream, so two publishers choose distinct ids.)
    await js.publish("usagehub.ingest.beats.sensors", beat, headers={"Nats-Msg-Id": "sensors-1"})
    for _ in range(200):
        if await beats_in_stream(js) >= 3:
            break
        await asyncio.sleep(0.05)
    events = [e for _, e in await all_events(js) if isinstance(e, BeatRecorded)]
    assert len(events) == 3
    # Each key lives in its own namespace: the origin (HTTP, or the publisher) and the caller.
    keys_ = sorted(e.idempotency_key or "" for e in events)
    assert keys_[0].startswith("http|") and keys_[1].startswith("intake:sensors|")
    assert keys_[2].startswith("intake:services|")
