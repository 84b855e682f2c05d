"""A rebuild's read ahead: the stream's batches in order, each with its decoding, the reader's consumer
gone once the read ends however it ends."""

from __future__ import annotations

import contextlib

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.projector.consumer import Poison, decode_deliveries
from services.projector.rebuild import read_ahead
from tests.integration.test_bus_reads import _append, _read

FILTERS = ["usagehub.events.heartbeat.>"]


async def consumers(js: JetStreamContext) -> int:
    return int((await js.stream_info("USAGEHUB_EVENTS")).state.consumer_count)


async def test_batches_come_in_order_each_with_its_decoding(nats_client: NATS, js: JetStreamContext) -> None:
    seqs = await _append(nats_client, 1_000)
    # Undecodable: published straight on an event subject, as a broken writer might.
    await js.publish("usagehub.events.heartbeat.page_visited", b"not an event")
    read: list[int] = []
    poison: list[Poison] = []
    async with contextlib.aclosing(read_ahead(js, FILTERS, 300)) as batches:
        async for deliveries, decoded in batches:
            assert len(deliveries) <= 300
            assert decoded == decode_deliveries(deliveries)
            read += [seq for seq, _ in decoded[0]]
            poison += decoded[1]
    assert read == seqs and [p.data for p in poison] == [b"not an event"]
    assert [seq for seq, _ in await _read(js)] == [*seqs, poison[0].seq]
    assert await consumers(js) == 0


async def test_a_reader_stopped_halfway_leaves_no_consumer(nats_client: NATS, js: JetStreamContext) -> None:
    await _append(nats_client, 1_000)
    async with contextlib.aclosing(read_ahead(js, FILTERS, 100)) as batches:
        async for deliveries, _ in batches:
            assert isinstance(deliveries[0].seq, int)
            break
    assert await consumers(js) == 0


async def test_a_failed_read_reaches_the_caller(nats_client: NATS, js: JetStreamContext) -> None:
    await _append(nats_client, 10)
    await js.delete_stream("USAGEHUB_EVENTS")  # no stream to read: the reader fails
    failed = None
    try:
        async with contextlib.aclosing(read_ahead(js, FILTERS, 100)) as batches:
            async for _ in batches:
                raise AssertionError("nothing to read")
    except Exception as exc:
        failed = exc
    assert failed is not None and not isinstance(failed, AssertionError)
