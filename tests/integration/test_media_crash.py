"""Media writes over concurrent connections with the projector process killed (SIGKILL) and restarted
in the middle: the rows come out as the pure fold of the stream says, and every media's latest
notification is its final usage list, never a different document for one position."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from nats.js import JetStreamContext

from services.gateway.app import init_app
from services.projector.media_usage import (
    USAGE_COLUMNS,
    MediaUsagesState,
    fold_media_usage_events,
    listed,
    notification_document,
    row_of,
)
from shared.bus import read_stream
from shared.db import checkpoints
from shared.events import decode_event
from tests.conftest import Services, admin, with_settings
from tests.integration.helpers import last_sequence
from tests.integration.test_projector_crash import start_projector
from tests.media_bodies import Notifications, digital, print_record

WRITES = 600
CONNECTIONS = 32
MEDIA = [f"m{i}" for i in range(30)]
CONTENTS = [f"c{i}" for i in range(20)]


def request(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    if rnd.random() < 0.7:
        status = rnd.choice(["pending", "published"])
        body = digital(rnd.sample(MEDIA, rnd.randint(0, 4)), status, content_id=rnd.choice(CONTENTS))
        return "/usages/digital", body
    records = [print_record(rnd.choice(MEDIA), rnd.randint(1, 3)) for _ in range(rnd.randint(1, 3))]
    return "/usages/print", {"printUsageRecords": records}


async def test_rows_and_notifications_are_exact_across_a_projector_crash(
    services: Services, js: JetStreamContext
) -> None:
    subscriber = Notifications(js, "crash-subscriber")
    await subscriber.start()
    await services.stop_service("projector")  # this test runs its projector as a real process
    projector = await start_projector(services.settings_for("projector"))
    settings = with_settings(services.settings, read_your_writes_timeout=0.2)
    server = TestServer(init_app(settings))
    await server.start_server()
    rnd = random.Random(7)
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for _ in range(WRITES):
        queue.put_nowait(request(rnd))
    try:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(f"http://{server.host}:{server.port}", connector=connector) as http:

            async def worker() -> None:
                while not queue.empty():
                    path, body = queue.get_nowait()
                    async with http.post(path, json=body, headers=admin()) as r:
                        assert r.status == 202, await r.text()

            async def crash_midway() -> None:
                nonlocal projector
                for _ in range(6000):
                    if queue.qsize() <= WRITES // 2:
                        break
                    await asyncio.sleep(0.02)
                projector.send_signal(signal.SIGKILL)
                await projector.wait()
                await asyncio.sleep(0.3)
                projector = await start_projector(services.settings_for("projector"))

            await asyncio.gather(crash_midway(), *(worker() for _ in range(CONNECTIONS)))

        conn = await asyncpg.connect(services.settings.database_url)
        try:
            last = await last_sequence(js, "usagehub.events.media.>")
            for _ in range(600):
                if (await checkpoints(conn)).get("media_usage", 0) >= last:
                    break
                await asyncio.sleep(0.1)
            for _ in range(100):  # the last batch's notifications follow its commit
                if not await conn.fetchval("SELECT count(*) FROM media_usage_notifications"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("notifications were left unpublished")
            rows = {
                r["usage_id"]: row_of(r)
                for r in await conn.fetch(f"SELECT {USAGE_COLUMNS} FROM media_usages")
            }
        finally:
            await conn.close()
    finally:
        projector.send_signal(signal.SIGTERM)
        await projector.wait()
        await server.close()

    events = []
    async for batch in read_stream(js, ["usagehub.events.media.>"]):
        events += [(d.seq, decode_event(d.data)) for d in batch]
    assert len(events) == WRITES
    expected = fold_media_usage_events(MediaUsagesState(), events)
    assert rows == dict(expected.usages)

    info = await js.stream_info("USAGEHUB_NOTIFY")
    published = await subscriber.take(int(info.state.messages), wait=30)
    by_id: dict[str, dict[str, Any]] = {}
    for document in published:
        earlier = by_id.setdefault(document["_msg_id"], document)
        assert earlier == document  # one position, one document
    latest: dict[str, dict[str, Any]] = {}
    for document in published:
        if document["position"] >= latest.get(document["id"], {"position": -1})["position"]:
            latest[document["id"]] = document
    assert set(latest) == set(expected.changed)
    for media_id, (position, at) in expected.changed.items():
        final = [listed(r) for r in rows.values() if r.media_id == media_id]
        want = json.loads(notification_document(media_id, final, position, at))
        got = {k: v for k, v in latest[media_id].items() if not k.startswith("_")}
        assert got == want, media_id
