"""API calls published straight onto NATS by other services: counted, deduplicated by their own id in
their publisher's namespace, or rejected with a reason (times out of bounds included)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from services.gateway import keys
from shared.bus import REJECTED_STREAM
from tests.conftest import admin
from tests.integration.test_links_intake import stored

Client = TestClient[web.Request, web.Application]
SUBJECT = "usagehub.ingest.metering"


async def publish(
    js: JetStreamContext, payload: dict[str, Any] | bytes, *, publisher: str = "", msg_id: str = ""
) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    subject = f"{SUBJECT}.{publisher}" if publisher else SUBJECT
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    ack = await js.publish(subject, data, headers=headers)
    assert ack.stream == "USAGEHUB_INTAKE"


def call(call_id: str, count: int = 1, at: datetime | None = None, **more: Any) -> dict[str, Any]:
    at = at or datetime.now(UTC) - timedelta(minutes=1)
    return {
        "org": "acme",
        "service": "billing",
        "time": at.isoformat(),
        "count": count,
        "id": call_id,
        **more,
    }


async def create_acme(client: Client) -> None:
    body = {"id": "acme", "name": "Acme", "time_zone": "Europe/Paris"}
    assert (await client.post("/api/orgs", json=body, headers=admin())).status == 201


async def totals(client: Client, until: int | None = None) -> dict[tuple[str, str], int]:
    """Calls per (org, service) in the counters, once they reach ``until`` in all."""
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        for _ in range(200):
            rows = await conn.fetch(
                "SELECT org_id, service, sum(calls) AS n FROM api_call_counts GROUP BY 1, 2"
            )
            found = {(r["org_id"], r["service"]): int(r["n"]) for r in rows}
            if until is None or sum(found.values()) >= until:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {until} calls, have {found}")
    finally:
        await conn.close()


async def test_published_calls_are_counted_once_per_publisher_and_id(
    client: Client, js: JetStreamContext
) -> None:
    await create_acme(client)
    await publish(js, call("evt-1", 5), msg_id="m1")
    await publish(js, call("evt-1", 5), msg_id="m2")  # the same calls again, in another message
    await publish(js, call("evt-1", 5), msg_id="m1")  # and a resend of the first message
    await publish(js, call("evt-1", 7), publisher="billing")  # another publisher's own evt-1
    await publish(js, call("evt-2", 1, service="tr50"))
    assert await totals(client, 13) == {("acme", "billing"): 12, ("acme", "tr50"): 1}
    # The same id with other calls is a different request under a used key: refused, not counted.
    await publish(js, call("evt-1", 6), msg_id="m3")
    [record] = [json.loads(r) for r in await stored(js, REJECTED_STREAM, "usagehub.rejected.metering", 1)]
    assert record["status"] == 422 and "already used" in record["reason"]
    await asyncio.sleep(0.5)  # anything doubled would show up now
    assert await totals(client) == {("acme", "billing"): 12, ("acme", "tr50"): 1}


async def test_invalid_calls_are_rejected_with_a_reason(client: Client, js: JetStreamContext) -> None:
    await create_acme(client)
    now = datetime.now(UTC)
    cases: list[tuple[Any, int, str]] = [
        (call("a", org="nope"), 404, "org nope does not exist"),
        (call("b", service="Billing!"), 400, "service"),
        (call("c", count=0), 400, "count"),
        (call("d", count=1_000_000_001), 400, "count"),
        (call("e", count="3"), 400, "count"),
        (call("f", at=now - timedelta(days=30, minutes=1)), 400, "more than 30 days in the past"),
        (call("g", at=now + timedelta(minutes=6)), 400, "more than 300 s in the future"),
        ({**call("h"), "time": "2024-03-10T12:00:00"}, 400, "UTC offset"),
        ({**call("i"), "time": "yesterday"}, 400, "time"),
        ({k: v for k, v in call("j").items() if k != "id"}, 400, "id"),
        (call("k l"), 400, "id must be"),
        ({**call("m"), "idempotency_key": "x"}, 400, "set by usagehub"),
        (b"not json", 400, "JSON"),
    ]
    for payload, _, _ in cases:
        await publish(js, payload)
    records = [
        json.loads(r) for r in await stored(js, REJECTED_STREAM, "usagehub.rejected.metering", len(cases))
    ]
    for payload, status, reason in cases:
        if isinstance(payload, bytes):
            [record] = [r for r in records if "payload" not in r]
        else:
            [record] = [r for r in records if r.get("payload") == payload]
        assert record["kind"] == "metering" and record["status"] == status, record
        assert reason in record["reason"], record
    # Within the bounds, however close to them: counted.
    await publish(js, call("edge-past", 2, at=now - timedelta(days=29, hours=23)))
    await publish(js, call("edge-future", 3, at=now + timedelta(minutes=4)))
    assert await totals(client, 5) == {("acme", "billing"): 5}
