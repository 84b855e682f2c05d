"""The bench's load generator against a real aiohttp server: it reads whole answers (sized and
chunked), and in open loop it counts a request's latency from when it was due, so a slow server
cannot hide the requests queued behind a slow answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.loadgen import Spec, http_request, run


async def _sized(_: web.Request) -> web.Response:
    return web.Response(text="x" * 1000)


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b"abc", b"defgh", b"i" * 5000):
        await response.write(part)
    await response.write_eof()
    return response


async def _slow(_: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    return web.Response(status=202)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    """An aiohttp server on a free port with a sized, a chunked and a slow route."""
    app = web.Application()
    app.router.add_get("/sized", _sized)
    app.router.add_get("/chunked", _chunked)
    app.router.add_post("/slow", _slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_closed_loop_reads_sized_and_chunked_answers(server: int) -> None:
    requests = [http_request("GET", "/sized"), http_request("GET", "/chunked")]
    out = await run(Spec("127.0.0.1", server, requests, connections=4, seconds=0.5, warmup_seconds=0.1))
    assert out["broken_connections"] == 0
    assert out["statuses"] == {"200": out["requests"]}
    assert out["requests"] > 20
    assert 0 < out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert 0 <= out["generator_cpu_share"] <= 1.5


async def test_open_loop_sends_at_the_rate_and_counts_the_queue(server: int) -> None:
    # One connection, 50 ms an answer: at most 20 answers a second for 100 requests due a second.
    # The later requests waited for the connection; their latency includes that wait.
    spec = Spec(
        "127.0.0.1", server, [http_request("POST", "/slow")], 1, seconds=0.5, rate=100, warmup_seconds=0
    )
    out = await run(spec)
    assert out["statuses"] == {"202": 50}
    assert out["p50_ms"] > 500  # far more than one answer's 50 ms: the queue is counted
    assert out["max_ms"] > 1500  # the last is due at 0.49 s and answered at 2.5 s at the soonest


async def test_open_loop_below_capacity_answers_at_the_rate(server: int) -> None:
    spec = Spec(
        "127.0.0.1", server, [http_request("POST", "/slow")], 20, seconds=0.5, rate=100, warmup_seconds=0
    )
    out = await run(spec)
    assert out["statuses"] == {"202": 50}
    assert out["per_s"] == 100
    assert out["p99_ms"] < 500
