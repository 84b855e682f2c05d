"""A steady load for the fault tests: durable beats and usage posts, each retried with its own
Idempotency-Key until acknowledged (on the other gateway after a failure), and reads; every answer
is kept, with its time, for the figures and the audit."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Answers a client may retry (with the same key); anything else 4xx is a test failure.
RETRYABLE = {0, 408, 429, 500, 502, 503, 504}
NO_ANSWER = 0  # the connection failed or the client's own timeout expired


@dataclass
class Answer:
    at: float
    kind: str  # "beat", "usage" or "read"
    status: int
    retry_after: str | None
    gateway: str
    key: str = ""  # the write's Idempotency-Key
    error: str = ""  # the body of an answer that is not 2xx


@dataclass
class Write:
    kind: str
    key: str
    who: int  # the device (beats) or the user (usage posts)
    started: float
    acked_at: float | None = None
    attempts: int = 0


@dataclass
class Load:
    """``beat_writers`` + ``usage_writers`` clients writing one write at a time, ``readers`` reading."""

    gateways: list[str]
    tokens: list[str]
    link_id: int
    beat_writers: int = 4
    usage_writers: int = 2
    readers: int = 1
    pace: float = 0.02  # seconds between one client's acknowledged write and its next
    give_up_after: float = 90.0  # a write not acknowledged by then is abandoned (and counted)
    # Keys of different loads on one installation must differ, or one load's write replays another's.
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    writes: list[Write] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        # Per attempt: the gateway answers within its command timeout plus read-your-writes.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=20), connector=aiohttp.TCPConnector(limit=64)
        )
        self.started = self.now()
        workers = [self._writer("beat", i) for i in range(self.beat_writers)]
        workers += [self._writer("usage", i) for i in range(self.usage_writers)]
        workers += [self._reader(i) for i in range(self.readers)]
        self._tasks = [asyncio.create_task(w) for w in workers]

    async def stop(self) -> None:
        """No new writes; the ones under way are retried until acknowledged or abandoned."""
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), self.give_up_after + 30)
        finally:
            self.stopped = self.now()
            if self._http is not None:
                await self._http.close()

    async def run_for(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _post(self, gateway: str, write: Write) -> tuple[int, str | None, str]:
        assert self._http is not None
        headers = {"Idempotency-Key": write.key}
        if write.kind == "beat":
            url = f"{gateway}/api/beat"
            headers["Authorization"] = self.tokens[write.who % len(self.tokens)]
            data: dict[str, str] | None = None
        else:
            url = f"{gateway}/api/links/{self.link_id}/usage"
            data = {"user": f"user-{write.who}"}
        try:
            async with self._http.post(url, headers=headers, data=data) as r:
                body = await r.text()
                return r.status, r.headers.get("Retry-After"), "" if r.status < 300 else body[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return NO_ANSWER, None, repr(exc)[:200]

    async def _writer(self, kind: str, worker: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            write = Write(kind, f"{self.prefix}-{kind}-{worker}-{n}", worker, self.now())
            self.writes.append(write)
            await self._until_acknowledged(write, worker)
            await asyncio.sleep(self.pace)

    async def _until_acknowledged(self, write: Write, worker: int) -> None:
        while self.now() - write.started < self.give_up_after:
            gateway = self.gateways[(worker + write.attempts) % len(self.gateways)]
            write.attempts += 1
            status, retry_after, error = await self._post(gateway, write)
            self.answers.append(
                Answer(self.now(), write.kind, status, retry_after, gateway, write.key, error)
            )
            if 200 <= status < 300:
                write.acked_at = self.now()
                return
            if status not in RETRYABLE:
                self.refused.append(f"{write.kind} {write.key}: {status}")
                return
            wait = float(retry_after) if retry_after and retry_after.isdigit() else 0.2
            await asyncio.sleep(min(wait, 1.0))

    async def _reader(self, worker: int) -> None:
        assert self._http is not None
        paths = ["/api/stats", f"/api/links/{self.link_id}/usage"]
        for n in itertools.count():
            if self._stop.is_set():
                return
            gateway = self.gateways[(worker + n) % len(self.gateways)]
            try:
                async with self._http.get(gateway + paths[n % 2]) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = NO_ANSWER
            self.answers.append(Answer(self.now(), "read", status, None, gateway))
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------------------------ figures

    @property
    def acked(self) -> list[Write]:
        return [w for w in self.writes if w.acked_at is not None]

    @property
    def abandoned(self) -> list[Write]:
        return [w for w in self.writes if w.acked_at is None]

    def longest_pause(self, start: float | None = None, end: float | None = None) -> float:
        """The longest time without any acknowledged write between ``start`` and ``end``."""
        start = self.started if start is None else start
        end = self.stopped if end is None else end
        times = sorted(t for w in self.writes if (t := w.acked_at) is not None and start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))

    def first_ack_after(self, moment: float) -> float | None:
        times = [t for w in self.writes if (t := w.acked_at) is not None and t >= moment]
        return min(times) - moment if times else None

    def writes_answered(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end and a.kind != "read"]

    def reads_answered(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end and a.kind == "read"]

    def statuses(self, answers: list[Answer] | None = None) -> dict[str, int]:
        counted = Counter(str(a.status) for a in (self.answers if answers is None else answers))
        return dict(sorted(counted.items()))

    def errors(self) -> dict[str, int]:
        """How often each error answer (status and body) came."""
        counted = Counter(
            f"{a.status} {a.error[:70]}" for a in self.answers if a.status >= 300 or a.status == 0
        )
        return dict(counted.most_common())

    def figures(self) -> dict[str, Any]:
        writes = [a for a in self.answers if a.kind != "read"]
        return {
            "writes_acked": len(self.acked),
            "writes_abandoned": len(self.abandoned),
            "write_attempts": len(writes),
            "write_answers": self.statuses(writes),
            "read_answers": self.statuses([a for a in self.answers if a.kind == "read"]),
            "acked_per_s": round(len(self.acked) / max(self.stopped - self.started, 1e-9), 1),
            "longest_pause_s": round(self.longest_pause(), 2),
            "commonest_errors": dict(list(self.errors().items())[:4]),
        }


async def set_up(gateway: str, secret: str, devices: int = 4) -> tuple[list[str], int]:
    """Devices (their tokens) and one link for the load, created before any fault."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        tokens = []
        for i in range(devices):
            async with http.post(
                f"{gateway}/api/devices", json={"name": f"device-{i}"}, headers={"Authorization": secret}
            ) as r:
                assert r.status == 200, await r.text()
                tokens.append((await r.json())["token"])
        body = {"name": "wiki", "url": "https://wiki.example"}
        async with http.post(f"{gateway}/api/links", json=body, headers={"Authorization": secret}) as r:
            assert r.status == 201, await r.text()
            link_id = int((await r.json())["id"])
    return tokens, link_id
