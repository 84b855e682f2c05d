"""usagehub-gateway: the HTTP API and WebSocket feed."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from services.gateway.app import init_app
from services.gateway.http_server import gateway_runner
from shared.db import create_pool, migrate
from shared.lifecycle import run_service
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("gateway")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    finally:
        await pool.close()
    runner = gateway_runner(init_app(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    # Several workers on one port: each binds with SO_REUSEPORT and Linux spreads new connections
    # among them. One alone binds without it, so a second gateway on its port fails loudly instead.
    shared_port = settings.http_workers > 1
    await web.TCPSite(runner, settings.http_host, settings.http_port, reuse_port=shared_port).start()
    log.info(
        "gateway listening",
        host=settings.http_host,
        port=settings.http_port,
        pid=os.getpid(),
        shared_port=shared_port,
    )
    if settings.weak_secret_key:
        log.warning(
            "USAGEHUB_SECRET_KEY is shorter than 32 characters: accepted only because the gateway listens"
            " on loopback; beyond it usagehub refuses to start (openssl rand -hex 32 makes a good one)"
        )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    run_service("gateway", run)


if __name__ == "__main__":
    main()
