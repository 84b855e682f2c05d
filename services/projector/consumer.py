"""The one consumer loop: fetch a batch, apply it in one transaction with the checkpoint, then ack.

Only one process applies a given projection at a time (a session advisory lock elects it): batches
must be applied in stream order, and the checkpoint makes anything at or below it a no-op. An event
that cannot be decoded or applied is quarantined with its reason and skipped, never fatal: the
decision depends only on the event, so a rebuild quarantines the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.projector.projections import Projection
from shared import metrics
from shared.bus import PROJECTED_PREFIX, Delivery, fetch, pull_consumer
from shared.db import Conn
from shared.events import AnyEvent, decode_event, encode_event
from shared.logging import get_logger

log = get_logger(__name__)

_LEADER_LOCK = 1
_BATCH_LOCK = 2


class RestartFromCheckpoint(Exception):
    """The consumer can no longer promise stream order; recreate it at the checkpoint."""


async def lock_batches(conn: Conn, projection: str) -> None:
    """Within a transaction: exclude other writers of this projection (a batch, or a rebuild)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _BATCH_LOCK, projection)


class BatchesHeld(Exception):
    """Another writer holds this projection's batches: a rebuild, for as long as it replays."""


async def _batches_free(conn: Conn, projection: str) -> bool:
    """Within a transaction: take the batch lock if no one holds it (a session holding it already,
    a rebuild applying its batches, takes it again)."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _BATCH_LOCK, projection)
    )


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


# Failures of the database or the network: the batch is retried from the checkpoint, never blamed
# on an event.
_NOT_THE_EVENTS_FAULT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
)
_KEPT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Poison:
    """An event set aside: where it is in the stream, and why."""

    seq: int
    subject: str
    data: bytes
    reason: str


def decode_deliveries(deliveries: list[Delivery]) -> tuple[list[tuple[int, AnyEvent]], list[Poison]]:
    """The events, and the messages that are not events of any known type and version."""
    events: list[tuple[int, AnyEvent]] = []
    poison: list[Poison] = []
    for d in deliveries:
        try:
            events.append((d.seq, decode_event(d.data)))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as exc:
            poison.append(Poison(d.seq, d.subject, d.data, f"cannot decode: {exc}"))
    return events, poison


class _BatchBroken(Exception):
    """Applying a batch failed because of its events (not the database or the network)."""


async def _apply_one_by_one(
    conn: Conn, projection: Projection, events: list[tuple[int, AnyEvent]], subjects: dict[int, str]
) -> list[Poison]:
    """Apply ``events`` one by one, a savepoint each, and return the ones that fail."""
    poison = []
    for seq, event in events:
        try:
            async with conn.transaction():
                await projection.apply(conn, [(seq, event)])
        except _NOT_THE_EVENTS_FAULT:
            raise
        except Exception as exc:
            reason = f"cannot apply: {type(exc).__name__}: {exc}"
            poison.append(Poison(seq, subjects[seq], encode_event(event), reason))
    return poison


async def quarantine(conn: Conn, projection: str, poison: list[Poison]) -> None:
    await conn.executemany(
        "INSERT INTO projection_quarantine (projection, stream_seq, subject, reason, data_sha256, data)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (projection, stream_seq) DO NOTHING",
        [
            (
                projection,
                p.seq,
                p.subject,
                p.reason[:2000],
                hashlib.sha256(p.data).hexdigest(),
                p.data[:_KEPT_BYTES],
            )
            for p in poison
        ],
    )
    metrics.PROJECTION_QUARANTINED.labels(projection).inc(len(poison))
    for p in poison:
        log.error(
            "event quarantined", projection=projection, seq=p.seq, subject=p.subject, reason=p.reason[:500]
        )


Decoded = tuple[list[tuple[int, AnyEvent]], list[Poison]]


async def apply_batch(
    conn: Conn, projection: Projection, deliveries: list[Delivery], decoded: Decoded | None = None
) -> int:
    """Apply what is new in ``deliveries`` and move the checkpoint, atomically; returns the checkpoint.

    Events that cannot be decoded or applied are quarantined in the same transaction and skipped:
    when the batch fails because of an event, it is rolled back and applied again one event at a
    time (a savepoint each, which the usual case does without: two round trips less per batch).
    ``decoded``, if given, is ``decode_deliveries(deliveries)``, worked out ahead (a rebuild does).
    BatchesHeld when another session holds the projection's batches (a rebuild under way): the
    caller waits outside its transaction, as ``run_projection`` does.
    """
    try:
        return await _apply_batch(conn, projection, deliveries, decoded, one_by_one=False)
    except _BatchBroken:
        return await _apply_batch(conn, projection, deliveries, decoded, one_by_one=True)


async def _apply_batch(
    conn: Conn,
    projection: Projection,
    deliveries: list[Delivery],
    decoded: Decoded | None,
    *,
    one_by_one: bool,
) -> int:
    async with conn.transaction():
        # Never wait on the lock inside a batch: a rebuild holds it for minutes, longer than any
        # statement may take; run_projection waits for it instead.
        if not await _batches_free(conn, projection.name):
            raise BatchesHeld(projection.name)
        position = await checkpoint(conn, projection.name)
        fresh = [d for d in deliveries if d.seq > position]
        if fresh:
            if decoded is None:
                events, poison = decode_deliveries(fresh)
            else:
                events = [e for e in decoded[0] if e[0] > position]
                poison = [p for p in decoded[1] if p.seq > position]
            if events and one_by_one:
                poison += await _apply_one_by_one(conn, projection, events, {d.seq: d.subject for d in fresh})
            elif events:
                try:
                    await projection.apply(conn, events)
                except _NOT_THE_EVENTS_FAULT:
                    raise
                except Exception as exc:
                    raise _BatchBroken from exc
            if poison:
                await quarantine(conn, projection.name, poison)
            position = fresh[-1].seq
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


async def _wait_for_batches(pool: asyncpg.Pool, projection: str, stop: asyncio.Event) -> None:
    """Until no one holds the projection's batches (looked at once a second), or ``stop``. A failure
    to look ends the wait: projecting again meets it, and reports it, as any other."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn, conn.transaction():
                if await _batches_free(conn, projection):
                    return
        except Exception:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


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
        except BatchesHeld:
            log.info("a rebuild holds the projection; projecting again once it is done", projection=name)
            await _wait_for_batches(pool, name, stop)
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
    position = await checkpoint(conn, name)
    sub = await pull_consumer(js, name, projection.filters, position, fresh=True, window=2 * batch)
    next_delivery = 1  # the consumer was just created: its first delivery is number 1
    try:
        if projection.after_commit is not None:
            await projection.after_commit(js, conn)
        while not stop.is_set():
            deliveries = await fetch(sub, batch, wait=1.0)
            if not deliveries:
                metrics.PROJECTION_LAG.labels(name).set(0)
                continue
            if projection.linger and len(deliveries) < batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), projection.linger)
                deliveries += await fetch(sub, batch - len(deliveries), wait=0.0)
            redelivered = sum(1 for d in deliveries if d.num_delivered > 1)
            if redelivered:
                metrics.REDELIVERIES.labels(name).inc(redelivered)
                # A redelivery may come after newer messages; applying it out of order could skip
                # events, so start again, in order, from the checkpoint.
                raise RestartFromCheckpoint(f"{redelivered} redelivered messages")
            numbers = [d.consumer_seq for d in deliveries]
            if numbers != list(range(next_delivery, next_delivery + len(deliveries))):
                # Deliveries lost on the way (a cut connection): applying what came after them, and
                # acknowledging all up to it, would skip them for good.
                raise RestartFromCheckpoint(f"deliveries {next_delivery}.. missing, got {numbers[:3]}..")
            next_delivery += len(deliveries)
            position = await apply_batch(conn, projection, deliveries)
            # AckAll: one ack covers the whole batch, and only after the commit.
            await sub.ack(deliveries[-1])
            await nc.publish(PROJECTED_PREFIX + name, str(position).encode())
            if projection.after_commit is not None:
                await projection.after_commit(js, conn)
            metrics.EVENTS_PROJECTED.labels(name).inc(len(deliveries))
            metrics.PROJECTION_POSITION.labels(name).set(position)
            metrics.PROJECTION_LAG.labels(name).set(deliveries[-1].pending)
    finally:
        with contextlib.suppress(Exception):
            await sub.close()
