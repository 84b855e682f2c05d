"""After every change to a media's usages its whole current list is published on JetStream: a
subscriber gets one after each change, catches up after being away, and gets the same message (never
a different one) for a position the projector published before a crash or a rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from services.gateway import keys
from services.gateway.app import init_app
from services.projector.consumer import apply_batch
from services.projector.media_usage import notify_subject, publish_notifications
from services.projector.projections import PROJECTIONS
from services.projector.rebuild import rebuild
from shared.bus import NOTIFY_STREAM, fetch, pull_consumer
from shared.db import checkpoints
from tests.conftest import Services, admin, with_settings
from tests.integration.helpers import last_sequence
from tests.media_bodies import MEDIA, Notifications, digital, print_record

Client = TestClient[web.Request, web.Application]


@contextlib.asynccontextmanager
async def impatient(services: Services) -> AsyncIterator[Client]:
    """A gateway that answers a write soon after it is durable, not waiting for a stopped projector."""
    settings = with_settings(services.settings, read_your_writes_timeout=0.1)
    async with TestClient(TestServer(init_app(settings))) as client:
        yield client


@pytest.fixture
async def notifications(js: JetStreamContext) -> Notifications:
    subscriber = Notifications(js)
    await subscriber.start()
    return subscriber


async def post(client: Client, path: str, body: Any) -> None:
    resp = await client.post(path, json=body, headers=admin())
    assert resp.status == 202, await resp.text()


def statuses(document: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(u["platform"], u["status"], u["isRemoved"]) for u in document["usages"]]


async def test_a_notification_after_each_change(client: Client, notifications: Notifications) -> None:
    await post(client, "/usages/digital", digital(media_ids=[MEDIA, "other"], status="published"))
    first = {n["id"]: n for n in await notifications.take(2)}
    assert statuses(first[MEDIA]) == [("digital", "published", False)]
    assert first[MEDIA]["_subject"] == notify_subject(MEDIA) == f"usagehub.notify.media.{MEDIA}"
    assert first[MEDIA]["_msg_id"] == f"{MEDIA}:{first[MEDIA]['position']}"
    usage = first[MEDIA]["usages"][0]
    resp = await client.get(f"/usages/media/{MEDIA}")
    read = await resp.json(content_type=None)
    assert {k: v for k, v in usage.items() if k != "isRemoved"} == read["data"][0]["data"]

    # The content drops "other": only "other" changed (its usage removed); MEDIA's usage was
    # reported again as it is, which changes nothing and announces nothing.
    await post(client, "/usages/digital", digital(media_ids=[MEDIA], status="published"))
    [second] = await notifications.take(1)
    assert second["id"] == "other" and statuses(second) == [("digital", "removed", True)]

    await post(client, "/usages/print", {"printUsageRecords": [print_record()]})
    [third] = await notifications.take(1)
    assert sorted(statuses(third)) == [("digital", "published", False), ("print", "pending", False)]

    print_id = next(u["id"] for u in third["usages"] if u["platform"] == "print")
    path = f"/usages/status/update/{MEDIA}/{print_id.replace('/', '%2F')}"
    assert (await client.put(path, json={"data": "published"}, headers=admin())).status == 200
    [fourth] = await notifications.take(1)
    assert sorted(statuses(fourth)) == [("digital", "published", False), ("print", "published", False)]

    assert (await client.delete(f"/usages/media/{MEDIA}/{print_id}", headers=admin())).status == 200
    [fifth] = await notifications.take(1)
    assert statuses(fifth) == [("digital", "published", False)]

    assert (await client.delete(f"/usages/media/{MEDIA}", headers=admin())).status == 200
    [last] = await notifications.take(1)
    assert last["usages"] == [] and last["id"] == MEDIA
    positions = [n["position"] for n in (first[MEDIA], third, fourth, fifth, last)]
    assert positions == sorted(set(positions))
    # Deleting what is no longer there changes nothing, and announces nothing.
    assert (await client.delete(f"/usages/media/{MEDIA}", headers=admin())).status == 200
    await notifications.nothing_more()


async def test_a_subscriber_that_was_away_catches_up(client: Client, js: JetStreamContext) -> None:
    away = Notifications(js, "was-away")
    await away.start()
    for page in range(1, 4):
        await post(client, "/usages/print", {"printUsageRecords": [print_record(page=page)]})
    documents = await away.take(3)  # kept for it by the stream while it did not fetch
    assert [len(d["usages"]) for d in documents] == [1, 2, 3]


async def test_notifications_resume_after_a_projector_restart(
    client: Client, services: Services, notifications: Notifications
) -> None:
    await post(client, "/usages/digital", digital())
    [before] = await notifications.take(1)
    await services.stop_service("projector")
    # Written while the projector is down: durable, but neither projected nor announced yet.
    async with impatient(services) as writer:
        await post(writer, "/usages/digital", digital(status="published"))
    await notifications.nothing_more(0.5)
    services.start_service("projector")
    [after] = await notifications.take(1)
    assert after["position"] > before["position"]
    assert [u["status"] for u in after["usages"]] == ["published"]


@pytest.fixture
async def conn(client: Client) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    yield c
    await c.close()


async def _caught_up(conn: asyncpg.Connection, js: JetStreamContext) -> None:
    last = await last_sequence(js, "usagehub.events.media.>")
    for _ in range(200):
        if (await checkpoints(conn)).get("media_usage", 0) >= last:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the media projection did not catch up")


async def test_a_crash_between_commit_and_publish_only_delays_the_notification(
    client: Client,
    services: Services,
    js: JetStreamContext,
    conn: asyncpg.Connection,
    notifications: Notifications,
) -> None:
    await post(client, "/usages/digital", digital())
    await notifications.take(1)
    await services.stop_service("projector")
    async with impatient(services) as writer:
        await post(writer, "/usages/digital", digital(status="published"))
    # What the projector does before it publishes: commit the batch (and its notification) ...
    projection = PROJECTIONS["media_usage"]
    sub = await pull_consumer(js, "media_usage", projection.filters, 0, fresh=True)
    deliveries = [d for d in await fetch(sub, 100, wait=2.0)]
    await sub.unsubscribe()
    await apply_batch(conn, projection, deliveries)
    pending = await conn.fetch("SELECT media_id, position FROM media_usage_notifications")
    assert [(r["media_id"], r["position"]) for r in pending] == [(MEDIA, deliveries[-1].seq)]
    # ... and then it dies. Started again, it publishes what the crash left, once.
    await notifications.nothing_more(0.5)
    services.start_service("projector")
    [document] = await notifications.take(1)
    assert (
        document["position"] == deliveries[-1].seq
        and document["_msg_id"] == f"{MEDIA}:{document['position']}"
    )
    for _ in range(100):
        if not await conn.fetch("SELECT 1 FROM media_usage_notifications"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the published notification was not forgotten")
    # Had it died after publishing but before forgetting, the same message would go again: dropped.
    await conn.execute(
        "INSERT INTO media_usage_notifications (media_id, position, document) VALUES ($1, $2, $3)",
        MEDIA,
        document["position"],
        "{}",  # even different bytes: the message id alone is what JetStream deduplicates on
    )
    before = (await js.stream_info(NOTIFY_STREAM)).state.messages
    await publish_notifications(js, conn)
    assert (await js.stream_info(NOTIFY_STREAM)).state.messages == before
    await notifications.nothing_more(0.3)


async def test_a_rebuild_announces_the_same_documents_again(
    client: Client, js: JetStreamContext, conn: asyncpg.Connection, notifications: Notifications
) -> None:
    await post(client, "/usages/digital", digital(media_ids=[MEDIA, "other"], status="published"))
    await post(client, "/usages/digital", digital(media_ids=[MEDIA], status="published"))
    await post(client, "/usages/print", {"printUsageRecords": [print_record(), print_record("third")]})
    # Two media changed by the first and the last write, one ("other") by the second.
    published = await notifications.take(5)
    latest = {n["id"]: n for n in published}
    await _caught_up(conn, js)
    before = (await js.stream_info(NOTIFY_STREAM)).state.messages

    await rebuild(conn, js, PROJECTIONS["media_usage"])
    rows = await conn.fetch(
        "SELECT media_id, position, document FROM media_usage_notifications ORDER BY media_id"
    )
    # The replay leaves each media's latest document, byte for byte what was published for its position.
    assert {r["media_id"]: r["position"] for r in rows} == {m: n["position"] for m, n in latest.items()}
    stripped = {m: {k: v for k, v in n.items() if not k.startswith("_")} for m, n in latest.items()}
    assert {r["media_id"]: json.loads(r["document"]) for r in rows} == stripped
    await publish_notifications(js, conn)
    # Same message ids within the duplicate window: nothing new reaches subscribers.
    assert (await js.stream_info(NOTIFY_STREAM)).state.messages == before
    await notifications.nothing_more(0.3)
