"""The small HTTP side of ingest and projector: /healthz, /readyz and /metrics for probes and Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from shared import metrics

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


async def metrics_response(_: web.Request) -> web.Response:
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def readiness_handler(check: ReadinessCheck) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def readyz(_: web.Request) -> web.Response:
        ok, detail = await check()
        return web.json_response({"ready": ok, **detail}, status=200 if ok else 503)

    return readyz


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"alive": True})


@asynccontextmanager
async def serve_ops(host: str, port: int, check: ReadinessCheck) -> AsyncIterator[web.AppRunner]:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readiness_handler(check))
    app.router.add_get("/metrics", metrics_response)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()
