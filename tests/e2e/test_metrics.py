"""/metrics through HTTP: appends are counted by type, and projection lag is exported."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import init_app
from tests.conftest import Services, admin, with_settings


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_move_with_beats(client: TestClient[web.Request, web.Application]) -> None:
    before = await (await client.get("/metrics")).text()
    token = (await (await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())).json())[
        "token"
    ]
    for _ in range(5):
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type.startswith("text/plain")
    after = await resp.text()
    appended = "usagehub_events_appended_total"
    assert sample(after, appended, type="BeatRecorded") - sample(before, appended, type="BeatRecorded") == 5
    assert (
        sample(after, appended, type="DeviceRegistered") - sample(before, appended, type="DeviceRegistered")
        == 1
    )
    # Writes waited for the projection, so it has caught up: position moved, lag is zero.
    assert sample(after, "usagehub_projection_position", projection="heartbeat") >= 7
    assert sample(after, "usagehub_projection_lag", projection="heartbeat") == 0
    beats = sample(after, "usagehub_http_requests_total", route="/api/beat", method="POST", status="200")
    assert beats >= 5
    assert "usagehub_http_request_duration_seconds_bucket" in after
    assert "usagehub_websocket_clients" in after and "usagehub_consumer_redeliveries_total" in after


async def test_lag_shows_while_the_projector_is_down(services: Services) -> None:
    settings = with_settings(services.settings, read_your_writes_timeout=0.1)
    async with TestClient(TestServer(init_app(settings))) as client:
        resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
        token = (await resp.json())["token"]
        await services.stop_service("projector")
        for _ in range(3):
            assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
        ready = await (await client.get("/readyz")).json()
        assert ready["projection_lag"]["heartbeat"] == 3
        services.start_service("projector")
        for _ in range(100):
            if (await (await client.get("/api/stats")).json())["total_beats"] == 3:
                break
            await asyncio.sleep(0.05)
        ready = await (await client.get("/readyz")).json()
        assert ready["projection_lag"]["heartbeat"] == 0
        text = await (await client.get("/metrics")).text()
        assert sample(text, "usagehub_projection_lag", projection="heartbeat") == 0
        assert sample(text, "usagehub_projection_position", projection="heartbeat") >= 5


async def test_readyz_tells_a_stopped_projector_and_a_missing_ingest(services: Services) -> None:
    settings = with_settings(services.settings, read_your_writes_timeout=0.1, ready_stuck_after=1.0)
    async with TestClient(TestServer(init_app(settings))) as client:
        resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
        token = (await resp.json())["token"]
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["ingest"] is True

        # A stopped projector with writes waiting: stuck once its checkpoint has not moved for 1 s.
        await services.stop_service("projector")
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
        first = await client.get("/readyz")  # starts the clock for this gateway
        await asyncio.sleep(1.2)
        stuck = await client.get("/readyz")
        detail = await stuck.json()
        assert stuck.status == 503, detail
        assert "heartbeat" in detail["stuck"] and first.status in (200, 503)
        services.start_service("projector")
        for _ in range(100):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/readyz")).status == 200

        # No ingest to answer: not ready, with the reason; ready again once it is back.
        await services.stop_service("ingest")
        gone = await client.get("/readyz")
        assert gone.status == 503 and (await gone.json())["ingest"] is False
        services.start_service("ingest")
        for _ in range(100):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await (await client.get("/readyz")).json())["ingest"] is True
