"""An import killed (SIGKILL) half-way and run again, with the projector killed half-way through
projecting it: every commit counted once, and the figures are git log's."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import asyncpg
from nats.js import JetStreamContext

from services.gateway import keys
from tests.conftest import Services
from tests.integration.contributions_data import Client
from tests.integration.contributions_repos import fast_import_repo, plain_numstat, projected
from tests.integration.helpers import run_usagehub, service_env

COMMITS = 3000
SUBJECT = "usagehub.events.contributions.commit"


async def stored(js: JetStreamContext) -> int:
    info = await js.stream_info("USAGEHUB_EVENTS", subjects_filter=SUBJECT)
    return sum((info.state.subjects or {}).values())


def usagehub(*args: str, settings: object, **more: str) -> asyncio.subprocess.Process:
    env = service_env(settings, **more)  # type: ignore[arg-type]
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_killed_import_and_projector_count_every_commit_once(
    client: Client, services: Services, js: JetStreamContext, tmp_path: Path
) -> None:
    repo = tmp_path / "big"
    fast_import_repo(repo, COMMITS)
    await services.stop_service("projector")  # run as a process, to kill it
    projector = await usagehub(
        "services.projector", settings=services.settings_for("projector"), USAGEHUB_METRICS_PORT="0"
    )
    importer = await usagehub(
        "services", "import", "git", str(repo), "--module", "big", settings=services.settings
    )
    for _ in range(600):  # until some batches are in, not all
        if await stored(js) >= 1000:
            break
        await asyncio.sleep(0.02)
    importer.send_signal(signal.SIGKILL)
    await importer.wait()
    assert 1000 <= await stored(js) < COMMITS
    projector.send_signal(signal.SIGKILL)
    await projector.wait()
    projector = await usagehub(
        "services.projector", settings=services.settings_for("projector"), USAGEHUB_METRICS_PORT="0"
    )
    try:
        code, out, err = await run_usagehub(
            "import", "git", str(repo), "--module", "big", settings=services.settings
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["appended"] + result["already_imported"] == COMMITS and result["appended"] < COMMITS
        assert await stored(js) == COMMITS
        conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
        try:
            await projected(conn, js)
        finally:
            await conn.close()
    finally:
        projector.send_signal(signal.SIGTERM)
        await projector.wait()
    expected = plain_numstat(repo)
    resp = await client.get("/api/1.0/contribution?release=all&module=big")
    body = (await resp.json())["contribution"]
    assert body["commit_count"] == COMMITS
    assert body["loc"] == sum(e.added + e.deleted for e in expected.values())
    resp = await client.get("/api/1.0/stats/engineers?release=all")
    by_author = {r["id"]: r["metric"] for r in (await resp.json())["stats"]}
    assert sum(by_author.values()) == COMMITS and len(by_author) == 20
