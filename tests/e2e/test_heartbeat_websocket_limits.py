"""The stats WebSocket: a cap on clients per process, and only the page's own (or listed) origins."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Services, gateway, with_settings

Client = TestClient[web.Request, web.Application]
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


async def upgrade_refused(client: Client, **headers: str) -> tuple[int, object]:
    """Status and JSON body of an upgrade the server refuses."""
    key = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    resp = await client.get("/api/stats/ws", headers={**UPGRADE, **key, **headers})
    return resp.status, await resp.json()


async def test_websocket_clients_beyond_the_cap_get_503_before_the_upgrade(services: Services) -> None:
    settings = with_settings(services.settings, ws_max_clients=3)
    async with TestClient(gateway(settings)) as client, contextlib.AsyncExitStack() as held:
        sockets = [await held.enter_async_context(client.ws_connect("/api/stats/ws")) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/api/stats/ws")
        assert refused.value.status == 503
        status, body = await upgrade_refused(client)
        assert status == 503 and body == {"error": "too many live statistics clients, try again later"}
        # The ones admitted are served as before.
        assert "total_beats" in json.loads((await sockets[0].receive(timeout=3)).data)
        # A leaving client frees its place.
        await sockets[0].close()
        for _ in range(50):
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                async with client.ws_connect("/api/stats/ws") as ws:
                    assert "total_beats" in json.loads((await ws.receive(timeout=3)).data)
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no place freed")


async def test_a_foreign_origin_is_refused_403(services: Services) -> None:
    settings = with_settings(services.settings, ws_allowed_origins="https://dashboard.example.org")
    async with TestClient(gateway(settings)) as client:
        host = f"{client.host}:{client.port}"
        for origin in ("https://evil.example", "null", f"http://{client.host}:1"):
            status, body = await upgrade_refused(client, Origin=origin)
            assert status == 403
            assert body == {"error": "WebSocket connections are not allowed from this origin"}
        for headers in ({}, {"Origin": f"http://{host}"}, {"Origin": "https://dashboard.example.org"}):
            async with client.ws_connect("/api/stats/ws", headers=headers) as ws:
                assert "total_beats" in json.loads((await ws.receive(timeout=3)).data)
