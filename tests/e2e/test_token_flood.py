"""A flood of wrong tokens, over HTTP and straight onto NATS, with ingest SIGKILLed in the middle:
usagehub keeps serving a legitimate device, JetStream's consumers stay bounded (token lookups never
create one per request), and ``usagehub up`` starts again on the same data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import time
from pathlib import Path

import aiohttp
import nats
from nats.aio.client import Client as NATS

from services.local.servers import free_port
from services.projector.projections import PROJECTIONS
from shared.bus import EVENTS_STREAM, inbox_prefix
from shared.secrets import hash_token
from tests.e2e.test_local_run import SECRET, call, processes_using, start, stop, up_environment, wait_until

HTTP_FLOOD = 15_000
NATS_FLOOD = 15_000


def child_pid(up_pid: int, module: str) -> int:
    """The pid of ``usagehub up``'s child running ``python -m <module>``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == up_pid and f"-m {module}" in cmdline:
            return int(proc.name)
    raise LookupError(module)


async def connect_as(data: Path, user: str) -> NATS:
    port = re.search(r"listen: 127\.0\.0\.1:(\d+)", (data / "nats" / "nats.conf").read_text())
    assert port is not None
    password = (data / "nats" / "credentials" / user).read_text().strip()
    return await nats.connect(
        f"nats://127.0.0.1:{port.group(1)}", user=user, password=password, inbox_prefix=inbox_prefix(user)
    )


async def flood(base: str, data: Path, up_pid: int, token: str) -> dict[str, object]:
    statuses: dict[int, int] = {}
    legit: list[float] = []
    refused: list[int] = []
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=48)) as http:

        async def attacker(n: int) -> None:
            for _ in range(n):
                async with http.post("/api/beat", headers={"Authorization": secrets.token_urlsafe(32)}) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        async def device(stop_at: float) -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                for _ in range(20):  # ingest may be restarting: the device retries, as clients do
                    async with http.post("/api/beat", headers={"Authorization": token}) as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.25)
                else:
                    refused.append(r.status)
                legit.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        publisher = await connect_as(data, "publisher")
        try:
            for i in range(NATS_FLOOD):
                # Wrong token hashes straight onto the intake: no rate limit in front of these.
                await publisher.publish(
                    "usagehub.ingest.beats", json.dumps({"token_hash": hash_token(str(i))}).encode()
                )
                if i == NATS_FLOOD // 2:
                    os.kill(child_pid(up_pid, "services.ingest"), signal.SIGKILL)
            await publisher.flush()
        finally:
            await publisher.close()
        deadline = time.monotonic() + 60
        attackers = [asyncio.create_task(attacker(HTTP_FLOOD // 30)) for _ in range(30)]
        await asyncio.gather(device(deadline), *attackers, return_exceptions=False)
    return {"statuses": statuses, "legit": sorted(legit), "refused": refused}


def test_a_wrong_token_flood_with_an_ingest_crash_leaves_usagehub_serving(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    up = start(up_environment(data, port))
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        register = {"Authorization": SECRET, "Idempotency-Key": "laptop"}
        device = wait_until(lambda: call(base + "/api/devices", "POST", register, b'{"name": "Laptop"}'), 30)
        token = device["token"]
        result = asyncio.run(asyncio.wait_for(flood(base, data, up.pid, token), 240))
        statuses = result["statuses"]
        assert isinstance(statuses, dict) and set(statuses) <= {401, 429}, statuses
        assert statuses.get(429, 0) > HTTP_FLOOD * 0.9, statuses  # refused at the door, before ingest
        # The device kept working throughout: each beat answered 200 (retried while ingest restarted).
        legit = result["legit"]
        assert isinstance(legit, list) and len(legit) > 50 and result["refused"] == []
        p50, p99 = legit[len(legit) // 2], legit[int(len(legit) * 0.99)]
        print(
            f"\ntoken flood: {statuses}; device beats {len(legit)},"
            f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        assert p99 < 10.0
        wait_until(lambda: call(base + "/api/beat", "POST", {"Authorization": token}), 30)
        wait_until(lambda: call(base + "/readyz"), 60)

        async def consumers() -> int:
            nc = await connect_as(data, "gateway")
            try:
                return int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.consumer_count)
            finally:
                await nc.close()

        counted = asyncio.run(consumers())
        # The projections' durables, and at most a short-lived read or two: never one per token.
        assert counted <= len(PROJECTIONS) + 2, counted
    finally:
        stop(up)
    assert processes_using(data) == []

    up = start(up_environment(data, port))
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        stats = call(base + "/api/stats")
    finally:
        stop(up)
    assert stats["devices"][0]["name"] == "Laptop" and stats["total_beats"] >= 1
    assert processes_using(data) == []
