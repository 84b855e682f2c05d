"""Other services publish beats straight onto NATS: same validation, same counting, rejects kept."""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from shared.bus import REJECTED_STREAM
from shared.secrets import hash_token
from tests.conftest import admin

Client = TestClient[web.Request, web.Application]


async def total_beats(client: Client, expected: int) -> int:
    for _ in range(200):
        total: int = (await (await client.get("/api/stats")).json())["total_beats"]
        if total >= expected:
            return total
        await asyncio.sleep(0.05)
    return total


async def rejections(js: JetStreamContext, expected: int) -> list[dict[str, object]]:
    for _ in range(200):
        info = await js.stream_info(REJECTED_STREAM)
        if info.state.messages >= expected:
            break
        await asyncio.sleep(0.05)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(REJECTED_STREAM, seq)
        out.append({"subject": msg.subject, **json.loads(msg.data or b"{}")})
    return out


async def test_beats_published_on_nats_are_counted_once(client: Client, js: JetStreamContext) -> None:
    token = (await (await client.post("/api/devices", json={"name": "Sensor"}, headers=admin())).json())[
        "token"
    ]
    beat = json.dumps({"token_hash": hash_token(token)}).encode()
    for i in range(10):
        await js.publish("usagehub.ingest.beats", beat, headers={"Nats-Msg-Id": f"s-{i}"})
    # A publisher retrying with the same message id is stored once.
    await js.publish("usagehub.ingest.beats", beat, headers={"Nats-Msg-Id": "s-0"})
    assert await total_beats(client, 10) == 10
    await asyncio.sleep(0.5)
    stats = await (await client.get("/api/stats")).json()
    assert stats["total_beats"] == 10 and stats["devices"][0]["num_beats"] == 10


async def test_invalid_intake_messages_are_rejected_with_a_reason(
    client: Client, js: JetStreamContext
) -> None:
    token = (await (await client.post("/api/devices", json={"name": "Sensor"}, headers=admin())).json())[
        "token"
    ]
    await js.publish("usagehub.ingest.beats", json.dumps({"token_hash": hash_token("nope")}).encode())
    await js.publish("usagehub.ingest.beats", b"not json")
    await js.publish("usagehub.ingest.beats", b'{"tok": 1}')
    await js.publish("usagehub.ingest.unheard_of", b"{}")
    await js.publish("usagehub.ingest.beats", b"\xff\xfe not utf-8")
    # A plaintext token is refused, and the rejection record never holds it.
    await js.publish("usagehub.ingest.beats", json.dumps({"token": token}).encode())
    # Internal fields cannot be set by a payload; nor can a request id that is not one.
    await js.publish(
        "usagehub.ingest.beats", json.dumps({"token_hash": hash_token(token), "origin": "http"}).encode()
    )
    await js.publish(
        "usagehub.ingest.beats", json.dumps({"token_hash": hash_token(token), "request_id": "a\nb"}).encode()
    )
    # A bare string (it might be a secret) is kept only as a size and a hash.
    await js.publish("usagehub.ingest.beats", json.dumps(token).encode())
    # Intake takes a fetched batch concurrently, so rejections are recorded in any order.
    records = await rejections(js, 9)
    assert len(records) == 9
    assert token.encode() not in json.dumps(records).encode()
    by_payload = {json.dumps(r.get("payload"), sort_keys=True): r for r in records if "payload" in r}
    assert by_payload['{"token_hash": "[redacted]"}']["status"] == 401
    assert by_payload['{"token_hash": "[redacted]"}']["subject"] == "usagehub.rejected.beats"
    assert "token" in str(by_payload['{"tok": 1}']["reason"])
    assert "never the token" in str(by_payload['{"token": "[redacted]"}']["reason"])
    assert "set by usagehub" in str(by_payload['{"origin": "http", "token_hash": "[redacted]"}']["reason"])
    assert "request_id" in str(by_payload['{"request_id": "a\\nb", "token_hash": "[redacted]"}']["reason"])
    unknown = by_payload["{}"]
    assert unknown["subject"] == "usagehub.rejected.unknown" and unknown["kind"] == "unknown"
    assert unknown["intake_subject"] == "usagehub.ingest.unheard_of"
    assert "unknown intake kind" in str(unknown["reason"])
    hashed = {r["payload_bytes"]: r for r in records if "payload_sha256" in r}
    assert set(hashed) == {8, 12, len(json.dumps(token))}
    assert "JSON" in str(hashed[8]["reason"]) and hashed[12]["subject"] == "usagehub.rejected.beats"
    assert (
        hashed[len(json.dumps(token))]["payload_sha256"]
        == hashlib.sha256(json.dumps(token).encode()).hexdigest()
    )
    assert (await (await client.get("/api/stats")).json())["total_beats"] == 0
