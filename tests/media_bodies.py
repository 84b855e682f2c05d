"""Request bodies of the media-usage API the tests send (the seed's ids and metadata), and reading
the notifications it publishes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus import NOTIFY_STREAM

MEDIA = "53b2098571e4e9f1d22e98b74db9a8bc5d060331"
CONTENT = "56587d29e4b0fe4d55bb97d5"
DIGITAL_METADATA = {
    "webTitle": "Headline",
    "webUrl": "http://www.example.com/culture/2015/dec/02/headline",
    "sectionId": "culture",
    "composerUrl": f"https://composer.tools.example.com/content/{CONTENT}",
}
PRINT_METADATA: dict[str, Any] = {
    "sectionName": "Grauniad Weekly Test",
    "issueDate": "2014-07-25T15:30:00Z",
    "pageNumber": 1,
    "storyName": "NWPalLoad",
    "publicationCode": "gdn",
    "publicationName": "The Grauniad",
    "layoutId": 10884608,
    "edition": 1,
    "size": {"x": 70, "y": 82},
    "orderedBy": "Davina Bloshen",
    "sectionCode": "gnd",
}


def digital(
    media_ids: list[str] | None = None,
    status: str = "pending",
    references: list[Any] | None = None,
    content_id: str = CONTENT,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contentId": content_id,
        "status": status,
        "mediaIds": [MEDIA] if media_ids is None else media_ids,
        "digitalUsageMetadata": DIGITAL_METADATA,
    }
    if references is not None:
        body["references"] = references
    return body


def print_record(media_id: str = MEDIA, page: int = 1, status: str = "pending") -> dict[str, Any]:
    return {
        "dateAdded": "2014-07-25T16:00:00Z",
        "mediaId": media_id,
        "printUsageMetadata": {**PRINT_METADATA, "pageNumber": page},
        "containerId": "container-1",
        "usageId": "indesign-1",
        "usageStatus": status,
    }


class Notifications:
    """A durable subscriber of ``usagehub.notify.media.>``: what it has not taken yet waits for it
    in the stream, also while it is away."""

    def __init__(self, js: JetStreamContext, durable: str = "test-subscriber") -> None:
        self.js = js
        self.durable = durable

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject="usagehub.notify.media.>",
        )
        await self.js.add_consumer(NOTIFY_STREAM, config)

    async def take(self, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` notifications, in the order they were published."""
        sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=NOTIFY_STREAM)
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while len(out) < count and loop.time() < deadline:
                try:
                    msgs = await sub.fetch(count - len(out), timeout=0.2)
                except TimeoutError:
                    continue
                for m in msgs:
                    out.append(
                        {
                            **json.loads(m.data),
                            "_subject": m.subject,
                            "_msg_id": (m.headers or {}).get("Nats-Msg-Id"),
                        }
                    )
                    await m.ack()
        finally:
            await sub.unsubscribe()
        assert len(out) == count, f"expected {count} notifications, have {out}"
        return out

    async def nothing_more(self, wait: float = 1.0) -> None:
        sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=NOTIFY_STREAM)
        try:
            try:
                msgs = await sub.fetch(1, timeout=wait)
            except TimeoutError:
                return
            raise AssertionError(f"unexpected notification {[m.data for m in msgs]}")
        finally:
            await sub.unsubscribe()
