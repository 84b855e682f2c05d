"""``make bench``: throughput of usagehub on this machine, next to a minimal aiohttp handler measured
in the same run, written as a JSON summary (medians of several rounds, and their ratios)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench import footprint
from bench.loadgen import drive, http_request
from services.local.servers import Server, free_port, start_nats, start_postgres
from shared.bus import Appender, connect, ensure_streams
from shared.events import PageVisited, new_event_id, now
from shared.secrets import hash_token
from shared.settings import Settings

SECRET = "bench-admin-secret-key-0123456789abcdef"


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def as_user(nats: Server, user: str) -> Settings:
    """Connecting to the embedded NATS as ``user`` (appends are ingest's; rebuilds the projector's)."""
    return Settings(
        nats_url=nats.url, nats_user=user, nats_password=nats.password_files[user].read_text().strip()
    )


@contextmanager
def usagehub(data: Path) -> Iterator[tuple[str, Server, str]]:
    """Embedded servers and the three services as processes, as ``make up`` runs them."""
    nats = start_nats(data / "nats")
    pg = start_postgres(data / "postgres")
    port = free_port()
    env = {
        **os.environ,
        "USAGEHUB_NATS_URL": nats.url,
        "USAGEHUB_DATABASE_URL": pg.url,
        "USAGEHUB_SECRET_KEY": SECRET,
        "USAGEHUB_HTTP_PORT": str(port),
        "USAGEHUB_LOG_LEVEL": "warning",
        "USAGEHUB_LOG_FORMAT": "json",
    }
    procs = []
    try:
        for service in ("ingest", "projector", "gateway"):
            env_s = {
                **env,
                "USAGEHUB_METRICS_PORT": str(free_port()),
                "USAGEHUB_NATS_USER": service,
                "USAGEHUB_NATS_PASSWORD_FILE": str(nats.password_files[service]),
            }
            procs.append(subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=env_s))
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/readyz", 60)
        yield base, nats, pg.url
    finally:
        # The gateway first, as `make up` stops them: its last metering flush still reaches ingest.
        for p in reversed(procs):
            p.terminate()
            p.wait(20)
        pg.stop()
        nats.stop()


@contextmanager
def baseline() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                import urllib.request

                urllib.request.urlopen(urllib.request.Request(base + "/api/beat", method="POST"), timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


async def hammer(
    base: str, path: str, count: int, concurrency: int, make_request: Callable[[int], dict[str, Any]]
) -> float:
    """Send ``count`` POSTs over ``concurrency`` connections; requests per second."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as http:
        next_i = 0

        async def worker() -> None:
            nonlocal next_i
            while next_i < count:
                i = next_i
                next_i += 1
                async with http.post(path, **make_request(i)) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"{path}: {r.status} {await r.text()}")
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def register(base: str, n: int) -> list[str]:
    async with aiohttp.ClientSession(base) as http:
        tokens = []
        for i in range(n):
            async with http.post(
                "/api/devices", json={"name": f"bench-{i}"}, headers={"Authorization": SECRET}
            ) as r:
                tokens.append((await r.json())["token"])
        return tokens


async def append_rate(nats: Server, writers: int, count: int) -> float:
    """Appends per second to JetStream (fsync before ack) through the shared Appender."""
    nc = await connect(as_user(nats, "ingest"), "bench")
    try:
        await ensure_streams(nc.jetstream())
        async with Appender(nc) as appender:
            per_writer = count // writers

            async def writer() -> None:
                for _ in range(per_writer):
                    event = PageVisited(event_id=new_event_id(), occurred_at=now(), path="/bench")
                    await appender.append(event, event.event_id)

            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(writers)))
            return per_writer * writers / (time.perf_counter() - started)
    finally:
        await nc.close()


async def create_link(base: str) -> int:
    async with aiohttp.ClientSession(base) as http:
        body = {"name": "bench", "url": "https://bench.example"}
        async with http.post("/api/links", json=body, headers={"Authorization": SECRET}) as r:
            link_id: int = (await r.json())["id"]
            return link_id


async def catch_up_rates(nats: Server, database_url: str) -> dict[str, Any]:
    """Each projection rebuilt from the whole stream: events applied per second while catching up."""
    import asyncpg

    from services.projector.projections import PROJECTIONS
    from services.projector.rebuild import rebuild
    from shared.bus import read_stream

    nc = await connect(as_user(nats, "projector"), "bench-rebuild")
    conn = await asyncpg.connect(database_url)
    try:
        js = nc.jetstream()
        out: dict[str, Any] = {}
        for name, projection in sorted(PROJECTIONS.items()):
            events = 0
            async for batch in read_stream(js, projection.filters):
                events += len(batch)
            started = time.perf_counter()
            await rebuild(conn, js, projection)
            seconds = time.perf_counter() - started
            out[name] = {
                "events": events,
                "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds, 1),
            }
        return out
    finally:
        await conn.close()
        await nc.close()


async def projection_lag(nats: Server, rate: int = 5_000, seconds: float = 10.0) -> dict[str, Any]:
    """Events appended at ``rate`` a second for ``seconds`` (paced, whatever the answers): how long
    after its append was acknowledged each was projected, i.e. covered by a heartbeat commit notice."""
    import heapq

    from shared.bus import PROJECTED_PREFIX

    nc = await connect(as_user(nats, "ingest"), "bench-lag")
    watcher = await connect(as_user(nats, "gateway"), "bench-lag-watch")
    loop = asyncio.get_running_loop()
    waiting: list[tuple[int, float]] = []  # (seq, acknowledged at), a heap
    lags: list[float] = []
    position = 0

    async def on_notice(msg: Any) -> None:
        nonlocal position
        position = max(position, int(msg.data))
        at = loop.time()
        while waiting and waiting[0][0] <= position:
            lags.append(at - heapq.heappop(waiting)[1])

    sub = await watcher.subscribe(PROJECTED_PREFIX + "heartbeat", cb=on_notice)
    try:
        async with Appender(nc) as appender:
            tasks: set[asyncio.Task[None]] = set()

            async def append_one() -> None:
                event = PageVisited(event_id=new_event_id(), occurred_at=now(), path="/bench-lag")
                seq = (await appender.append(event, event.event_id)).seq
                if seq <= position:  # projected before its acknowledgement reached us
                    lags.append(0.0)
                else:
                    heapq.heappush(waiting, (seq, loop.time()))

            started, sent = loop.time(), 0
            while (elapsed := loop.time() - started) < seconds:
                for _ in range(int(elapsed * rate) - sent):
                    task = asyncio.create_task(append_one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                sent = max(sent, int(elapsed * rate))
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)
            offered = sent / (loop.time() - started)
        for _ in range(600):  # what is still waiting, at most a minute
            if not waiting:
                break
            await asyncio.sleep(0.1)
        lags.sort()
        return {
            "events": sent,
            "offered_per_s": round(offered, 1),
            "never_projected_within_a_minute": len(waiting),
            "lag_ms_p50": round(1000 * lags[len(lags) // 2], 1) if lags else None,
            "lag_ms_p99": round(1000 * lags[int(len(lags) * 0.99)], 1) if lags else None,
            "lag_ms_max": round(1000 * lags[-1], 1) if lags else None,
        }
    finally:
        await sub.unsubscribe()
        await watcher.close()
        await nc.close()


def _print_record(media_id: str, page: int = 1) -> dict[str, Any]:
    meta = {
        "sectionName": "Bench Weekly",
        "issueDate": "2014-07-25T15:30:00Z",
        "pageNumber": page,
        "storyName": "Bench",
        "publicationCode": "gdn",
        "publicationName": "The Bench",
        "layoutId": 10884608,
        "edition": 1,
        "size": {"x": 70, "y": 82},
        "orderedBy": "Bench",
        "sectionCode": "bch",
    }
    return {
        "dateAdded": "2014-07-25T16:00:00Z",
        "mediaId": media_id,
        "printUsageMetadata": meta,
        "containerId": "c",
        "usageId": "u",
        "usageStatus": "pending",
    }


async def _media_load(base: str, total: int, per_request: int) -> float:
    """``total`` usages through the real write path (HTTP print requests); one media ("hot") gets 100
    of them (pages 1-100), every other media one. Returns seconds taken."""
    bodies = [{"printUsageRecords": [_print_record("hot", page) for page in range(1, 101)]}]
    others = [f"{i:040x}" for i in range(total - 100)]
    for i in range(0, len(others), per_request):
        bodies.append({"printUsageRecords": [_print_record(m) for m in others[i : i + per_request]]})
    started = time.perf_counter()
    await hammer(
        base,
        "/usages/print",
        len(bodies),
        8,
        lambda i: {"json": bodies[i], "headers": {"Authorization": SECRET}},
    )
    return time.perf_counter() - started


async def _gateway_cpu_seconds(http: aiohttp.ClientSession) -> float:
    async with http.get("/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError("the gateway's /metrics has no process_cpu_seconds_total")


async def _media_get_latency(base: str, count: int) -> dict[str, Any]:
    """``GET /usages/media/hot`` one after another on one connection: milliseconds per request, and
    the gateway's CPU per request (what latency is on an idle machine; the load average says how
    idle this one was)."""
    timings = []
    async with aiohttp.ClientSession(base) as http:
        cpu_before = await _gateway_cpu_seconds(http)
        for _ in range(count):
            started = time.perf_counter()
            async with http.get("/usages/media/hot") as r:
                body = await r.read()
                if r.status != 200 or json.loads(body)["length"] != 100:
                    raise RuntimeError(f"GET /usages/media/hot: {r.status} {body[:200]!r}")
            timings.append((time.perf_counter() - started) * 1000)
        cpu_ms = (await _gateway_cpu_seconds(http) - cpu_before) * 1000
    timings.sort()
    return {
        "requests": count,
        "p50_ms": round(timings[len(timings) // 2], 2),
        "p99_ms": round(timings[int(len(timings) * 0.99)], 2),
        "max_ms": round(timings[-1], 2),
        "gateway_cpu_ms_per_request": round(cpu_ms / count, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def _media_nats_rate(nats: Server, database_url: str, count: int, tag: str) -> float:
    """Print usages published straight onto the intake (as the publisher user), one per message: per
    second until all of them are in the read model (intake, ingest, event stream, projection)."""
    import asyncpg

    media = [f"{tag}-{j}" for j in range(count)]
    nc = await connect(as_user(nats, "publisher"), "bench-media")
    conn = await asyncpg.connect(database_url)
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        for i in range(0, count, 256):
            await asyncio.gather(
                *(
                    js.publish(
                        "usagehub.ingest.media_print",
                        json.dumps({"printUsageRecords": [_print_record(m)]}).encode(),
                        headers={"Nats-Msg-Id": m},
                    )
                    for m in media[i : i + 256]
                )
            )
        arrived = "SELECT count(*) FROM media_usages WHERE media_id = ANY($1::text[])"
        while int(await conn.fetchval(arrived, media)) < count:
            if time.perf_counter() - started > 600:
                raise RuntimeError("intake media usages did not all reach the read model")
            await asyncio.sleep(0.05)
        return count / (time.perf_counter() - started)
    finally:
        await conn.close()
        await nc.close()


INTAKE_WINDOW = 256


async def intake_beats(nats: Server, database_url: str, tokens: list[str], count: int) -> dict[str, Any]:
    """Beats published straight onto the intake (as the publisher user), ``INTAKE_WINDOW`` durable
    publishes at a time: how fast they are stored on the intake stream (raw durable JetStream
    appends, this batching), and how fast they are in the read model (intake, ingest's decision and
    append to the event stream, the heartbeat projection); the ratio of the two."""
    import asyncpg

    hashes = [hash_token(t) for t in tokens]
    nc = await connect(as_user(nats, "publisher"), "bench-intake")
    conn = await asyncpg.connect(database_url)
    beats = "SELECT coalesce(sum(num_beats), 0) FROM heartbeat_devices"
    try:
        js = nc.jetstream()
        before = int(await conn.fetchval(beats))
        tag = new_event_id()
        started = time.perf_counter()
        for i in range(0, count, INTAKE_WINDOW):
            await asyncio.gather(
                *(
                    js.publish(
                        "usagehub.ingest.beats",
                        json.dumps({"token_hash": hashes[j % len(hashes)]}).encode(),
                        headers={"Nats-Msg-Id": f"{tag}-{j}"},
                    )
                    for j in range(i, min(count, i + INTAKE_WINDOW))
                )
            )
        stored = time.perf_counter() - started
        while int(await conn.fetchval(beats)) < before + count:
            if time.perf_counter() - started > 600:
                raise RuntimeError("intake beats did not all reach the read model")
            await asyncio.sleep(0.02)
        projected = time.perf_counter() - started
        return {
            "beats": count,
            "stored_on_intake_per_s": round(count / stored),
            "projected_per_s": round(count / projected),
            "ratio_projected_to_stored": round(stored / projected, 3),
        }
    finally:
        await conn.close()
        await nc.close()


def media_usage(base: str, nats: Server, database_url: str, rounds: int, n: int, c: int) -> dict[str, Any]:
    """The media-usage API: ``GET /usages/media/:id`` latency with 100 usages on the media and
    100,000 in all (loaded through HTTP print requests, the real write path), then usage writes per
    second over HTTP (one print record per request) and straight onto NATS (one per message)."""
    total = 100_000
    load_seconds = asyncio.run(_media_load(base, total, per_request=100))
    latency = asyncio.run(_media_get_latency(base, 2000))
    writes = iter(range(1_000_000))

    def http_round() -> Awaitable[float]:
        tag = f"http-{next(writes)}"
        return hammer(
            base,
            "/usages/print",
            n,
            c,
            lambda i: {
                "json": {"printUsageRecords": [_print_record(f"{tag}-{i}")]},
                "headers": {"Authorization": SECRET},
            },
        )

    return {
        "loaded_usages": total,
        "loaded_through": "HTTP POST /usages/print, 100 records per request, 8 connections",
        "load_usages_per_s": round(total / load_seconds, 1),
        "get_by_media_100_of_100000": latency,
        "writes_per_s_http": median_of(rounds, http_round),
        "writes_per_s_nats": median_of(
            rounds, lambda: _media_nats_rate(nats, database_url, n, f"nats-{next(writes)}")
        ),
    }


async def metering_figures(base: str, nats: Server, database_url: str, events: int) -> dict[str, Any]:
    """``events`` counted-call events over a year for an org with 20 sub-orgs: how fast the api_calls
    projection folds them (live, and rebuilt from the stream), and how fast a year of daily history
    for the whole tree answers over HTTP (p50/p99 of sequential requests)."""
    import random
    from datetime import timedelta

    import asyncpg

    from services.projector.api_calls import apply_api_calls
    from services.projector.projections import PROJECTIONS
    from services.projector.rebuild import rebuild
    from shared.bus import read_stream
    from shared.events import decode_event
    from shared.events.metering import ApiCallCount, ApiCallsCounted

    admin = {"Authorization": SECRET}
    zones = ["America/New_York", "Europe/Paris", "Asia/Kolkata", "America/Los_Angeles"]
    orgs = ["tree", *(f"tree-{i:02d}" for i in range(20))]
    async with aiohttp.ClientSession(base) as http:
        for i, org in enumerate(orgs):
            # Sub-orgs hang two levels deep: tree > tree-00..04 > the rest.
            parent = None if i == 0 else ("tree" if i <= 5 else f"tree-{(i - 6) % 5:02d}")
            body = {"id": org, "name": org, "time_zone": zones[i % len(zones)], "parent": parent}
            async with http.post("/api/orgs", json=body, headers=admin) as r:
                assert r.status == 201, await r.text()
        async with http.post("/api/orgs/tree/keys", json={}, headers=admin) as r:
            key = (await r.json())["key"]

    services = ["heartbeat", "lighthouse", "media-usage", "stackalytics", "tr50"]
    year_ago = now() - timedelta(days=365)
    rnd = random.Random(11)
    # Appending events is ingest's right; reading them back for a rebuild, the projector's.
    nc = await connect(as_user(nats, "ingest"), "bench-metering")
    reader = await connect(as_user(nats, "projector"), "bench-metering-rebuild")
    conn = await asyncpg.connect(database_url)
    try:
        js = reader.jetstream()
        started = time.perf_counter()
        last = 0
        # A year of calls in the order they happened, as the log holds them.
        offsets = sorted(rnd.randrange(365 * 86_400) for _ in range(events))
        async with Appender(nc) as appender:

            async def append_one(offset: int) -> None:
                nonlocal last
                at = year_ago + timedelta(seconds=offset)
                entry = ApiCallCount(org_id=rnd.choice(orgs), service=rnd.choice(services), at=at, count=1)
                event = ApiCallsCounted(event_id=new_event_id(), occurred_at=now(), counts=(entry,))
                last = max(last, (await appender.append(event, event.event_id)).seq)

            for first in range(0, events, 2000):
                await asyncio.gather(*(append_one(o) for o in offsets[first : first + 2000]))
        appended = time.perf_counter() - started
        for _ in range(36_000):  # at most an hour
            position = await conn.fetchval(
                "SELECT position FROM projection_checkpoints WHERE projection = 'api_calls'"
            )
            if int(position or 0) >= last:
                break
            await asyncio.sleep(0.1)
        live = time.perf_counter() - started
        # The fold and upserts alone, on events already read: the rest is the shared read path.
        sample: list[tuple[int, Any]] = []
        async with contextlib.aclosing(read_stream(js, PROJECTIONS["api_calls"].filters)) as stream:
            async for batch in stream:
                sample += [(d.seq, decode_event(d.data)) for d in batch]
                if len(sample) >= min(events, 200_000):
                    break
        applying = conn.transaction()
        await applying.start()
        try:
            await conn.execute("TRUNCATE " + ", ".join(PROJECTIONS["api_calls"].tables))
            applied_at = time.perf_counter()
            for first in range(0, len(sample), 1000):
                await apply_api_calls(conn, sample[first : first + 1000])
            applied = time.perf_counter() - applied_at
        finally:
            await applying.rollback()  # the tables as the projector left them
        started = time.perf_counter()
        await rebuild(conn, js, PROJECTIONS["api_calls"])
        rebuilt = time.perf_counter() - started
        rows = int(await conn.fetchval("SELECT count(*) FROM api_call_counts"))
    finally:
        await conn.close()
        await reader.close()
        await nc.close()

    query = {
        "start": year_ago.isoformat(),
        "end": now().isoformat(),
        "series": "day",
        "includeSubOrgs": "true",
    }
    latencies: dict[str, list[float]] = {"include_sub_orgs": [], "dimension_org": []}
    async with aiohttp.ClientSession(base, headers={"X-Api-Key": key}) as http:
        for name, params in (("include_sub_orgs", query), ("dimension_org", {**query, "dimension": "org"})):
            for i in range(220):
                t = time.perf_counter()
                async with http.get("/api/usage/history", params=params) as r:
                    body = await r.json()
                    assert r.status == 200 and len(body["ts"]) >= 365, body
                if i >= 20:  # the first ones warm caches and connections
                    latencies[name].append((time.perf_counter() - t) * 1000)

    def percentiles(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
            "requests": len(ordered),
        }

    return {
        "events": events,
        "orgs": len(orgs),
        "quarter_hour_counter_rows": rows,
        "appended_seconds": round(appended, 1),
        "projected_live_seconds": round(live, 1),
        "projected_live_events_per_s": round(events / live, 1),
        "apply_only_events": len(sample),
        "apply_only_events_per_s": round(len(sample) / applied, 1),
        "rebuild_seconds": round(rebuilt, 1),
        "rebuild_events_per_s": round(events / rebuilt, 1),
        "year_of_daily_history_with_20_sub_orgs": percentiles(latencies["include_sub_orgs"]),
        "year_of_daily_history_by_org": percentiles(latencies["dimension_org"]),
    }


async def cluster_and_single_beat_rates(
    single: str, single_tokens: list[str], data: Path, database_url: str, rounds: int, n: int, c: int
) -> dict[str, Any]:
    """Durable beats per second through a gateway on the three-node cluster of the fault tests (R3
    streams, every server fsyncing before it acknowledges) and on the single node, rounds taken in
    turn so both meet the same background load. The cluster runs one gateway, ingest and projector,
    as the single node does: the difference is the cost of replication."""
    from tests.cluster.harness import running_usagehub

    async with running_usagehub(
        data,
        database_url,
        gateways=1,
        ingests=1,
        projectors=1,
        extra_env={"USAGEHUB_SECRET_KEY": SECRET, "USAGEHUB_LOG_LEVEL": "warning"},
    ) as cluster:
        (base,) = cluster.gateways
        tokens = await register(base, 8)
        measured: dict[str, list[float]] = {"three_node_cluster": [], "single_node": []}
        for _ in range(rounds):
            for name, gateway, keys in (
                ("three_node_cluster", base, tokens),
                ("single_node", single, single_tokens),
            ):
                rate = await hammer(
                    gateway,
                    "/api/beat",
                    n,
                    c,
                    lambda i, keys=keys: {"headers": {"Authorization": keys[i % 8]}},
                )
                measured[name].append(round(rate, 1))
    out: dict[str, Any] = {
        name: {"median": round(statistics.median(values), 1), "rounds": values}
        for name, values in measured.items()
    }
    out["ratio_cluster_to_single_node"] = round(
        out["three_node_cluster"]["median"] / out["single_node"]["median"], 3
    )
    return out


# --- contribution statistics (Stackalytics API) ------------------------------------------------------

CONTRIBUTION_RECORDS = 1_000_000
IMPORT_COMMITS = 20_000
_START, _END = 1_293_840_000, 1_609_459_200  # 2011 to 2020: twenty half-year releases
_USERS, _DIRECTORY_USERS, _MODULES, _COMPANIES = 8000, 2000, 300, 60


def _email(u: int) -> str:
    return f"u{u:04d}@c{u % _COMPANIES:02d}.com" if u % 10 < 7 else f"u{u:04d}@home.net"


def _contribution_directory() -> list[Any]:
    """Releases, companies with domains, modules in organizations, project types (one through a
    module group) and directory users, a third of whom changed company once."""
    from shared.events.contributions import (
        Affiliation,
        DirectoryCompanySaved,
        DirectoryModuleGroupSaved,
        DirectoryModuleSaved,
        DirectoryProjectTypeSaved,
        DirectoryReleaseSaved,
        DirectoryUserSaved,
    )

    at = now()
    common: dict[str, Any] = {"occurred_at": at}
    events: list[Any] = []
    for i in range(20):
        end = _START + (i + 1) * (_END - _START) // 20
        events.append(
            DirectoryReleaseSaved(event_id=new_event_id(), **common, release_name=f"r{i:02d}", end_date=end)
        )
    for c in range(_COMPANIES):
        events.append(
            DirectoryCompanySaved(
                event_id=new_event_id(), **common, company_name=f"Company {c:02d}", domains=[f"c{c:02d}.com"]
            )
        )
    for m in range(_MODULES):
        org = "openstack" if m < 200 else "infra" if m < 260 else "other"
        events.append(
            DirectoryModuleSaved(event_id=new_event_id(), **common, module=f"mod-{m:03d}", organization=org)
        )
    storage = [f"mod-{m:03d}" for m in range(10)]
    events.append(
        DirectoryModuleGroupSaved(event_id=new_event_id(), **common, module_group="storage", modules=storage)
    )
    for ptype, members in (("openstack", ["openstack"]), ("infra", ["infra"]), ("storage", ["storage"])):
        events.append(
            DirectoryProjectTypeSaved(
                event_id=new_event_id(), **common, project_type=ptype, title=ptype.title(), modules=members
            )
        )
    for u in range(_DIRECTORY_USERS):
        companies = [Affiliation(f"Company {(u * 7) % _COMPANIES:02d}", 0)]
        if u % 3 == 0:
            moved = _START + (u * 7919) % (_END - _START)
            companies.insert(0, Affiliation(f"Company {(u * 3) % _COMPANIES:02d}", moved))
        events.append(
            DirectoryUserSaved(
                event_id=new_event_id(),
                **common,
                user_id=f"lp{u:04d}",
                user_name=f"User {u}",
                launchpad_id=f"lp{u:04d}",
                emails=[_email(u), f"u{u:04d}@alt.org"],
                companies=companies,
            )
        )
    return events


def _contribution_records(count: int, seed: int = 7) -> Iterator[Any]:
    """Records in date order (as they happen): users and modules drawn with a long tail, 30% commits,
    50% Code-Review marks, 15% e-mails, 5% drafted blueprints."""
    import random

    from shared.events.contributions import (
        BlueprintDrafted,
        CommitRecorded,
        EmailRecorded,
        ReviewMarkRecorded,
    )

    rng = random.Random(seed)
    at = now()
    step = (_END - _START) / count
    for i in range(count):
        u = int(_USERS * rng.random() ** 3)
        modules = [int(_MODULES * random.Random(u * 31 + k).random() ** 2) for k in range(1 + u % 4)]
        module = f"mod-{modules[int(len(modules) * rng.random() ** 2)]:03d}"
        date = _START + int(i * step) + rng.randrange(int(step) + 1)
        kind, email = rng.random(), _email(u)
        common: dict[str, Any] = {
            "event_id": new_event_id(),
            "occurred_at": at,
            "module": module,
            "date": date,
        }
        if kind < 0.30:
            yield CommitRecorded(
                **common,
                commit_id=f"{i:040x}",
                branch="master",
                author_name=f"User {u}",
                author_email=email,
                subject=f"Change {i}",
                message="Body\n",
                files_changed=1 + i % 5,
                lines_added=i % 97,
                lines_deleted=i % 13,
            )
        elif kind < 0.80:
            value = rng.choices([-2, -1, 0, 1, 2], [2, 15, 3, 50, 30])[0]
            yield ReviewMarkRecorded(
                **common,
                primary_key=f"r{i}:{email}:Code-Review:{date}",
                review_id=f"r{i}",
                author_name=f"User {u}",
                author_email=email,
                mark_type="Code-Review",
                value=value,
            )
        elif kind < 0.95:
            yield EmailRecorded(
                **common,
                message_id=f"<{i}@lists>",
                author_name=f"User {u}",
                author_email=email,
                subject="Re: x",
            )
        else:
            lp = f"lp{u:04d}" if u < _DIRECTORY_USERS else f"lp-{u}"
            yield BlueprintDrafted(
                **common, blueprint_id=f"{module}:bp{i}", name=f"bp{i}", title="t", launchpad_id=lp
            )


def _fast_import_repo(repo: Path, commits: int) -> None:
    """A linear history of ``commits`` commits by 200 authors, written by one ``git fast-import``."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    chunks: list[bytes] = []
    for i in range(commits):
        a = i % 200
        when = _START + i * ((_END - _START) // commits)
        body = f"Change {i}\n\nCloses-Bug: #{100000 + i}\n".encode()
        content = "".join(f"line {i} {j}\n" for j in range(i % 7 + 1)).encode()
        chunks += [
            b"commit refs/heads/main",
            f"author Dev {a} <{_email(a)}> {when} +0000".encode(),
            f"committer Dev {a} <{_email(a)}> {when} +0000".encode(),
            f"data {len(body)}".encode(),
            body,
            f"M 644 inline f{i % 500}.txt".encode(),
            f"data {len(content)}".encode(),
            content,
            b"",
        ]
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=b"\n".join(chunks) + b"\n", check=True
    )


async def _contributions_projected(conn: Any, js: Any, within: float) -> float:
    """Seconds until the contributions projection holds every contribution event."""
    from nats.js.errors import NotFoundError

    from shared.bus import EVENTS_STREAM
    from shared.events.contributions import SUBJECTS

    last = 0
    for subject in SUBJECTS.values():
        try:
            last = max(last, int((await js.get_last_msg(EVENTS_STREAM, subject, direct=True)).seq or 0))
        except NotFoundError:
            continue
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        position = await conn.fetchval(
            "SELECT position FROM projection_checkpoints WHERE projection = 'contributions'"
        )
        if position is not None and int(position) >= last:
            return time.perf_counter() - started
        await asyncio.sleep(0.2)
    raise RuntimeError("the contributions projection did not catch up")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stats_queries(count: int, seed: int) -> list[str]:
    """Query strings drawn over every common parameter: releases, arbitrary mid-day spans, project
    types, popular and rare modules, big and small companies, prolific and occasional users."""
    import random

    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        params: dict[str, str] = {"metric": rng.choice(["commits", "loc", "marks", "emails", "bpd", "bpc"])}
        release = rng.choice([None, "r07", "r15", "all", "all"])
        if release:
            params["release"] = release
        if rng.random() < 0.4:
            a, b = sorted(rng.randrange(_START, _END) for _ in range(2))
            params["start_date"], params["end_date"] = str(a), str(b)
        for name, choices in (
            ("project_type", ["openstack", "storage", "infra"]),
            ("module", ["mod-000", "mod-040", "mod-290"]),
            ("company", ["Company 00", "Company 31", "*independent"]),
            ("user_id", ["lp0001", "lp1500", _email(7000)]),
        ):
            if rng.random() < 0.3:
                params[name] = rng.choice(choices)
        queries.append(
            "&".join(f"{k}={v.replace(' ', '%20').replace('*', '%2A')}" for k, v in params.items())
        )
    return queries


async def contributions_bench(base: str, nats: Server, database_url: str) -> dict[str, Any]:
    """A 20,000-commit repository imported through ``usagehub import git``; records then appended up
    to a million (in date order, as they happen) and projected; then each stats route timed over
    many filter combinations, one request at a time."""
    import asyncpg

    from services.projector.consumer import apply_batch, lock_batches
    from services.projector.projections import PROJECTIONS
    from shared.bus import read_stream
    from shared.events.contributions import record_key

    out: dict[str, Any] = {}
    # Appends and one-off reads of the stream are ingest's rights; the import CLI talks to ingest as
    # the gateway does.
    nc = await connect(as_user(nats, "ingest"), "bench-contributions")
    conn = await asyncpg.connect(database_url)
    work = Path(tempfile.mkdtemp(prefix="usagehub-bench-git-"))
    try:
        js = nc.jetstream()
        async with Appender(nc) as appender:
            for event in _contribution_directory():
                await appender.append(event, f"bench:{event.event_id}")
        repo = work / "repo"
        started = time.perf_counter()
        await asyncio.to_thread(_fast_import_repo, repo, IMPORT_COMMITS)
        made = time.perf_counter() - started
        cli = as_user(nats, "gateway")
        env = {
            **os.environ,
            "USAGEHUB_NATS_URL": nats.url,
            "USAGEHUB_NATS_USER": cli.nats_user,
            "USAGEHUB_NATS_PASSWORD": cli.nats_password,
            "USAGEHUB_LOG_LEVEL": "warning",
        }
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "services",
                "import",
                "git",
                str(repo),
                "--module",
                "mod-000",
                "--no-progress",
            ],
            env=env,
            capture_output=True,
            check=True,
        )
        imported = time.perf_counter() - started
        projected = await _contributions_projected(conn, js, 600)
        out["git_import_20k_commits"] = {
            "commits": json.loads(done.stdout)["appended"],
            "repository_made_s": round(made, 1),
            "import_s": round(imported, 1),
            "then_projected_s": round(projected, 1),
        }

        # The rest of the million, appended as other services would, by many concurrent writers (so
        # that each atomic batch, and its fsync, is full).
        records = _contribution_records(CONTRIBUTION_RECORDS - IMPORT_COMMITS)
        started = time.perf_counter()
        async with Appender(nc) as appender:

            async def writer() -> None:
                for event in records:  # one generator shared by every writer
                    await appender.append(event, f"contributions:{record_key(event)}")

            await asyncio.gather(*(writer() for _ in range(1024)))
        appended = time.perf_counter() - started
        # Projected by the projection's own apply, as ``usagehub rebuild`` does (one transaction, the
        # live projector waiting), in batches of 20,000 rather than the projector's 500.
        projection = PROJECTIONS["contributions"]
        started = time.perf_counter()
        async with conn.transaction():
            await lock_batches(conn, projection.name)
            await conn.execute("TRUNCATE " + ", ".join(projection.tables))
            await conn.execute("DELETE FROM projection_checkpoints WHERE projection = $1", projection.name)
            async for batch in read_stream(js, projection.filters, batch=20_000):
                await apply_batch(conn, projection, batch)
        projected = time.perf_counter() - started
        count = int(await conn.fetchval("SELECT count(*) FROM contribution_records"))
        # The sums are rewritten as batches land (delete and copy): a running system's autovacuum
        # clears the dead rows as it goes, which a million records loaded in minutes outruns.
        await conn.execute("VACUUM ANALYZE")
        out["records"] = count
        out["load"] = {
            "appended_per_s": round((CONTRIBUTION_RECORDS - IMPORT_COMMITS) / appended),
            "projected_s": round(projected, 1),
            "projected_per_s": round(count / projected),
        }

        routes = ["/api/1.0/stats/engineers", "/api/1.0/stats/companies", "/api/1.0/stats/modules"]
        routes += ["/api/1.0/contribution", "/api/1.0/activity"]
        latencies: dict[str, Any] = {}
        async with aiohttp.ClientSession(base) as http:
            for r, route in enumerate(routes):
                timings: list[tuple[float, str]] = []
                for i, query in enumerate(_stats_queries(330, seed=r)):
                    started = time.perf_counter()
                    async with http.get(f"{route}?{query}") as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"{route}?{query}: {resp.status} {body[:200]!r}")
                    if i >= 30:  # the first few warm the caches
                        timings.append((time.perf_counter() - started, query))
                ms = [t * 1000 for t, _ in timings]
                slowest = max(timings)
                latencies[route] = {
                    "requests": len(ms),
                    "p50_ms": round(_percentile(ms, 0.50), 1),
                    "p99_ms": round(_percentile(ms, 0.99), 1),
                    "max_ms": round(max(ms), 1),
                    "slowest_query": slowest[1],
                }
        out["latency"] = latencies
        # The machine's load while the routes were timed (other processes share it).
        out["load_average_1m_after_queries"] = round(os.getloadavg()[0], 2)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
        await conn.close()
        await nc.close()


def closed_loop(base: str, requests: list[str], rounds: int, seconds: float) -> dict[str, Any]:
    """Requests per second over 50 keep-alive connections (as ``wrk -c 50``), ``rounds`` times: the
    median rate, and each round's rate, p99 and the generator's own CPU share."""
    runs = [drive(base, requests, connections=50, seconds=seconds) for _ in range(rounds)]
    for run in runs:
        if set(run["statuses"]) - {"200", "201", "202", "204"} or run["broken_connections"]:
            raise RuntimeError(f"{base}: requests refused or connections broken: {run}")
    return {
        "median": statistics.median(r["per_s"] for r in runs),
        "rounds": [r["per_s"] for r in runs],
        "p99_ms": [r["p99_ms"] for r in runs],
        "generator_cpu_share": [r["generator_cpu_share"] for r in runs],
    }


OPEN_LOOP_RATES = (500, 1_000, 2_000, 5_000, 10_000)


def open_loop_curve(base: str, requests: list[str], seconds: float) -> dict[str, Any]:
    """p50/p99 of durable beats sent at fixed rates whatever the answers (latency counted from when
    each request was due), and the first rate whose p99 passes 100 ms."""
    points = []
    for rate in OPEN_LOOP_RATES:
        run = drive(base, requests, connections=512, seconds=seconds, rate=rate)
        keep = ("offered_per_s", "per_s", "p50_ms", "p99_ms", "generator_cpu_share")
        points.append({k: run[k] for k in keep})
        if run["p99_ms"] > 1000:  # far past saturation: higher rates only queue longer
            break
    past = [p["offered_per_s"] for p in points if p["p99_ms"] > 100]
    return {"points": points, "p99_passes_100ms_at_per_s": past[0] if past else None}


def cpu_and_memory(base: str, requests: list[str], rate: int, seconds: float) -> dict[str, Any]:
    """CPU seconds per durable beat, by process, at a steady ``rate``; the stack's memory just after,
    and once it has been idle for a while."""
    me = os.getpid()
    before = footprint.cpu_seconds(me)
    run = drive(base, requests, connections=256, seconds=seconds, rate=rate, warmup_seconds=0)
    after = footprint.cpu_seconds(me)
    beats = run["requests"]
    per_beat = {name: round(1e6 * (after[name] - before.get(name, 0.0)) / beats, 1) for name in after}
    per_beat["all"] = round(sum(per_beat.values()), 1)
    loaded = footprint.memory_mib(me)
    time.sleep(10)
    return {
        "beats": beats,
        "offered_per_s": rate,
        "cpu_us_per_beat": per_beat,
        "memory_mib_after_load": loaded,
        "memory_mib_10s_later": footprint.memory_mib(me),
    }


READS_USAGES = 10_000
READS_DEVICES = 1_000


async def _post_usages(base: str, link_id: int, count: int) -> None:
    """``count`` usages of the link by as many users, so each is its own session (a row of the answer)."""
    await hammer(
        base, f"/api/links/{link_id}/usage", count, 32, lambda i: {"data": {"user": f"reader-{i:05d}"}}
    )


async def _wait_for_usages(base: str, path: str, count: int, within: float = 120) -> None:
    """Until the link's ``count``-th usage is projected (each POST waited for its own, up to the
    read-your-writes timeout); the first GET of each round then checks the whole list."""
    async with aiohttp.ClientSession(base) as http:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            async with http.get(path, params={"limit": "1", "offset": str(count - 1)}) as r:
                if r.status == 200 and len(await r.json()) == 1:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{path}: {count} usages were not projected within {within} s")


async def _get_rate(base: str, path: str, concurrency: int, seconds: float, expect: int) -> dict[str, Any]:
    """``GET path`` over ``concurrency`` connections for ``seconds``: requests per second and latencies.
    Every answer is checked (status, and length: an array of ``expect`` items)."""
    timings: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as http:
        # The client does not parse each answer (that would be the client's CPU, not the gateway's):
        # the first is parsed in full, the rest compared by size.
        async with http.get(path) as r:
            first = await r.read()
            if r.status != 200 or len(json.loads(first)) != expect:
                raise RuntimeError(f"GET {path}: {r.status} {first[:200]!r}")
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.get(path) as r:
                    body = await r.read()
                    if r.status != 200 or len(body) != len(first):
                        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
                timings.append(time.perf_counter() - started)

        cpu_before = await _gateway_cpu_seconds(http)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_ms = (await _gateway_cpu_seconds(http) - cpu_before) * 1000
    ms = [t * 1000 for t in timings]
    return {
        "requests_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(_percentile(ms, 0.50), 1),
        "p99_ms": round(_percentile(ms, 0.99), 1),
        "answer_bytes": len(first),
        "gateway_cpu_ms_per_request": round(cpu_ms / len(ms), 3),
    }


async def _sequential_latency(base: str, path: str, count: int) -> dict[str, Any]:
    """``GET path`` one at a time on one connection, after a few to warm up: milliseconds."""
    ms: list[float] = []
    async with aiohttp.ClientSession(base) as http:

        async def get() -> bytes:
            async with http.get(path) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
                return body

        for _ in range(20):
            await get()
        cpu_before = await _gateway_cpu_seconds(http)
        for _ in range(count):
            started = time.perf_counter()
            body = await get()
            ms.append((time.perf_counter() - started) * 1000)
        cpu_ms = (await _gateway_cpu_seconds(http) - cpu_before) * 1000
    return {
        "requests": count,
        "p50_ms": round(_percentile(ms, 0.50), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "answer_bytes": len(body),
        # What the machine's load does not change: the gateway's own CPU per answer.
        "gateway_cpu_ms_per_request": round(cpu_ms / count, 3),
    }


async def _beat_each(base: str, tokens: list[str]) -> None:
    await hammer(base, "/api/beat", len(tokens), 16, lambda i: {"headers": {"Authorization": tokens[i]}})


def reads_figures(base: str, rounds: int) -> dict[str, Any]:
    """Large reads (issue 9): a link's whole usage list (10,000 sessions) at 20 connections, and the
    heartbeat statistics with 1,000 devices one request at a time, next to their targets."""
    link_id = asyncio.run(create_link(base))
    started = time.perf_counter()
    asyncio.run(_post_usages(base, link_id, READS_USAGES))
    posted = time.perf_counter() - started
    path = f"/api/links/{link_id}/usage"
    asyncio.run(_wait_for_usages(base, path, READS_USAGES))
    link_rounds = [asyncio.run(_get_rate(base, path, 20, 10.0, READS_USAGES)) for _ in range(rounds)]
    load_after_links = round(os.getloadavg()[0], 2)

    asyncio.run(_beat_each(base, asyncio.run(register(base, READS_DEVICES))))
    stats = asyncio.run(_sequential_latency(base, "/api/stats", 500))
    return {
        "link_usage": {
            "usages": READS_USAGES,
            "posted_per_s": round(READS_USAGES / posted, 1),
            "connections": 20,
            "seconds_per_round": 10,
            "requests_per_s": statistics.median(r["requests_per_s"] for r in link_rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in link_rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in link_rounds),
            "gateway_cpu_ms_per_request": statistics.median(
                r["gateway_cpu_ms_per_request"] for r in link_rounds
            ),
            "rounds": link_rounds,
            "target_requests_per_s": 150,
            "load_average_1m": load_after_links,
        },
        "stats": {
            "devices": READS_DEVICES,
            **stats,
            "target_p99_ms": 5,
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }


def median_of(rounds: int, measure: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    values = [asyncio.run(measure()) for _ in range(rounds)]
    return {"median": round(statistics.median(values), 1), "rounds": [round(v, 1) for v in values]}


# What `--only` can pick; in this order they run.
SECTIONS = (
    "beats",
    "open_loop",
    "intake",
    "appends",
    "links",
    "reads",
    "media",
    "catch_up",
    "metering",
    "contributions",
    "cluster",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed HTTP round")
    parser.add_argument("--metering-events", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}",
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    n, c, rounds = args.requests, args.concurrency, args.rounds
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {"requests_per_round": n, "concurrency": c, "rounds": rounds, "sections": only},
    }
    # The baseline always runs: every rate below is read next to it, measured in the same run.
    with baseline() as base:
        results["baseline_aiohttp_posts_per_s"] = closed_loop(
            base, [http_request("POST", "/api/beat")], rounds, args.seconds
        )
    data = Path(tempfile.mkdtemp(prefix="usagehub-bench-"))
    try:
        with usagehub(data) as (base, nats, database_url):
            time.sleep(5)  # started and settled, before any load
            results["memory_mib_idle"] = footprint.memory_mib(os.getpid())
            tokens = asyncio.run(register(base, 8))
            beats = [http_request("POST", "/api/beat", {"Authorization": t}) for t in tokens]
            if "beats" in only:
                results["beats_per_s_http"] = closed_loop(base, beats, rounds, args.seconds)
                results["cpu_and_memory_at_2000_beats_per_s"] = cpu_and_memory(base, beats, 2_000, 10)
            if "open_loop" in only:
                results["open_loop_beats"] = open_loop_curve(base, beats, args.seconds)
            if "intake" in only:
                runs = [asyncio.run(intake_beats(nats, database_url, tokens, 20_000)) for _ in range(rounds)]
                results["intake_beats"] = {
                    "median_ratio_projected_to_stored": statistics.median(
                        r["ratio_projected_to_stored"] for r in runs
                    ),
                    "rounds": runs,
                }
            if "appends" in only:
                results["appends_per_s_single_writer"] = median_of(rounds, lambda: append_rate(nats, 1, 1000))
                results["appends_per_s_64_writers_shared"] = median_of(
                    rounds, lambda: append_rate(nats, 64, 20_000)
                )
            if "links" in only:
                link_id = asyncio.run(create_link(base))
                posts = [
                    http_request(
                        "POST",
                        f"/api/links/{link_id}/usage",
                        {"Content-Type": "application/x-www-form-urlencoded"},
                        f"user=u{i}",
                    )
                    for i in range(50)
                ]
                results["link_usage_posts_per_s_http"] = closed_loop(base, posts, rounds, args.seconds)
            if "reads" in only:
                results["reads"] = reads_figures(base, rounds)
            if "media" in only:
                results["media_usage"] = media_usage(base, nats, database_url, rounds, n, c)
            if "catch_up" in only:
                results["projection_catch_up_events_per_s"] = asyncio.run(catch_up_rates(nats, database_url))
                results["projection_lag_at_5000_events_per_s"] = asyncio.run(projection_lag(nats))
            # After the catch-up rates: its rebuild of every projection should not replay these.
            if "metering" in only:
                results["metering"] = asyncio.run(
                    metering_figures(base, nats, database_url, args.metering_events)
                )
            if "contributions" in only:
                results["contributions"] = asyncio.run(contributions_bench(base, nats, database_url))
            if "cluster" in only:
                cluster_pg = start_postgres(data / "cluster-postgres")
                try:
                    results["beats_per_s_http_3_node_cluster_and_single_node"] = asyncio.run(
                        cluster_and_single_beat_rates(
                            base, tokens, data / "cluster", cluster_pg.url, rounds, n, c
                        )
                    )
                finally:
                    cluster_pg.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    base_rate = results["baseline_aiohttp_posts_per_s"]["median"]
    if "beats" in only:
        results["ratio_beats_to_baseline"] = round(results["beats_per_s_http"]["median"] / base_rate, 3)
    if "appends" in only:
        results["ratio_shared_appends_to_single_writer"] = round(
            results["appends_per_s_64_writers_shared"]["median"]
            / results["appends_per_s_single_writer"]["median"],
            2,
        )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
