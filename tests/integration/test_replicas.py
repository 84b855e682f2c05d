"""Several ingest and projector replicas at once (as `--scale ingest=3 --scale projector=2`):
ids stay unique and sequential, a revoked token is refused by every replica, nothing is counted twice."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import init_app
from services.ingest.__main__ import run as run_ingest
from services.projector.__main__ import run as run_projector
from tests.conftest import Services, admin


async def test_replicas_neither_collide_nor_double_count(services: Services) -> None:
    ingest, projector = services.settings_for("ingest"), services.settings_for("projector")
    extra = [asyncio.create_task(run_ingest(ingest, services.stop)) for _ in range(2)]
    extra.append(asyncio.create_task(run_projector(projector, services.stop)))
    await asyncio.sleep(1.0)  # the extra replicas have joined the queue group and the leader election
    try:
        async with TestClient(TestServer(init_app(services.settings))) as client:

            async def register(i: int) -> dict[str, object]:
                resp = await client.post("/api/devices", json={"name": f"d{i}"}, headers=admin())
                assert resp.status == 200, await resp.text()
                body: dict[str, object] = await resp.json()
                return body

            devices = await asyncio.gather(*(register(i) for i in range(30)))
            assert sorted(d["id"] for d in devices) == list(range(30))  # type: ignore[type-var]

            async def beats(token: str, n: int) -> None:
                for _ in range(n):
                    resp = await client.post("/api/beat", headers={"Authorization": token})
                    assert resp.status == 200, await resp.text()

            await asyncio.gather(*(beats(str(d["token"]), 40) for d in devices))

            # Revoke, then beat with the old token many times: whichever replica answers refuses it.
            old = str(devices[0]["token"])
            renewed = await client.post(f"/api/devices/{devices[0]['id']}/token/generate", headers=admin())
            assert renewed.status == 200
            answers = await asyncio.gather(
                *(client.post("/api/beat", headers={"Authorization": old}) for _ in range(30))
            )
            assert {r.status for r in answers} == {401}

            stats = await (await client.get("/api/stats")).json()
            assert stats["total_beats"] == 30 * 40
            assert all(d["num_beats"] == 40 for d in stats["devices"])
    finally:
        for task in extra:
            task.cancel()
        for task in extra:
            with contextlib.suppress(asyncio.CancelledError):
                await task
