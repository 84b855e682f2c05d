"""The contract, served: ``/openapi.json`` and the interactive reference at ``/docs`` with its assets,
all from the gateway itself, under a Content-Security-Policy without inline scripts."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway.openapi import openapi_document

Client = TestClient[web.Request, web.Application]


def directives(policy: str) -> dict[str, list[str]]:
    parts = (p.split() for p in policy.split(";") if p.strip())
    return {p[0]: p[1:] for p in parts}


async def test_the_document_is_served(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == openapi_document(admin_routes=True)


async def test_the_reference_page_and_every_asset_it_loads_answer(client: Client) -> None:
    page = await client.get("/docs")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded, "the page loads its script and style"
    for url in loaded:
        assert url.startswith("/docs/assets/"), f"{url} is not served by the gateway"
        asset = await client.get(url)
        assert asset.status == 200, url
        assert len(await asset.read()) > 0
    assert (await client.get("/docs/assets/LICENSE")).status == 200


async def test_the_reference_page_runs_no_inline_script(client: Client) -> None:
    page = await client.get("/docs")
    policy = directives(page.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert "<script>" not in await page.text()
    # Elsewhere the status page's policy holds.
    stats_policy = directives((await client.get("/api/stats")).headers["Content-Security-Policy"])
    assert "'self'" not in stats_policy["script-src"]


async def test_an_unknown_asset_is_404(client: Client) -> None:
    response = await client.get("/docs/assets/secrets.txt")
    assert response.status == 404
    assert "error" in await response.json()
