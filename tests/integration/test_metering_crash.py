"""Crashes: the projector SIGKILLed halfway through 10,000 counted-call events leaves exact counters;
a gateway stopped with SIGTERM loses no call it served, and one SIGKILLed loses at most the calls of
its last flush interval."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from datetime import datetime, timedelta

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.gateway import keys
from services.local.servers import free_port
from services.projector.api_calls import quarter_start
from shared.bus import Appender
from shared.db import checkpoints
from shared.events import new_event_id, now
from shared.events.metering import ApiCallCount, ApiCallsCounted
from shared.settings import Settings
from tests.conftest import Services, admin
from tests.integration.helpers import last_sequence, service_env

Client = TestClient[web.Request, web.Application]
EVENTS = 10_000
ORGS = ("acme", "acme-eu", "globex")


def start(module: str, settings: Settings, **env: str) -> asyncio.subprocess.Process:
    """A usagehub service as a process, as the NATS user of ``settings``."""
    environment = service_env(settings, USAGEHUB_METRICS_PORT="0", **env)
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        module,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def make_orgs(client: Client) -> str:
    for org_id, parent in (("acme", None), ("acme-eu", "acme"), ("globex", None)):
        body = {
            "id": org_id,
            "name": org_id,
            "time_zone": "Europe/Paris",
            **({"parent": parent} if parent else {}),
        }
        assert (await client.post("/api/orgs", json=body, headers=admin())).status == 201
    resp = await client.post("/api/orgs/acme-eu/keys", json={}, headers=admin())
    return str((await resp.json())["key"])


async def counters(conn: asyncpg.Connection) -> Counter[tuple[str, datetime, str]]:
    rows = await conn.fetch("SELECT org_id, bucket, service, calls FROM api_call_counts")
    return Counter({(r["org_id"], r["bucket"], r["service"]): r["calls"] for r in rows})


async def test_counters_are_exact_across_a_projector_crash(
    client: Client, services: Services, nats_client: NATS, js: JetStreamContext
) -> None:
    await make_orgs(client)
    await services.stop_service("projector")  # this test runs its projector as a real process
    settings = services.settings_for("projector")
    expected: Counter[tuple[str, datetime, str]] = Counter()
    start_at = now() - timedelta(days=2)
    async with Appender(nats_client) as appender:  # only ingest, and the tests' superuser, append

        async def append(i: int) -> None:
            at = start_at + timedelta(seconds=7 * i)
            entry = ApiCallCount(
                org_id=ORGS[i % 3], service=("tr50", "heartbeat")[i % 2], at=at, count=1 + i % 5
            )
            expected[entry.org_id, quarter_start(at), entry.service] += entry.count
            await appender.append(
                ApiCallsCounted(event_id=new_event_id(), occurred_at=now(), counts=(entry,)), new_event_id()
            )

        for first in range(0, EVENTS, 1000):
            await asyncio.gather(*(append(i) for i in range(first, first + 1000)))
    last = await last_sequence(js, "usagehub.events.metering.api_calls_counted")
    conn = await asyncpg.connect(settings.database_url)
    # Batches of 500, so that it is surely partway through when killed (with the default 5,000 it
    # could apply the 10,000 events in two batches between two looks at its checkpoint).
    projector = await start("services.projector", settings, USAGEHUB_PROJECTOR_BATCH="500")
    try:
        for _ in range(1200):  # kill it once it is partway through
            position = (await checkpoints(conn)).get("api_calls", 0)
            if position > last - EVENTS + EVENTS // 4:
                break
            await asyncio.sleep(0.025)
        projector.send_signal(signal.SIGKILL)
        await projector.wait()
        assert position < last, "the projector finished before it could be killed: use more events"
        projector = await start("services.projector", settings)
        for _ in range(1200):
            if (await checkpoints(conn)).get("api_calls", 0) >= last:
                break
            await asyncio.sleep(0.05)
        assert await counters(conn) == expected
        days = await conn.fetchval(
            "SELECT sum(c) FROM api_call_subtree_months, unnest(calls) c WHERE org_id IN ('acme', 'globex')"
        )
        assert days == sum(expected.values())
    finally:
        projector.send_signal(signal.SIGTERM)
        await projector.wait()
        await conn.close()


async def served_and_counted(client: Client, stop: signal.Signals, pause: float) -> tuple[int, int, int]:
    """Calls made through a gateway process in two rounds with ``pause`` between them, then the
    gateway stopped by ``stop``: (calls before the pause, all calls served, calls counted)."""
    key = await make_orgs(client)
    settings = client.app[keys.SETTINGS]
    port = free_port()
    gateway = await start("services.gateway", settings, USAGEHUB_HTTP_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    served = 0
    try:
        async with aiohttp.ClientSession(base) as http:
            for _ in range(200):
                try:
                    async with http.get("/healthz"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

            async def round_of(n: int) -> None:
                nonlocal served
                for i in range(n):
                    path = ("/api/stats", "/api/links")[i % 2]
                    async with http.get(path, headers={"X-Api-Key": key}) as r:
                        assert r.status == 200
                        served += 1

            await round_of(150)
            before_pause = served
            await asyncio.sleep(pause)
            await round_of(150)
    finally:
        gateway.send_signal(stop)
        await gateway.wait()
    conn = await asyncpg.connect(settings.database_url)
    try:
        # Counted calls reach the counters through ingest and the projector; a killed gateway's
        # last interval never does.
        least = served if stop == signal.SIGTERM else before_pause
        for _ in range(100):
            if await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM api_call_counts") >= least:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything still on its way, or counted twice, shows up now
        total = int(await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM api_call_counts"))
    finally:
        await conn.close()
    return before_pause, served, total


async def test_a_gateway_stopped_by_sigterm_loses_no_call(client: Client) -> None:
    _, served, counted = await served_and_counted(client, signal.SIGTERM, 0.0)
    assert counted == served == 300


async def test_a_gateway_killed_loses_at_most_its_last_flush_interval(client: Client) -> None:
    before_pause, served, counted = await served_and_counted(client, signal.SIGKILL, 2.5)
    # The first round was flushed during the pause; what the kill took was counted after it.
    assert before_pause <= counted <= served
    assert (before_pause, served) == (150, 300)
