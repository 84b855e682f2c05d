"""usagehub-ingest: validate commands and append their events to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.ingest.context import Ingest
from services.ingest.heartbeat_handlers import ensure_installation
from services.ingest.intake import consume_intake, serve_commands
from shared.bus import Appender, close, connect, ensure_streams
from shared.db import create_pool, migrate
from shared.lifecycle import run_service
from shared.logging import get_logger
from shared.ops_http import serve_ops
from shared.settings import Settings

log = get_logger("ingest")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "usagehub-ingest")
    js = nc.jetstream()
    await ensure_streams(js, settings.stream_replicas)
    pool = await create_pool(settings.database_url, max_size=5)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        async with Appender(nc, timeout=settings.command_timeout) as appender:
            ingest = Ingest(appender=appender, js=js, pool=pool)
            await ensure_installation(ingest)
            await ingest.devices.load(js)
            await ingest.links.load(js)

            async def ready() -> tuple[bool, dict[str, Any]]:
                return nc.is_connected, {"nats": nc.is_connected}

            async with serve_ops(settings.http_host, settings.metrics_port, ready):
                sub = await serve_commands(nc, ingest)
                intake = asyncio.create_task(consume_intake(ingest, js, stop))
                log.info("ingest ready")
                try:
                    await stop.wait()
                finally:
                    await sub.unsubscribe()
                    intake.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await intake
    finally:
        await close(nc)
        await pool.close()


def main() -> None:
    run_service("ingest", run)


if __name__ == "__main__":
    main()
