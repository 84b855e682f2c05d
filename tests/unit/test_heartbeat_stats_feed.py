"""The stats feed computes once per tick for everyone and drops a client that cannot keep up."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiohttp import web

from services.gateway.ws import QUEUE_SIZE, StatsFeed, origin_allowed


class StuckSocket:
    """Stands in for a client whose connection no longer drains (only the feed's own logic is tested)."""

    def __init__(self) -> None:
        self.closed_with: Any = None

    async def close(self, code: int, message: bytes) -> None:
        self.closed_with = (code, message)


async def test_a_client_that_falls_behind_is_dropped_not_buffered() -> None:
    computed = 0

    async def compute() -> str:
        nonlocal computed
        computed += 1
        return f'{{"tick": {computed}}}'

    feed = StatsFeed(compute, interval=0.01, max_clients=10)
    stuck = StuckSocket()
    healthy_queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
    stuck_queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
    healthy = StuckSocket()
    feed._clients[cast(web.WebSocketResponse, stuck)] = stuck_queue
    feed._clients[cast(web.WebSocketResponse, healthy)] = healthy_queue
    feed._wake.set()
    runner = asyncio.create_task(feed.run())
    received = []
    try:
        for _ in range(6):  # the healthy client keeps reading; the stuck one never does
            received.append(await asyncio.wait_for(healthy_queue.get(), 1))
    finally:
        runner.cancel()
    await asyncio.sleep(0)
    assert stuck.closed_with is not None and healthy.closed_with is None
    assert feed.clients == 1
    assert stuck_queue.qsize() == QUEUE_SIZE  # never more than the bound
    assert computed >= 6 and received[0] == '{"tick": 1}'


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "status.example.org", True),  # not a browser
        ("http://status.example.org", "status.example.org", True),
        ("https://status.example.org", "status.example.org", True),  # TLS ended at a proxy
        ("https://status.example.org:443", "status.example.org", True),
        ("http://localhost:8080", "localhost:8080", True),
        ("HTTP://LocalHost:8080/", "localhost:8080", True),
        ("http://localhost:8081", "localhost:8080", False),
        ("https://evil.example", "status.example.org", False),
        ("https://status.example.org.evil.example", "status.example.org", False),
        ("null", "status.example.org", False),
        ("file://", "status.example.org", False),
        ("https://dashboard.example.org", "status.example.org", True),  # listed
        ("https://dashboard.example.org:8443", "status.example.org", False),
        ("http://status.example.org", None, False),
    ],
)
def test_websocket_origins(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, host, frozenset({"https://dashboard.example.org"})) is allowed
