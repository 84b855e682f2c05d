"""Security headers on every response, and a Content-Security-Policy that fits the status page."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import admin

Client = TestClient[web.Request, web.Application]

FIXED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def directives(policy: str) -> dict[str, list[str]]:
    parts = (p.split() for p in policy.split(";") if p.strip())
    return {p[0]: p[1:] for p in parts}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/", {}, 200),
        ("GET", "/api/stats", {}, 200),
        ("GET", "/healthz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/no/such/page", {}, 404),
        ("DELETE", "/api/stats", {}, 405),
        ("POST", "/api/beat", {"Authorization": "wrong"}, 401),
        ("POST", "/api/devices", admin(), 400),
        ("GET", "/api/links/1", {}, 404),
        ("GET", "/api/links?limit=0", {}, 400),
    ],
)
async def test_every_response_carries_the_security_headers(
    client: Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    resp = await client.request(method, path, headers=headers)
    assert resp.status == status
    for name, value in FIXED.items():
        assert resp.headers.get(name) == value, name
    policy = directives(resp.headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'none'"]


async def test_the_policy_allows_exactly_the_status_page_inline_script_and_style(client: Client) -> None:
    resp = await client.get("/")
    page = await resp.text()
    policy = directives(resp.headers["Content-Security-Policy"])
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert blocks, tag
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
        hashes = [f"'sha256-{d}'" for d in digests]
        assert sorted(policy[directive]) == sorted(hashes)  # no 'unsafe-inline', no other source
    assert policy["connect-src"] == ["'self'"]  # the live feed's WebSocket
    assert "<script src" not in page and "style=" not in page and "onclick" not in page


async def test_the_websocket_upgrade_carries_them_too(client: Client) -> None:
    async with client.ws_connect("/api/stats/ws") as ws:
        assert ws._response.headers.get("X-Content-Type-Options") == "nosniff"
