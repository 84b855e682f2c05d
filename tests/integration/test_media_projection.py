"""``apply_media_usage`` against Postgres: any batching of the same events gives the same rows and
the same notification for each media, and a rebuild from the stream gives identical tables."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from services.gateway import keys
from services.ingest.media import record_digital, record_print
from services.projector.media_usage import apply_media_usage
from services.projector.projections import PROJECTIONS
from services.projector.rebuild import rebuild
from shared.commands import RecordDigitalUsages, RecordPrintUsages
from shared.db import checkpoints, migrate
from shared.events import AnyEvent, MediaUsageDeleted, MediaUsagesDeleted, MediaUsageStatusUpdated
from tests.conftest import admin
from tests.integration.helpers import dump_tables, last_sequence
from tests.media_bodies import DIGITAL_METADATA, MEDIA, digital, print_record

T0 = datetime(2015, 11, 27, 15, 56, 51, tzinfo=UTC)
TABLES = {
    "media_usages": "usage_id",
    "media_usage_notifications": "media_id",
    "media_usage_counts": "status, platform",
}
# The dashboard's counts are a count of the usages, at every commit.
COUNTED = (
    "SELECT status, platform, count(*) FROM media_usages GROUP BY 1, 2"
    " EXCEPT ALL SELECT status, platform, usages FROM media_usage_counts"
)
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    yield c
    await c.close()


def history(rnd: random.Random, count: int) -> list[AnyEvent]:
    """Contents that gain and lose media in both statuses, print records, deletes and status changes."""
    media = ["m1", "m2", "m3", "m4"]
    events: list[AnyEvent] = []
    reported: list[str] = ["none"]  # usage ids seen so far, and one no usage has
    for i in range(count):
        at = T0 + timedelta(seconds=i)
        roll = rnd.random()
        if roll < 0.75:
            if roll < 0.5:
                cmd = RecordDigitalUsages(
                    content_id=rnd.choice(["c1", "c2"]),
                    status=rnd.choice(["pending", "published"]),
                    media_ids=rnd.sample(media, rnd.randint(0, 3)),
                    digital_usage_metadata=DIGITAL_METADATA,
                )
                recorded = record_digital(cmd, event_id=f"e{i}", at=at)
            else:
                records = [
                    print_record(rnd.choice(media), rnd.randint(1, 2)) for _ in range(rnd.randint(1, 3))
                ]
                recorded = record_print(
                    RecordPrintUsages(print_usage_records=records), event_id=f"e{i}", at=at
                )
            reported += [u.usage_id for g in recorded.groups for u in g.usages]
            events.append(recorded)
        elif roll < 0.85:
            events.append(MediaUsagesDeleted(event_id=f"e{i}", occurred_at=at, media_id=rnd.choice(media)))
        else:
            # Status changes and deletes of usages that may be gone, or another media's.
            media_id, usage_id = rnd.choice(media), rnd.choice(reported)
            if roll < 0.93:
                status = rnd.choice(["published", "removed", "pending"])
                events.append(
                    MediaUsageStatusUpdated(
                        event_id=f"e{i}", occurred_at=at, media_id=media_id, usage_id=usage_id, status=status
                    )
                )
            else:
                events.append(
                    MediaUsageDeleted(event_id=f"e{i}", occurred_at=at, media_id=media_id, usage_id=usage_id)
                )
    return events


async def apply_in(conn: asyncpg.Connection, events: Sequence[AnyEvent], sizes: Sequence[int]) -> None:
    i = 0
    for size in [*sizes, len(events)]:
        batch = [(i + j + 1, e) for j, e in enumerate(events[i : i + size])]
        if batch:
            async with conn.transaction():
                await apply_media_usage(conn, batch)
        i += size


async def test_any_batching_gives_the_same_rows_and_notifications(conn: asyncpg.Connection) -> None:
    rnd = random.Random(10)
    for _ in range(4):
        events = history(rnd, 60)
        await conn.execute("TRUNCATE media_usages, media_usage_notifications, media_usage_counts")
        await apply_in(conn, events, [])
        expected = await dump_tables(conn, TABLES)
        assert expected["media_usages"].count(b"\n") >= 3  # the history left something to compare
        assert await conn.fetch(COUNTED) == [] and expected["media_usage_counts"]
        for _ in range(3):
            await conn.execute("TRUNCATE media_usages, media_usage_notifications, media_usage_counts")
            await apply_in(conn, events, [rnd.randint(1, 12) for _ in range(10)])
            assert await dump_tables(conn, TABLES) == expected


async def test_rebuild_gives_identical_rows(client: Client, js: JetStreamContext) -> None:
    async def post(path: str, body: object) -> None:
        resp = await client.post(path, json=body, headers=admin())
        assert resp.status == 202, await resp.text()

    await post("/usages/digital", digital(media_ids=[MEDIA, "m2"], status="pending"))
    await post("/usages/digital", digital(media_ids=[MEDIA, "m2"], status="published"))
    await post("/usages/digital", digital(media_ids=["m2"], status="published"))
    await post("/usages/print", {"printUsageRecords": [print_record(), print_record("m3", 2)]})
    await post(
        "/usages/front",
        {"data": {"addedBy": "ed", "front": "uk", "mediaId": "m3", "dateAdded": "2018-01-02T03:04:05Z"}},
    )
    [print_usage] = [
        u
        for u in (await (await client.get("/usages/media/m3")).json(content_type=None))["data"]
        if u["data"]["platform"] == "print"
    ]
    print_id = print_usage["data"]["id"].replace("/", "%2F")
    assert (
        await client.put(f"/usages/status/update/m3/{print_id}", json={"data": "published"}, headers=admin())
    ).status == 200
    assert (await client.delete("/usages/media/m2", headers=admin())).status == 200
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        last = await last_sequence(js, "usagehub.events.media.>")
        for _ in range(200):
            if (await checkpoints(conn)).get("media_usage", 0) >= last:
                break
            await asyncio.sleep(0.05)
        before = await dump_tables(
            conn, {"media_usages": "usage_id", "media_usage_counts": "status, platform"}
        )
        assert (
            before["media_usages"].count(b"\n") == 5
        )  # m1: pending, published; m3: print, front... and removed

        assert await rebuild(conn, js, PROJECTIONS["media_usage"]) == last

        assert await conn.fetch(COUNTED) == []
        assert (
            await dump_tables(conn, {"media_usages": "usage_id", "media_usage_counts": "status, platform"})
            == before
        )
    finally:
        await conn.close()
