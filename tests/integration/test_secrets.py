"""No device token or admin key reaches the bus (any subject), the streams, the intake records or the logs."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.bus import EVENTS_STREAM, REJECTED_STREAM
from shared.secrets import hash_token
from tests.conftest import SECRET, admin
from tests.integration.helpers import raw_stream_bytes


async def test_tokens_never_reach_the_stream_or_the_logs(
    client: TestClient[web.Request, web.Application],
    nats_client: NATS,
    js: JetStreamContext,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Every message on every subject while the HTTP routes run: commands, replies, appends, acks.
    trace: list[bytes] = []

    async def capture(msg: Msg) -> None:
        trace.append(msg.subject.encode() + repr(msg.headers).encode() + msg.data)

    tap = await nats_client.subscribe(">", cb=capture)
    device = await (await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())).json()
    first = device["token"]
    assert (await client.post("/api/beat", headers={"Authorization": first})).status == 200
    renewed = await (await client.post("/api/devices/0/token/generate", headers=admin())).json()
    second = renewed["token"]
    # Refused attempts are logged too: with the old token, a made-up one, and through NATS intake.
    assert (await client.post("/api/beat", headers={"Authorization": first})).status == 401
    assert (await client.post("/api/beat", headers={"Authorization": "guess-" + second[:10]})).status == 401
    assert (await client.post("/api/beat", headers={"Authorization": second})).status == 200
    retried = {"Idempotency-Key": "reg-1"}
    for _ in range(2):  # a retried registration makes a new token: neither crosses the bus
        again = await (
            await client.post("/api/devices", json={"name": "Phone"}, headers=admin(**retried))
        ).json()
        assert (await client.post("/api/beat", headers={"Authorization": again["token"]})).status == 200
    tokens = [first, second, again["token"]]
    await nats_client.flush()
    await tap.unsubscribe()
    # A publisher that sends a plaintext token anyway (its own message carries it, nothing after).
    await js.publish("usagehub.ingest.beats", b'{"token": "%s"}' % first.encode())
    await js.publish("usagehub.ingest.beats", b'{"token_hash": "%s"}' % hash_token(first).encode())

    for _ in range(100):  # wait for the intake rejections to be recorded
        if (await js.stream_info(REJECTED_STREAM)).state.messages >= 2:
            break
        await __import__("asyncio").sleep(0.05)
    stored = await raw_stream_bytes(js, EVENTS_STREAM, "usagehub.events.>")
    rejected = await raw_stream_bytes(js, REJECTED_STREAM, "usagehub.rejected.>")
    assert b"DeviceRegistered" in stored and b"invalid or missing device token" in rejected
    logs = capfd.readouterr()
    assert len(trace) > 20 and any(b"usagehub.commands.RecordBeat" in m for m in trace)
    bus = b"\n".join(trace)
    for secret in (*tokens, SECRET):
        assert secret.encode() not in bus
        assert secret.encode() not in stored
        assert secret.encode() not in rejected
        assert secret not in logs.out and secret not in logs.err
