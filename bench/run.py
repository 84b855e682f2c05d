"""``make bench``: throughput of usagehub on this machine, next to a minimal aiohttp handler measured
in the same run, written as a JSON summary (medians of several rounds, and their ratios)."""

from __future__ import annotations

import argparse
import asyncio
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

from services.local.servers import Server, free_port, start_nats, start_postgres
from shared.bus import Appender, connect, ensure_streams
from shared.events import PageVisited, new_event_id, now
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
        for p in procs:
            p.terminate()
        for p in procs:
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


def median_of(rounds: int, measure: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    values = [asyncio.run(measure()) for _ in range(rounds)]
    return {"median": round(statistics.median(values), 1), "rounds": [round(v, 1) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {"requests_per_round": n, "concurrency": c, "rounds": args.rounds},
    }
    with baseline() as base:
        results["baseline_aiohttp_posts_per_s"] = median_of(
            args.rounds, lambda: hammer(base, "/api/beat", n, c, lambda i: {})
        )
    data = Path(tempfile.mkdtemp(prefix="usagehub-bench-"))
    try:
        with usagehub(data) as (base, nats, database_url):
            tokens = asyncio.run(register(base, 8))
            results["beats_per_s_http"] = median_of(
                args.rounds,
                lambda: hammer(
                    base, "/api/beat", n, c, lambda i: {"headers": {"Authorization": tokens[i % 8]}}
                ),
            )
            results["appends_per_s_single_writer"] = median_of(
                args.rounds, lambda: append_rate(nats, 1, 1000)
            )
            results["appends_per_s_64_writers_shared"] = median_of(
                args.rounds, lambda: append_rate(nats, 64, 20_000)
            )
            link_id = asyncio.run(create_link(base))
            results["link_usage_posts_per_s_http"] = median_of(
                args.rounds,
                lambda: hammer(
                    base, f"/api/links/{link_id}/usage", n, c, lambda i: {"data": {"user": f"u{i % 50}"}}
                ),
            )
            results["projection_catch_up_events_per_s"] = asyncio.run(catch_up_rates(nats, database_url))
            cluster_pg = start_postgres(data / "cluster-postgres")
            try:
                results["beats_per_s_http_3_node_cluster_and_single_node"] = asyncio.run(
                    cluster_and_single_beat_rates(
                        base, tokens, data / "cluster", cluster_pg.url, args.rounds, n, c
                    )
                )
            finally:
                cluster_pg.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    base_rate = results["baseline_aiohttp_posts_per_s"]["median"]
    results["ratio_beats_to_baseline"] = round(results["beats_per_s_http"]["median"] / base_rate, 3)
    results["ratio_shared_appends_to_single_writer"] = round(
        results["appends_per_s_64_writers_shared"]["median"]
        / results["appends_per_s_single_writer"]["median"],
        2,
    )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
