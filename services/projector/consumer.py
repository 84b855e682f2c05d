"""The one consumer loop: fetch a batch, apply it in one transaction with the checkpoint, then ack.

Only one process applies a given projection at a time (a session advisory lock elects it): batches
must be applied in stream order, and the checkpoint makes anything at or below it a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.projector.projections import Projection
from shared import metrics
from shared.bus import PROJECTED_PREFIX, Delivery, fetch, pull_consumer
from shared.db import Conn
from shared.events import decode_event
from shared.logging import get_logger

log = get_logger(__name__)

_LEADER_LOCK = 1
_BATCH_LOCK = 2


class RestartFromCheckpoint(Exception):
    """The consumer can no longer promise stream order; recreate it at the checkpoint."""


async def lock_batches(conn: Conn, projection: str) -> None:
    """Within a transaction: exclude other writers of this projection (a batch, or a rebuild)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _BATCH_LOCK, projection)


async def checkpoint(conn: Conn, projection: str) -> int:
    position = await conn.fetchval(
        "SELECT position FROM projection_checkpoints WHERE projection = $1", projection
    )
    return int(position or 0)


async def save_checkpoint(conn: Conn, projection: str, position: int) -> None:
    await conn.execute(
        "INSERT INTO projection_checkpoints (projection, position) VALUES ($1, $2)"
        " ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position",
        projection,
        position,
    )


async def apply_batch(conn: Conn, projection: Projection, deliveries: list[Delivery]) -> int:
    """Apply what is new in ``deliveries`` and move the checkpoint, atomically; returns the checkpoint."""
    async with conn.transaction():
        await lock_batches(conn, projection.name)
        position = await checkpoint(conn, projection.name)
        fresh = [(d.seq, decode_event(d.data)) for d in deliveries if d.seq > position]
        if fresh:
            await projection.apply(conn, fresh)
            for seq, event in fresh:  # the request id that began at the gateway ends here
                log.debug("projected", projection=projection.name, seq=seq, request_id=event.request_id)
            position = fresh[-1][0]
            await save_checkpoint(conn, projection.name, position)
    return position


async def _lead(conn: Conn, projection: Projection, stop: asyncio.Event) -> bool:
    while not stop.is_set():
        if await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", _LEADER_LOCK, projection.name
        ):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
    return False


async def run_projection(
    nc: NATS,
    js: JetStreamContext,
    pool: asyncpg.Pool,
    projection: Projection,
    batch: int,
    stop: asyncio.Event,
) -> None:
    """Project until ``stop``; on any failure, start again from the checkpoint in Postgres."""
    name = projection.name
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                if not await _lead(conn, projection, stop):
                    return
                log.info("projecting", projection=name)
                try:
                    await _project(nc, js, conn, projection, batch, stop)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LEADER_LOCK, name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("projection failed; restarting from its checkpoint", projection=name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def _project(
    nc: NATS,
    js: JetStreamContext,
    conn: Conn,
    projection: Projection,
    batch: int,
    stop: asyncio.Event,
) -> None:
    name = projection.name
    sub = await pull_consumer(js, name, projection.filters, await checkpoint(conn, name), fresh=True)
    try:
        if projection.after_commit is not None:
            await projection.after_commit(js, conn)
        while not stop.is_set():
            deliveries = await fetch(sub, batch, wait=1.0)
            if not deliveries:
                metrics.PROJECTION_LAG.labels(name).set(0)
                continue
            redelivered = sum(1 for d in deliveries if d.num_delivered > 1)
            if redelivered:
                metrics.REDELIVERIES.labels(name).inc(redelivered)
                # A redelivery may come after newer messages; applying it out of order could skip
                # events, so start again, in order, from the checkpoint.
                raise RestartFromCheckpoint(f"{redelivered} redelivered messages")
            position = await apply_batch(conn, projection, deliveries)
            # AckAll: one ack covers the whole batch, and only after the commit.
            await deliveries[-1].msg.ack()
            await nc.publish(PROJECTED_PREFIX + name, str(position).encode())
            if projection.after_commit is not None:
                await projection.after_commit(js, conn)
            metrics.EVENTS_PROJECTED.labels(name).inc(len(deliveries))
            metrics.PROJECTION_POSITION.labels(name).set(position)
            metrics.PROJECTION_LAG.labels(name).set(deliveries[-1].msg.metadata.num_pending)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
