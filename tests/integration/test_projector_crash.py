"""20,000 beats from several devices over concurrent connections, with the projector process killed
(SIGKILL) and restarted in the middle: every count comes out exact."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from services.gateway.app import init_app
from shared.settings import Settings
from tests.conftest import Services, admin, with_settings
from tests.integration.helpers import service_env

BEATS = 20_000
DEVICES = 5
CONNECTIONS = 64


def start_projector(settings: Settings) -> asyncio.subprocess.Process:
    env = service_env(settings, USAGEHUB_METRICS_PORT="0")
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        "services.projector",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_counts_are_exact_across_a_projector_crash(services: Services) -> None:
    await services.stop_service("projector")  # this test runs its projector as a real process
    projector = await start_projector(services.settings_for("projector"))
    # Writes normally wait for the read model; while it is dead they answer after this bound.
    settings = with_settings(services.settings, read_your_writes_timeout=0.2)
    server = TestServer(init_app(settings))
    await server.start_server()
    base = f"http://{server.host}:{server.port}"
    sent: Counter[int] = Counter()
    try:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(base, connector=connector) as http:
            tokens = []
            for i in range(DEVICES):
                async with http.post("/api/devices", json={"name": f"device-{i}"}, headers=admin()) as r:
                    tokens.append((await r.json())["token"])
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(BEATS):
                queue.put_nowait(n % DEVICES)

            async def worker() -> None:
                while not queue.empty():
                    device = queue.get_nowait()
                    async with http.post("/api/beat", headers={"Authorization": tokens[device]}) as r:
                        assert r.status == 200, await r.text()
                    sent[device] += 1

            async def crash_midway() -> None:
                nonlocal projector
                for _ in range(6000):  # poll the queue until half the beats are out
                    if queue.qsize() <= BEATS // 2:
                        break
                    await asyncio.sleep(0.05)
                projector.send_signal(signal.SIGKILL)
                await projector.wait()
                await asyncio.sleep(0.5)
                projector = await start_projector(services.settings_for("projector"))

            await asyncio.gather(crash_midway(), *(worker() for _ in range(CONNECTIONS)))
            assert sum(sent.values()) == BEATS

            for _ in range(600):
                async with http.get("/api/stats") as r:
                    stats = await r.json()
                if stats["total_beats"] >= BEATS:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything doubled would show up now
            async with http.get("/api/stats") as r:
                stats = await r.json()
    finally:
        projector.send_signal(signal.SIGTERM)
        await projector.wait()
        await server.close()
    assert stats["total_beats"] == BEATS
    assert {d["id"]: d["num_beats"] for d in stats["devices"]} == dict(sent)
    # The dashboard's counters, folded in the same batches by the same projection, agree exactly.
    conn = await asyncpg.connect(services.settings.database_url)
    try:
        for table in ("heartbeat_beats_minute", "heartbeat_beats_hour"):
            counted = await conn.fetch(f"SELECT device_id, sum(beats) AS n FROM {table} GROUP BY device_id")
            assert {r["device_id"]: r["n"] for r in counted} == dict(sent), table
    finally:
        await conn.close()
