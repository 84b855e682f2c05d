"""Link usage published straight onto NATS by another service: accepted, merged, or rejected with a reason."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.gateway.links_read import iso_ms
from shared.bus import EVENTS_STREAM, REJECTED_STREAM
from tests.conftest import admin

Client = TestClient[web.Request, web.Application]
SUBJECT = "usagehub.ingest.link_usage"


async def publish(js: JetStreamContext, msg_id: str, payload: dict[str, Any] | bytes) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ack = await js.publish(SUBJECT, data, headers={"Nats-Msg-Id": msg_id})
    assert ack.stream == "USAGEHUB_INTAKE"


async def create_link(client: Client) -> int:
    resp = await client.post(
        "/api/links", json={"name": "Docs", "url": "https://example.org/"}, headers=admin()
    )
    assert resp.status == 201
    return int((await resp.json())["id"])


async def usage_when(client: Client, link_id: int, count: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(200):
        resp = await client.get(f"/api/links/{link_id}/usage")
        items = await resp.json()
        if len(items) >= count:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usages, have {items}")


async def stored(js: JetStreamContext, stream: str, subject: str, count: int) -> list[bytes]:
    """The first ``count`` messages on ``subject`` in ``stream``, waiting for them to arrive."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, filter_subject=subject
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[bytes] = []
    try:
        for _ in range(100):
            try:
                msgs = await sub.fetch(count - len(out), timeout=0.1)
            except TimeoutError:
                msgs = []
            out += [m.data for m in msgs]
            if len(out) >= count:
                return out
        raise AssertionError(f"expected {count} messages on {subject}, have {len(out)}")
    finally:
        await sub.unsubscribe()


async def test_a_published_use_appears_in_get_with_the_clients_time(
    client: Client, js: JetStreamContext
) -> None:
    link_id = await create_link(client)
    at = datetime.now(UTC) - timedelta(minutes=4)
    await publish(js, "svc-1", {"link_id": link_id, "user": "alice", "used_at": at.isoformat()})
    assert await usage_when(client, link_id, 1) == [{"user": "alice", "date": iso_ms(at), "duration": 0}]


async def test_a_use_without_a_time_is_at_the_ingests_clock(client: Client, js: JetStreamContext) -> None:
    link_id = await create_link(client)
    before = datetime.now(UTC)
    await publish(js, "svc-1", {"link_id": link_id, "user": "alice"})
    [item] = await usage_when(client, link_id, 1)
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(item["date"]) <= datetime.now(UTC)


async def test_a_republished_message_is_one_use(client: Client, js: JetStreamContext) -> None:
    link_id = await create_link(client)
    start = datetime.now(UTC) - timedelta(minutes=3)
    for _ in range(3):  # the publisher retried: same Nats-Msg-Id
        await publish(js, "svc-1", {"link_id": link_id, "user": "alice", "used_at": start.isoformat()})
    later = start + timedelta(seconds=90)
    await publish(js, "svc-2", {"link_id": link_id, "user": "alice", "used_at": later.isoformat()})
    for _ in range(100):
        items = await usage_when(client, link_id, 1)
        if items[0]["duration"] == 90:
            break
        await asyncio.sleep(0.05)
    assert items == [{"user": "alice", "date": iso_ms(start), "duration": 90}]
    events = await stored(js, EVENTS_STREAM, "usagehub.events.links.used", 2)
    assert len({json.loads(e)["event_id"] for e in events}) == 2


async def test_published_and_posted_uses_merge_alike(client: Client, js: JetStreamContext) -> None:
    link_id = await create_link(client)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    await publish(js, "svc-1", {"link_id": link_id, "user": "bob", "used_at": start.isoformat()})
    await usage_when(client, link_id, 1)
    resp = await client.post(f"/api/links/{link_id}/usage", data={"user": "bob"})
    assert resp.status == 201
    [item] = await usage_when(client, link_id, 1)
    assert item["date"] == iso_ms(start) and 119 <= item["duration"] <= 125


def _key(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True)


async def test_invalid_uses_are_rejected_with_a_reason(client: Client, js: JetStreamContext) -> None:
    link_id = await create_link(client)
    # (payload, how the rejection record shows it, status, part of the reason)
    cases: list[tuple[Any, Any, int, str]] = [
        ({"link_id": link_id}, None, 400, "user"),
        ({"link_id": link_id, "user": ""}, None, 400, "user"),
        ({"link_id": link_id, "user": "x" * 201}, None, 400, "at most 200"),
        ({"link_id": link_id, "user": 7}, None, 400, "user"),
        ({"user": "alice"}, None, 400, "link_id"),
        ({"link_id": "one", "user": "alice"}, None, 400, "link_id"),
        ({"link_id": 99, "user": "alice"}, None, 404, "does not exist"),
        ({"link_id": 99, "user": ""}, None, 404, "does not exist"),
        ({"link_id": link_id, "user": "alice", "used_at": "yesterday"}, None, 400, "used_at"),
        ({"link_id": link_id, "user": "alice", "used_at": 1457103205}, None, 400, "used_at"),
        (b"not json", {"payload_bytes": 8}, 400, "JSON"),
        (b"[1, 2]", {"payload_bytes": 6}, 400, "object"),
    ]
    for i, (payload, _, _, _) in enumerate(cases):
        await publish(js, f"bad-{i}", payload)
    subject = "usagehub.rejected.link_usage"
    records = [json.loads(r) for r in await stored(js, REJECTED_STREAM, subject, len(cases))]
    # Intake messages are taken concurrently: find each case's record by its payload.
    # Anything but a JSON object is kept as its size and hash only.
    by_payload = {_key(r.get("payload", {"payload_bytes": r.get("payload_bytes")})): r for r in records}
    for payload, shown, status, reason in cases:
        record = by_payload[_key(payload if shown is None else shown)]
        assert record["kind"] == "link_usage" and record["status"] == status, record
        assert reason in record["reason"], record
    resp = await client.get(f"/api/links/{link_id}/usage")
    assert await resp.json() == []


async def test_client_times_outside_the_skew_are_rejected(client: Client, js: JetStreamContext) -> None:
    link_id = await create_link(client)
    now = datetime.now(UTC)
    wrong = {
        "past": (now - timedelta(minutes=6)).isoformat(),
        "future": (now + timedelta(minutes=6)).isoformat(),
        "naive": (now - timedelta(minutes=1)).replace(tzinfo=None).isoformat(),
    }
    for name, at in wrong.items():
        await publish(js, f"skew-{name}", {"link_id": link_id, "user": name, "used_at": at})
    good = (now - timedelta(minutes=4, seconds=30)).isoformat()
    await publish(js, "skew-ok", {"link_id": link_id, "user": "ok", "used_at": good})
    records = [json.loads(r) for r in await stored(js, REJECTED_STREAM, "usagehub.rejected.link_usage", 3)]
    assert sorted(r["payload"]["user"] for r in records) == ["future", "naive", "past"]
    assert all(r["status"] == 400 and "used_at" in r["reason"] for r in records)
    past = next(r for r in records if r["payload"]["user"] == "past")
    assert "300 s" in past["reason"]
    assert [u["user"] for u in await usage_when(client, link_id, 1)] == ["ok"]
