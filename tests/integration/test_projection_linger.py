"""A projection that lingers applies what arrives within its linger as one batch (one commit, one
ack), and a stop does not wait out the linger."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import time

from nats.js import JetStreamContext

import services.gateway
from services.projector.consumer import checkpoint, run_projection
from services.projector.projections import PROJECTIONS, Projection
from shared.db import Conn, create_pool, migrate
from shared.events import AnyEvent, PageVisited, encode_event, new_event_id, now

SUBJECT = "usagehub.events.visits.recorded"


async def visit(js: JetStreamContext) -> int:
    event = PageVisited(event_id=new_event_id(), occurred_at=now(), path="/")
    return (await js.publish(SUBJECT, encode_event(event))).seq


async def test_events_within_the_linger_are_one_batch(js: JetStreamContext, database_url: str) -> None:
    batches: list[list[int]] = []

    async def apply(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
        batches.append([seq for seq, _ in events])

    projection = Projection("lingering", [SUBJECT], (), apply, linger=0.6)
    pool = await create_pool(database_url, max_size=3)
    stop = asyncio.Event()
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        task = asyncio.create_task(run_projection(js._nc, js, pool, projection, 100, stop))
        first = await visit(js)
        await asyncio.sleep(0.2)
        rest = [await visit(js) for _ in range(4)]
        async with pool.acquire() as conn:
            for _ in range(100):
                if await checkpoint(conn, "lingering") >= rest[-1]:
                    break
                await asyncio.sleep(0.05)
        assert batches == [[first, *rest]]

        # A stop during a linger ends the projection at once, the batch applied first.
        last = await visit(js)
        await asyncio.sleep(0.1)
        stop.set()
        stopped = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - stopped < 0.5
        async with pool.acquire() as conn:
            assert await checkpoint(conn, "lingering") == last
        assert batches[-1] == [last]
    finally:
        stop.set()
        await pool.close()


def test_only_projections_no_answer_waits_for_linger() -> None:
    # Every gateway module's READ_BY: what the answers to its writes wait for.
    read_by = {
        name
        for module in pkgutil.iter_modules(services.gateway.__path__)
        for name in getattr(importlib.import_module(f"services.gateway.{module.name}"), "READ_BY", ())
    }
    assert {p.name for p in PROJECTIONS.values() if p.linger} == {"idempotency"}
    assert not read_by & {p.name for p in PROJECTIONS.values() if p.linger}
