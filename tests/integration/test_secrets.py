"""No device token or admin key reaches the event stream, the intake records or the logs."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from shared.bus import EVENTS_STREAM, REJECTED_STREAM
from tests.conftest import SECRET, admin
from tests.integration.helpers import raw_stream_bytes


async def test_tokens_never_reach_the_stream_or_the_logs(
    client: TestClient[web.Request, web.Application], js: JetStreamContext, capfd: pytest.CaptureFixture[str]
) -> None:
    device = await (await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())).json()
    first = device["token"]
    assert (await client.post("/api/beat", headers={"Authorization": first})).status == 200
    renewed = await (await client.post("/api/devices/0/token/generate", headers=admin())).json()
    second = renewed["token"]
    # Refused attempts are logged too: with the old token, a made-up one, and through NATS intake.
    assert (await client.post("/api/beat", headers={"Authorization": first})).status == 401
    assert (await client.post("/api/beat", headers={"Authorization": "guess-" + second[:10]})).status == 401
    await js.publish("usagehub.ingest.beats", b'{"token": "%s"}' % first.encode())
    assert (await client.post("/api/beat", headers={"Authorization": second})).status == 200

    for _ in range(100):  # wait for the intake rejection to be recorded
        if (await js.stream_info(REJECTED_STREAM)).state.messages:
            break
        await __import__("asyncio").sleep(0.05)
    stored = await raw_stream_bytes(js, EVENTS_STREAM, "usagehub.events.>")
    rejected = await raw_stream_bytes(js, REJECTED_STREAM, "usagehub.rejected.>")
    assert b"DeviceRegistered" in stored and b"invalid or missing device token" in rejected
    logs = capfd.readouterr()
    for secret in (first, second, SECRET):
        assert secret.encode() not in stored
        assert secret.encode() not in rejected
        assert secret not in logs.out and secret not in logs.err
