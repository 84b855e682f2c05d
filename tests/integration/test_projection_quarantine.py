"""One bad event never stops a projection: it is quarantined with its reason, counted, shown in
/readyz and /metrics, later events are still projected, and a rebuild quarantines the same ones."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from shared.events import DeviceRegistered, encode_event, new_event_id, now
from tests.conftest import Services, admin
from tests.integration.helpers import dump_tables, keys_recorded, run_usagehub

Client = TestClient[web.Request, web.Application]
TABLES = {
    "projection_quarantine": "projection, stream_seq",
    "heartbeat_devices": "device_id",
    "links": "link_id",
    "idempotency_keys": "idempotency_key",
    "projection_checkpoints": "projection",
}


async def quarantined(conn: asyncpg.Connection, expected: int) -> list[asyncpg.Record]:
    for _ in range(200):
        rows = await conn.fetch("SELECT * FROM projection_quarantine ORDER BY projection, stream_seq")
        if len(rows) >= expected:
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_poison_events_are_quarantined_and_the_projections_go_on(
    client: Client, services: Services, js: JetStreamContext
) -> None:
    settings = services.settings_for("projector")  # rebuilds run where the projector does
    link = {"name": "Wiki", "url": "https://wiki.example"}
    assert (await client.post("/api/links", json=link, headers=admin())).status == 201
    # Garbage that decodes as no event, on the subjects of two projections (links reads links.*,
    # idempotency reads everything) ...
    garbage = await js.publish("usagehub.events.links.created", b"\x00 not an event")
    # ... and a well-formed event that the heartbeat read model cannot store (a NUL in a name).
    unstorable = DeviceRegistered(
        event_id=new_event_id(), occurred_at=now(), device_id=0, name="a\x00b", token_hash="0" * 64
    )
    bad = await js.publish("usagehub.events.devices.registered", encode_event(unstorable))

    # Later writes, with keys, are still answered and projected.
    for i in range(3):
        resp = await client.post(
            "/api/links", json={**link, "name": f"Wiki {i}"}, headers=admin(**{"Idempotency-Key": f"k{i}"})
        )
        assert resp.status == 201, await resp.text()
    registered = await client.post(
        "/api/devices", json={"name": "Laptop"}, headers=admin(**{"Idempotency-Key": "d"})
    )
    assert registered.status == 200
    listed = await (await client.get("/api/links")).json()
    assert [item["name"] for item in listed["items"] if item["name"].startswith("Wiki ")] == [
        "Wiki 0",
        "Wiki 1",
        "Wiki 2",
    ]

    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await quarantined(conn, 3)
        found = {(r["projection"], r["stream_seq"]): r for r in rows}
        assert set(found) == {
            ("idempotency", garbage.seq),
            ("links", garbage.seq),
            ("heartbeat", bad.seq),
        }
        assert "cannot decode" in found[("links", garbage.seq)]["reason"]
        assert "cannot apply" in found[("heartbeat", bad.seq)]["reason"]
        assert found[("links", garbage.seq)]["data"] == b"\x00 not an event"

        ready = await client.get("/readyz")
        detail = await ready.json()
        assert ready.status == 200, detail
        # Every projection is listed; those the garbage never reached have none.
        set_aside = {name: n for name, n in detail["quarantined"].items() if n}
        assert set_aside == {"heartbeat": 1, "idempotency": 1, "links": 1}
        scraped = await (await client.get("/metrics")).text()
        counted = [
            line for line in scraped.splitlines() if line.startswith("usagehub_projection_quarantined_total")
        ]
        assert any('projection="links"' in line and float(line.split()[-1]) >= 1 for line in counted)

        await keys_recorded(conn, js)
        before = await dump_tables(conn, TABLES)
        code, _, err = await run_usagehub("rebuild", "all", settings=settings)
        assert code == 0, err
        assert await dump_tables(conn, TABLES) == before
    finally:
        await conn.close()
    assert json.loads(await (await client.get("/api/stats")).text())["devices"][-1]["name"] == "Laptop"
