"""Reading the event stream: whole, in order, with the bus client's raw path or nats-py's own."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared.bus import Appender, pull_consumer, read_stream
from shared.events import PageVisited, new_event_id, now
from shared.settings import Settings
from tests.conftest import as_user
from tests.servers import SUPERUSER, NatsServer

EVENTS = 2_500


async def _append(nc: NATS, count: int) -> list[int]:
    async with Appender(nc) as appender:

        async def one(i: int) -> int:
            event = PageVisited(event_id=new_event_id(), occurred_at=now(), path=f"/{i}")
            return (await appender.append(event, event.event_id)).seq

        return sorted(await asyncio.gather(*(one(i) for i in range(count))))


async def _read(js: JetStreamContext, after: int = 0) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    async for batch in read_stream(js, ["usagehub.events.heartbeat.>"], after=after, batch=300):
        assert len(batch) <= 300
        out += [(d.seq, d.data) for d in batch]
    return out


async def test_a_read_gives_every_event_once_in_order_through_either_client(
    nats_client: NATS, js: JetStreamContext, bus: NatsServer
) -> None:
    seqs = await _append(nats_client, EVENTS)
    raw = await _read(js)
    assert [seq for seq, _ in raw] == seqs
    assert await _read(js, after=seqs[999]) == raw[1000:]
    # A client not made by shared.bus.connect reads the same through nats-py's own message path.
    settings = as_user(Settings(nats_url=bus.url), bus, SUPERUSER)
    plain = await nats.connect(bus.url, user=settings.nats_user, password=settings.nats_password)
    try:
        assert await _read(plain.jetstream()) == raw
    finally:
        await plain.close()
    # Nothing is left behind on the server: each read deletes its consumer.
    assert (await js.stream_info("USAGEHUB_EVENTS")).state.consumer_count == 0


async def test_a_durable_consumer_delivers_in_order_and_acks_all_up_to_the_last(
    nats_client: NATS, js: JetStreamContext
) -> None:
    seqs = await _append(nats_client, EVENTS)
    sub = await pull_consumer(js, "reader", ["usagehub.events.heartbeat.>"], seqs[99], window=400)
    got = []
    try:
        while len(got) < EVENTS - 100:
            batch = await sub.fetch(250, wait=5.0)
            assert batch and len(batch) <= 250
            got += batch
            await sub.ack(batch[-1])
        assert [d.seq for d in got] == seqs[100:]
        assert [d.consumer_seq for d in got] == list(range(1, EVENTS - 100 + 1))
        assert got[-1].pending == 0 and all(d.num_delivered == 1 for d in got)
        assert await sub.fetch(10, wait=0.3) == []
    finally:
        await sub.close()
    for _ in range(50):
        info = await js.consumer_info("USAGEHUB_EVENTS", "reader")
        if info.ack_floor.stream_seq == seqs[-1]:
            break
        await asyncio.sleep(0.05)
    assert info.ack_floor.stream_seq == seqs[-1]
