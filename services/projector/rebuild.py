"""Drop a read model and replay it from the event stream, while the projector keeps running."""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext

from services.projector.consumer import apply_batch, lock_batches
from services.projector.projections import Projection
from shared.bus import read_stream
from shared.db import Conn

# Events per batch (a savepoint) while replaying: large, the replay being one transaction anyway.
REBUILD_BATCH = 5000


async def rebuild(
    conn: Conn,
    js: JetStreamContext,
    projection: Projection,
    batch: int = REBUILD_BATCH,
    on_checkpoint: Callable[[int], None] | None = None,
) -> int:
    """Replay ``projection`` from the first event in one transaction; returns the new checkpoint.
    ``on_checkpoint`` hears the checkpoint after each batch (the CLI's progress bar): no other
    connection can, the replay being one transaction.

    The running projector waits on the same lock meanwhile, then skips what the replay covered.
    """
    async with conn.transaction():
        await lock_batches(conn, projection.name)
        await conn.execute("TRUNCATE " + ", ".join(projection.tables))
        await conn.execute("DELETE FROM projection_checkpoints WHERE projection = $1", projection.name)
        await conn.execute("DELETE FROM projection_quarantine WHERE projection = $1", projection.name)
        position = 0
        async for deliveries in read_stream(js, projection.filters, batch=batch):
            # Nested: apply_batch's transaction becomes a savepoint inside this one.
            position = await apply_batch(conn, projection, deliveries)
            if on_checkpoint is not None:
                on_checkpoint(position)
    return position
