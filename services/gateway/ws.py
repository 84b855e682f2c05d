"""The stats feed: compute the statistics once a second and fan them out to every WebSocket client.

Each client has a tiny queue; a client that cannot keep up (or has gone) is dropped, never buffered.
At most ``max_clients`` are served at once, and a browser may connect only from an allowed origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, web

from services.gateway.errors import http_error
from shared import metrics
from shared.logging import get_logger

log = get_logger(__name__)

SEND_TIMEOUT = 5.0
QUEUE_SIZE = 2


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a WebSocket may be opened from ``origin`` (the request's ``Origin`` header).

    No Origin: not a browser (browsers always send one with a WebSocket), so no page's visitor can
    be made to connect. Else the origin's host and port must be the request's ``Host`` (the page
    was served from here), or the origin one of ``allowed`` (``scheme://host[:port]``, lowercase).
    The scheme is not compared with the request's: behind a TLS-terminating proxy they differ.
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc or host is None:
        return False  # "null" (a sandboxed frame, a file), or anything that is not an origin
    default_port = {"http": ":80", "https": ":443"}[parts.scheme]
    return parts.netloc.removesuffix(default_port) == host.strip().lower().removesuffix(default_port)


class StatsFeed:
    def __init__(self, compute: Callable[[], Awaitable[str]], interval: float, max_clients: int) -> None:
        self._compute = compute
        self._interval = interval
        self._max_clients = max_clients
        self._clients: dict[web.WebSocketResponse, asyncio.Queue[str]] = {}
        # Clients admitted, from before their upgrade until they leave: what the cap counts.
        self._admitted = 0
        self._wake = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._clients:
                self._wake.clear()
                await self._wake.wait()
            started = loop.time()
            try:
                message = await self._compute()
                metrics.STATS_FEED_COMPUTATIONS.inc()
            except Exception:
                log.exception("stats feed could not compute the statistics")
            else:
                for ws, queue in list(self._clients.items()):
                    try:
                        queue.put_nowait(message)
                    except asyncio.QueueFull:
                        log.info("dropping slow websocket client")
                        self._drop(ws)
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    def _drop(self, ws: web.WebSocketResponse) -> None:
        if self._clients.pop(ws, None) is not None:
            metrics.WEBSOCKET_CLIENTS.set(len(self._clients))
            asyncio.get_running_loop().create_task(
                ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
            )

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Upgrade and feed ``request``; 503 (before the upgrade) when the feed is full."""
        if self._admitted >= self._max_clients:
            raise http_error(503, "too many live statistics clients, try again later", {"Retry-After": "5"})
        self._admitted += 1
        try:
            return await self._feed(request)
        finally:
            self._admitted -= 1

    async def _feed(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._clients[ws] = queue
        metrics.WEBSOCKET_CLIENTS.set(len(self._clients))
        self._wake.set()
        sender = asyncio.create_task(self._send(ws, queue))
        try:
            async for _ in ws:  # clients have nothing to say; reading notices their close
                pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._clients.pop(ws, None)
            metrics.WEBSOCKET_CLIENTS.set(len(self._clients))
        return ws

    async def _send(self, ws: web.WebSocketResponse, queue: asyncio.Queue[str]) -> None:
        try:
            while True:
                message = await queue.get()
                await asyncio.wait_for(ws.send_str(message), SEND_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            self._drop(ws)

    async def close_all(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
