"""/metrics through HTTP: appends are counted by type, and projection lag is exported."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import admin


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
