"""Bodies are read whole, however they are segmented; bad bytes anywhere are a 4xx, never a 500."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import SECRET, Services, admin, gateway, with_settings

Client = TestClient[web.Request, web.Application]


async def raw_exchange(
    client: Client, head: bytes, parts: list[bytes], pause: float = 0.2
) -> tuple[int, bytes]:
    """Send ``head`` and then each of ``parts`` as its own TCP segment, with a pause between them."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        for part in parts:
            await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 15)
        rest = await asyncio.wait_for(reader.read(65536), 15)
    finally:
        writer.close()
    return int(status_line.split()[1]), rest


def request_head(method: str, path: str, length: int, authorization: bytes = SECRET.encode()) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + authorization
        + b"\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/devices", {"name": "Split Laptop"}),
        ("POST", "/api/links", {"name": "Split", "url": "https://split.example"}),
        ("PATCH", "/api/links/1", {"description": "arrived in pieces"}),
        ("POST", "/api/links/1/usage", {"user": "split-user"}),
    ],
)
async def test_a_body_split_across_segments_is_accepted(
    client: Client, method: str, path: str, body: object
) -> None:
    link = {"name": "Wiki", "url": "https://wiki.example"}
    assert (await client.post("/api/links", json=link, headers=admin())).status == 201
    raw = json.dumps(body).encode()
    cut = len(raw) // 2
    status, answer = await raw_exchange(
        client, request_head(method, path, len(raw)), [raw[:1], raw[1:cut], raw[cut:]]
    )
    assert status in (200, 201), answer


async def test_a_body_that_never_arrives_in_full_is_408_not_400(services: Services) -> None:
    async with TestClient(gateway(with_settings(services.settings, http_body_timeout=0.5))) as client:
        head = request_head("POST", "/api/devices", 100)
        status, answer = await raw_exchange(client, head, [b'{"'], pause=0.0)
        assert status == 408, answer
        assert b"not received within" in answer or b"did not arrive in time" in answer
        assert (await (await client.get("/api/stats")).json())["devices"] == []


@pytest.mark.parametrize("authorization", [b"\xff\xfe\xfd", b"tok\xc3\x28en", b"\x80" * 40])
@pytest.mark.parametrize("path", ["/api/beat", "/api/devices", "/api/links"])
async def test_header_bytes_that_are_not_utf8_are_401(
    client: Client, authorization: bytes, path: str
) -> None:
    status, answer = await raw_exchange(
        client, request_head("POST", path, 2, authorization), [b"{}"], pause=0.0
    )
    assert status == 401, answer


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 4096,
        b'{"name": ' * 3000,
        b'{"name": 1e999}',
        b'{"name": 123456789012345678901234567890}',
        b'{"name": "a' + b"\xc3\x28" + b'"}',
    ],
)
@pytest.mark.parametrize("path", ["/api/devices", "/api/links", "/api/links/1/usage"])
async def test_malformed_json_is_400(client: Client, raw: bytes, path: str) -> None:
    await client.post("/api/links", json={"name": "Wiki", "url": "https://wiki.example"}, headers=admin())
    resp = await client.post(path, data=raw, headers=admin(**{"Content-Type": "application/json"}))
    assert resp.status == 400, await resp.text()
    assert "error" in await resp.json()


async def test_a_multipart_part_with_malformed_headers_is_400(client: Client) -> None:
    """Found by the fuzzer (tests/e2e/test_contract_fuzz.py): a part's name with bytes an HTTP header
    cannot hold made aiohttp's multipart parser raise, and the gateway answered 500."""
    created = await client.post(
        "/api/links", json={"name": "Wiki", "url": "https://wiki.example"}, headers=admin()
    )
    link_id = (await created.json())["id"]
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="/\xc3\x8d\x15a"\r\n\r\nx\r\n'
        + f"--{boundary}--\r\n".encode()
    )
    resp = await client.post(
        f"/api/links/{link_id}/usage",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 400, await resp.text()
    assert "form" in (await resp.json())["error"]
