"""usagehub-projector: keep every read model up to date with the event stream."""

from __future__ import annotations

import asyncio
from typing import Any

from services.projector.consumer import run_projection
from services.projector.projections import PROJECTIONS
from shared.bus import EVENTS_STREAM, close, connect, wait_for_stream
from shared.db import create_pool, migrate
from shared.lifecycle import run_service
from shared.logging import get_logger
from shared.ops_http import serve_ops
from shared.settings import Settings

log = get_logger("projector")

# A read model is a cache of the event stream, and its checkpoint commits with it: a commit that a
# Postgres crash loses takes its checkpoint along, and the batch is projected again from the stream.
# So commits need not wait for their WAL flush (one fsync per batch per projection, a fifth of
# Postgres's CPU per beat), whatever the server's own synchronous_commit.
PROJECTOR_SESSION = {"synchronous_commit": "off"}


async def run(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings, "usagehub-projector")
    js = nc.jetstream()
    # Only ingest may create the streams; a projector started first waits for them.
    if not await wait_for_stream(js, EVENTS_STREAM, stop):
        await close(nc)
        return
    # One connection per projection (each holds its leader lock) plus one for readiness checks.
    pool = await create_pool(
        settings.database_url, max_size=len(PROJECTIONS) + 2, server_settings=PROJECTOR_SESSION
    )
    try:
        async with pool.acquire() as conn:
            await migrate(conn)

        async def ready() -> tuple[bool, dict[str, Any]]:
            return nc.is_connected, {"nats": nc.is_connected}

        async with serve_ops(settings.http_host, settings.metrics_port, ready):
            tasks = [
                asyncio.create_task(run_projection(nc, js, pool, p, settings.projector_batch, stop))
                for p in PROJECTIONS.values()
            ]
            log.info("projector ready", projections=sorted(PROJECTIONS))
            try:
                await stop.wait()
            finally:
                # Safe at any point: an unfinished batch rolls back and is delivered again later.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await close(nc)
        await pool.close()


def main() -> None:
    run_service("projector", run)


if __name__ == "__main__":
    main()
