"""Media usages published straight onto NATS by other services: the same bodies and the same
validation as HTTP, one write per message id, and rejections recorded with every problem."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus import EVENTS_STREAM, REJECTED_STREAM
from tests.media_bodies import MEDIA, digital, print_record

Client = TestClient[web.Request, web.Application]


async def publish(js: JetStreamContext, kind: str, msg_id: str, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ack = await js.publish(f"usagehub.ingest.{kind}", data, headers={"Nats-Msg-Id": msg_id})
    assert ack.stream == "USAGEHUB_INTAKE"


async def usages_when(client: Client, media_id: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(200):
        resp = await client.get(f"/usages/media/{media_id}")
        if resp.status == 200:
            found = [u["data"] for u in (await resp.json(content_type=None))["data"]]
            if len(found) >= count:
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usages of {media_id}, have {found}")


async def rejections(js: JetStreamContext, subject: str, count: int) -> list[dict[str, Any]]:
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, filter_subject=subject
    )
    sub = await js.pull_subscribe(subject, stream=REJECTED_STREAM, config=config)
    out: list[dict[str, Any]] = []
    try:
        for _ in range(100):
            with contextlib.suppress(TimeoutError):
                out += [json.loads(m.data) for m in await sub.fetch(count - len(out), timeout=0.1)]
            if len(out) >= count:
                return out
        raise AssertionError(f"expected {count} rejections on {subject}, have {out}")
    finally:
        await sub.unsubscribe()


async def media_events(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.media.>")
    return dict(info.state.subjects or {})


async def test_every_kind_of_write_through_the_intake(client: Client, js: JetStreamContext) -> None:
    await publish(js, "media_digital", "d-1", digital(status="published"))
    await publish(js, "media_print", "p-1", {"printUsageRecords": [print_record()]})
    when = "2018-01-02T03:04:05Z"
    await publish(
        js,
        "media_syndication",
        "s-1",
        {"data": {"partnerName": "Reuters", "mediaId": MEDIA, "dateAdded": when}},
    )
    await publish(
        js,
        "media_front.fronts-tool",
        "f-1",
        {"data": {"addedBy": "ed", "front": "uk", "mediaId": MEDIA, "dateAdded": when}},
    )
    await publish(
        js, "media_download", "l-1", {"data": {"downloadedBy": "ed", "mediaId": MEDIA, "dateAdded": when}}
    )
    usages = await usages_when(client, MEDIA, 5)
    assert sorted(u["platform"] for u in usages) == ["digital", "download", "front", "print", "syndication"]


async def test_a_republished_message_is_one_write(client: Client, js: JetStreamContext) -> None:
    for _ in range(3):
        await publish(js, "media_print", "p-1", {"printUsageRecords": [print_record()]})
    await publish(js, "media_print", "p-2", {"printUsageRecords": [print_record(page=2)]})
    await usages_when(client, MEDIA, 2)
    for _ in range(50):  # the intake takes messages concurrently: let any straggler land
        if (await media_events(js)).get("usagehub.events.media.recorded", 0) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert await media_events(js) == {"usagehub.events.media.recorded": 2}


async def test_invalid_messages_are_rejected_with_every_problem_and_nothing_is_written(
    client: Client, js: JetStreamContext
) -> None:
    bad_size = {
        **print_record(page=3),
        "printUsageMetadata": {**print_record()["printUsageMetadata"], "size": {"y": 1}},
    }
    cases: list[tuple[str, Any, int, list[str]]] = [
        (
            "media_print",
            {"printUsageRecords": [print_record(), print_record(page=2), bad_size]},
            400,
            ["printUsageRecords[2].printUsageMetadata.size.x: required"],
        ),
        (
            "media_digital",
            {**digital(), "mediaIds": "x", "status": "live"},
            400,
            ["status: must be one of pending, published", "mediaIds: must be an array"],
        ),
        ("media_front", {"data": {}}, 400, ["data.addedBy: required", "data.front: required"]),
        (
            "media_print",
            {"printUsageRecords": [print_record()], "origin": "http"},
            400,
            ["origin: set by usagehub"],
        ),
        ("media_print", b"[1, 2]", 400, ["payload must be a JSON object"]),
    ]
    for i, (kind, payload, _, _) in enumerate(cases):
        await publish(js, kind, f"bad-{i}", payload)
    found = {
        kind: await rejections(js, f"usagehub.rejected.{kind}", sum(1 for c in cases if c[0] == kind))
        for kind in {c[0] for c in cases}
    }
    for kind, payload, status, reasons in cases:
        match = [r for r in found[kind] if all(reason in r["reason"] for reason in reasons)]
        assert len(match) == 1, (kind, reasons, found[kind])
        assert match[0]["status"] == status and match[0]["kind"] == kind
        if isinstance(payload, dict):
            assert match[0]["payload"] == payload
    assert await media_events(js) == {}
    assert (await client.get(f"/usages/media/{MEDIA}")).status == 404
