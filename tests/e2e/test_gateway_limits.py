"""The gateway's door, with raw sockets: header and body deadlines, the connection cap, parser limits.

Short timeouts in these settings keep the tests quick; the rules are the same at the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from services.gateway.__main__ import run as run_gateway
from services.local.servers import free_port
from shared.settings import Settings
from tests.conftest import GatewayTestServer, Services, gateway, with_settings

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5


@pytest.fixture
async def server(services: Services) -> AsyncIterator[GatewayTestServer]:
    settings = with_settings(
        services.settings, http_header_timeout=HEADER_TIMEOUT, http_body_timeout=BODY_TIMEOUT
    )
    async with gateway(settings) as srv:
        yield srv


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connect(port: int | None) -> AsyncIterator[Stream]:
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def closed_after(reader: asyncio.StreamReader, within: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and everything it sent before."""
    started = time.monotonic()
    received = await asyncio.wait_for(reader.read(), within)  # read() returns at EOF
    return time.monotonic() - started, received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def content_length(head: bytes) -> int:
    line = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    return int(line.split(b":")[1])


def json_body(answer: bytes) -> object:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


async def test_a_socket_that_sends_nothing_is_closed_within_the_header_timeout(
    server: GatewayTestServer,
) -> None:
    async with connect(server.port) as (reader, _):
        elapsed, received = await closed_after(reader, 5)
    assert received == b""
    assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + 1.0


async def test_half_a_header_is_closed_even_when_it_trickles(server: GatewayTestServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()

        async def trickle() -> None:
            # A byte every 0.1 s: an idle timeout would never fire, the header deadline does.
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        try:
            _, received = await closed_after(reader, 5)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert received == b""
    assert time.monotonic() - started <= HEADER_TIMEOUT + 1.0


async def test_an_idle_kept_alive_connection_stays_but_a_half_second_request_is_closed(
    server: GatewayTestServer,
) -> None:
    async with connect(server.port) as (reader, writer):
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert status_of(head) == 200
            await reader.readexactly(content_length(head))
            # Idle between requests is the keep-alive timer's business, not the header deadline's.
            await asyncio.sleep(HEADER_TIMEOUT * 3)
        # The next request's headers start with its first byte, and must be complete in time.
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        elapsed, received = await closed_after(reader, 5)
    assert received == b"" and elapsed <= HEADER_TIMEOUT + 1.0


async def test_a_stalled_body_is_answered_408_and_closed_and_a_slow_one_in_time_is_not(
    server: GatewayTestServer,
) -> None:
    head = b"POST /api/links/1/usage HTTP/1.1\r\nHost: x\r\n"
    head += b"Content-Type: application/x-www-form-urlencoded\r\n"
    async with connect(server.port) as (reader, writer):
        writer.write(head + b"Content-Length: 100\r\n\r\nuser=ali")
        elapsed, answer = await closed_after(reader, 5)
    assert status_of(answer) == 408, answer
    assert "within" in str(json_body(answer))
    assert BODY_TIMEOUT * 0.8 <= elapsed <= BODY_TIMEOUT + 1.0
    async with connect(server.port) as (reader, writer):
        writer.write(head + b"Connection: close\r\nContent-Length: 10\r\n\r\nuser=")
        await asyncio.sleep(BODY_TIMEOUT / 2)
        writer.write(b"alice")
        _, answer = await closed_after(reader, 5)
    assert status_of(answer) == 404  # no link 1: the body was read and the request went through


async def test_connections_beyond_the_cap_are_refused_at_once(services: Services) -> None:
    settings = with_settings(services.settings, http_max_connections=3, http_header_timeout=30.0)
    async with gateway(settings) as srv, contextlib.AsyncExitStack() as held:
        first = await held.enter_async_context(connect(srv.port))
        for _ in range(2):
            await held.enter_async_context(connect(srv.port))
        await asyncio.sleep(0.1)  # the server has accepted them
        async with connect(srv.port) as (reader, _):
            elapsed, answer = await closed_after(reader, 5)
        assert elapsed < 1.0
        assert status_of(answer) == 503 and json_body(answer) == {"error": "too many connections, try again"}
        assert b"\r\nRetry-After: 1\r\n" in answer and b"X-Content-Type-Options: nosniff" in answer
        # A slot frees as soon as a held connection goes.
        first[1].close()
        await asyncio.sleep(0.1)
        async with connect(srv.port) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _, answer = await closed_after(reader, 5)
        assert status_of(answer) == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(70)) + b"\r\n",
    ],
    ids=["request-line", "header-line", "header-count"],
)
async def test_oversized_requests_are_json_400(server: GatewayTestServer, request_bytes: bytes) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(request_bytes)
        _, answer = await closed_after(reader, 5)
    assert status_of(answer) in {400, 431}, answer[:200]
    assert json_body(answer) == {"error": "bad request"}
    assert b"X-Frame-Options: DENY" in answer


async def test_the_production_entry_point_applies_the_same_limits(services: Services) -> None:
    port = free_port()
    settings: Settings = with_settings(services.settings, http_port=port, http_header_timeout=HEADER_TIMEOUT)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, stop))
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                async with connect(port) as (reader, _):
                    elapsed, received = await closed_after(reader, 5)
                break
            await asyncio.sleep(0.05)
        assert received == b"" and elapsed <= HEADER_TIMEOUT + 1.0
    finally:
        stop.set()
        await task
