"""Marks, emails and blueprints published straight onto NATS by other services: validated as the
admin routes validate them, counted once per primary key, rejected with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus import REJECTED_STREAM
from tests.integration.contributions_data import BLUEPRINTS, EMAILS, Client, marks


async def publish(js: JetStreamContext, kind: str, msg_id: str, payload: Any, publisher: str = "") -> None:
    subject = f"usagehub.ingest.{kind}" + (f".{publisher}" if publisher else "")
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ack = await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    assert ack.stream == "USAGEHUB_INTAKE"


async def rejected(js: JetStreamContext, kind: str, count: int) -> list[dict[str, Any]]:
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=f"usagehub.rejected.{kind}",
    )
    sub = await js.pull_subscribe(f"usagehub.rejected.{kind}", stream=REJECTED_STREAM, config=config)
    out: list[dict[str, Any]] = []
    try:
        for _ in range(100):
            with contextlib.suppress(TimeoutError):
                out += [json.loads(m.data) for m in await sub.fetch(count - len(out), timeout=0.1)]
            if len(out) >= count:
                return out
        raise AssertionError(f"expected {count} rejections of {kind}, have {out}")
    finally:
        await sub.unsubscribe()


async def totals(client: Client, want: dict[str, int]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(200):
        resp = await client.get("/api/1.0/contribution?release=all")
        body = (await resp.json())["contribution"]
        if all(body[k] >= v for k, v in want.items()):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {want}, have {body}")


async def test_published_records_count_once_each(client: Client, js: JetStreamContext) -> None:
    mark_list = marks()[:3]
    for i, m in enumerate(mark_list):
        await publish(js, "contribution_marks", f"m{i}", m)
    # The same mark again under another message id, from a named publisher: one mark.
    await publish(js, "contribution_marks", "again", mark_list[0], publisher="gerrit")
    await publish(js, "contribution_emails", "e0", EMAILS[0])
    await publish(js, "contribution_emails", "e1", EMAILS[0])
    await publish(js, "contribution_blueprints", "b0", BLUEPRINTS[0])
    await totals(client, {"email_count": 1, "competed_blueprint_count": 1})
    body = await totals(client, {"new_blueprint_count": 1})
    await asyncio.sleep(0.3)  # anything counted twice would show by now
    body = await totals(client, {})
    marks_by_value = body["marks"]
    assert sum(marks_by_value.values()) == 3 and marks_by_value["-2"] == 1
    assert (body["email_count"], body["new_blueprint_count"], body["competed_blueprint_count"]) == (1, 1, 1)
    resp = await client.get("/api/1.0/activity?release=all&metric=marks&page_size=100")
    assert len((await resp.json())["activity"]) == 3


async def test_invalid_records_are_rejected_with_the_reason(client: Client, js: JetStreamContext) -> None:
    good = marks()[0]
    cases: list[tuple[Any, int, str]] = [
        ({**good, "value": 7}, 400, "value"),
        ({**good, "author_email": "nobody"}, 400, "author_email"),
        ({k: v for k, v in good.items() if k != "date"}, 400, "date"),
        ({**good, "idempotency_key": "mine"}, 400, "idempotency_key"),
        ([good], 400, "object"),
        (b"{not json", 400, "JSON"),
    ]
    for i, (payload, _, _) in enumerate(cases):
        await publish(js, "contribution_marks", f"bad-{i}", payload)
    records = await rejected(js, "contribution_marks", len(cases))
    reasons = sorted((r["status"], r["reason"]) for r in records)
    for _, status, word in cases:
        assert any(s == status and word in reason for s, reason in reasons), (word, reasons)
    await publish(js, "contribution_blueprints", "bad-bp", {**BLUEPRINTS[0], "owner": "two words"})
    [record] = await rejected(js, "contribution_blueprints", 1)
    assert record["status"] == 400 and "owner" in record["reason"]
    resp = await client.get("/api/1.0/contribution?release=all")
    assert sum((await resp.json())["contribution"]["marks"].values()) == 0
