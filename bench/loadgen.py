"""The bench's HTTP load generator: keep-alive connections sending prepared requests, closed loop
(each connection sends its next request when the last is answered) or open loop (requests due at a
fixed rate whatever the answers, latency counted from when each was due, so a slow answer cannot hide
the requests queued behind it). It reports its own CPU time, so a reader can see when the generator,
not the server, was the limit.

Run as its own process: ``python -m bench.loadgen < spec.json`` prints one JSON summary. The spec:
``{"host", "port", "requests": [raw HTTP/1.1 request text, ...], "connections", "seconds",
"rate" (absent: closed loop), "warmup_seconds"}``; connection i sends requests i, i + n, ... in turn.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import msgspec


class Spec(msgspec.Struct, frozen=True):
    host: str
    port: int
    requests: list[str]
    connections: int
    seconds: float
    rate: float | None = None
    warmup_seconds: float = 1.0


class _Answer(Exception):
    """The server answered something this generator cannot read (a closed connection, say)."""


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """One response, whole; its status. Content-Length or chunked bodies (what aiohttp sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        await reader.readexactly(int(lower[at + 17 : end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run(spec: Spec) -> dict[str, Any]:
    # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
    clock = time.perf_counter
    payloads = [r.encode() for r in spec.requests]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0
    start = clock()
    measure_from = start + spec.warmup_seconds
    stop_at = measure_from + spec.seconds
    taken = 0  # open loop: requests due so far (the next free connection sends the oldest)

    async def connection(i: int) -> None:
        nonlocal failures, taken
        reader, writer = await asyncio.open_connection(spec.host, spec.port)
        k = i
        try:
            while True:
                if spec.rate is None:
                    sent = clock()
                    if sent >= stop_at:
                        return
                else:
                    index = taken
                    taken += 1
                    sent = start + index / spec.rate
                    if sent >= stop_at:
                        return
                    if sent > clock():
                        await asyncio.sleep(sent - clock())
                writer.write(payloads[k % len(payloads)])
                k += spec.connections
                try:
                    status = await _read_answer(reader)
                except (asyncio.IncompleteReadError, ValueError, ConnectionError) as exc:
                    raise _Answer(str(exc)) from exc
                done = clock()
                if sent >= measure_from:
                    latencies.append(done - sent)
                    statuses[status] = statuses.get(status, 0) + 1
        except _Answer:
            failures += 1
        finally:
            writer.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(spec.connections)))
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / spec.seconds, 1),
        "offered_per_s": spec.rate,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "broken_connections": failures,
        "p50_ms": round(_percentile(ms, 0.50), 2),
        "p90_ms": round(_percentile(ms, 0.90), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(ms[-1], 2) if ms else 0.0,
        # The generator's own CPU: near 1.0 means it, not the server, set the pace.
        "generator_cpu_share": round(cpu / wall, 2),
    }


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=Spec)
    try:
        import uvloop

        result = uvloop.run(run(spec))
    except ImportError:
        result = asyncio.run(run(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()


# --- driving it from the bench ----------------------------------------------------------------------


def http_request(method: str, path: str, headers: dict[str, str] | None = None, body: str = "") -> str:
    """One raw HTTP/1.1 keep-alive request (ASCII)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body.encode())}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return "\r\n".join(lines) + "\r\n\r\n" + body


def drive(
    base: str,
    requests: list[str],
    *,
    connections: int = 50,
    seconds: float = 10.0,
    rate: float | None = None,
    warmup_seconds: float = 1.0,
) -> dict[str, Any]:
    """The generator in a process of its own against ``base`` (http://host:port); its summary."""
    import subprocess
    from urllib.parse import urlsplit

    where = urlsplit(base)
    spec = Spec(
        host=where.hostname or "127.0.0.1",
        port=where.port or 80,
        requests=requests,
        connections=connections,
        seconds=seconds,
        rate=rate,
        warmup_seconds=warmup_seconds,
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=msgspec.json.encode(spec),
        capture_output=True,
        check=True,
        timeout=seconds + warmup_seconds + 120,
    )
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary
