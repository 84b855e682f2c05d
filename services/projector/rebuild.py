"""Drop a read model and replay it from the event stream, while the projector keeps running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import cast

from nats.js import JetStreamContext

from services.projector.consumer import Decoded, apply_batch, decode_deliveries, lock_batches
from services.projector.projections import REBUILD_BATCH, Projection
from shared.bus import Delivery, read_stream
from shared.db import Conn

__all__ = ["REBUILD_BATCH", "read_ahead", "rebuild"]


async def rebuild(
    conn: Conn,
    js: JetStreamContext,
    projection: Projection,
    batch: int | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> int:
    """Replay ``projection`` from the first event in one transaction; returns the new checkpoint.
    ``on_checkpoint`` hears the checkpoint after each batch (the CLI's progress bar): no other
    connection can, the replay being one transaction. Batches are of ``projection.rebuild_batch``
    events unless ``batch`` says otherwise.

    The running projector waits on the same lock meanwhile, then skips what the replay covered.
    """
    size = batch or projection.rebuild_batch
    async with conn.transaction():
        await lock_batches(conn, projection.name)
        await conn.execute("TRUNCATE " + ", ".join(projection.tables))
        await conn.execute("DELETE FROM projection_checkpoints WHERE projection = $1", projection.name)
        await conn.execute("DELETE FROM projection_quarantine WHERE projection = $1", projection.name)
        position = 0
        async with contextlib.aclosing(read_ahead(js, projection.filters, size)) as batches:
            async for deliveries, decoded in batches:
                # Nested: apply_batch's transaction becomes a savepoint inside this one.
                position = await apply_batch(conn, projection, deliveries, decoded)
                if on_checkpoint is not None:
                    on_checkpoint(position)
    return position


async def read_ahead(
    js: JetStreamContext, filters: list[str], batch: int
) -> AsyncGenerator[tuple[list[Delivery], Decoded]]:
    """``read_stream``'s batches, in order, each decoded while the caller applies the one before it:
    Python reads and decodes while Postgres writes the previous batch."""
    ready: asyncio.Queue[tuple[list[Delivery], Decoded] | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            # An async generator (annotated as an iterator): closing it deletes its consumer at once.
            stream = cast(AsyncGenerator[list[Delivery], None], read_stream(js, filters, batch=batch))
            async with contextlib.aclosing(stream):
                async for deliveries in stream:
                    await ready.put((deliveries, decode_deliveries(deliveries)))
        except Exception as exc:  # handed to the caller, whose read it is
            await ready.put(exc)
        else:
            await ready.put(None)

    reader = asyncio.create_task(read())
    try:
        while (item := await ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
