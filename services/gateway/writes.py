"""Writes: send a command to ingest (command_batches.py), then wait (bounded) until the read models show it.

Projectors announce each committed checkpoint on ``usagehub.projected.<name>``; the gateway keeps
the latest position per projection and wakes the waiting requests. Postgres is re-read when a notice
may have been missed, so a lost notice only costs a little latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import re
from collections.abc import Iterable

import asyncpg
import msgspec
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gateway.command_batches import RETRY_AFTER, CommandBatches
from services.gateway.errors import http_error
from shared.bus import PROJECTED_PREFIX
from shared.commands import Command, Reply
from shared.db import checkpoints
from shared.logging import get_logger, request_id_var

log = get_logger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class ProjectionWatch:
    """The latest checkpoint of every projection, and waiting for them to reach a stream position.

    Each waiting request parks one future per projection in a heap ordered by the position it
    needs, so a notice wakes only the requests it satisfies.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.positions: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._tickets = itertools.count()

    def advance(self, name: str, position: int) -> None:
        if position <= self.positions.get(name, 0):
            return
        self.positions[name] = position
        heap = self._waiters.get(name, [])
        while heap and heap[0][0] <= position:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)

    async def on_notice(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            self.advance(msg.subject.removeprefix(PROJECTED_PREFIX), int(msg.data))

    async def refresh(self) -> None:
        for name, position in (await checkpoints(self._pool)).items():
            self.advance(name, position)

    def reached(self, projections: Iterable[str], seq: int) -> bool:
        return all(self.positions.get(p, 0) >= seq for p in projections)

    def _park(self, name: str, seq: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters.setdefault(name, []), (seq, next(self._tickets), future))
        return future

    async def wait(self, projections: tuple[str, ...], seq: int, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.reached(projections, seq):
            left = deadline - loop.time()
            if left <= 0:
                return False
            parked = [self._park(p, seq) for p in projections if self.positions.get(p, 0) < seq]
            _, late = await asyncio.wait(parked, timeout=min(left, 0.25))
            if late:
                for future in late:
                    future.cancel()  # popped (and skipped) once the projection passes ``seq``
                # No notice for a while: one may have been lost (they are fire-and-forget).
                try:
                    await self.refresh()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # The write itself is durable: a read model we cannot see must not fail it.
                    log.warning("cannot read projection checkpoints", error=repr(exc))
        return True


async def subscribe_notices(nc: NATS, watch: ProjectionWatch) -> None:
    await nc.subscribe(PROJECTED_PREFIX + "*", cb=watch.on_notice)
    await watch.refresh()


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise http_error(400, "Idempotency-Key must be 1 to 200 printable ASCII characters")
    return key


async def send_command(
    commands: CommandBatches,
    watch: ProjectionWatch,
    cmd: Command,
    *,
    read_by: tuple[str, ...],
    read_timeout: float,
) -> Reply:
    """Send ``cmd`` to ingest; on success, wait until the projections in ``read_by`` show it."""
    reply = await commands.ask(msgspec.structs.replace(cmd, request_id=request_id_var.get()))
    shown = reply.status >= 400 or not reply.seq or await watch.wait(read_by, reply.seq, read_timeout)
    if not shown:
        log.warning("read model behind after write", seq=reply.seq, projections=read_by)
    return reply


def raise_for_reply(reply: Reply) -> None:
    if reply.status >= 400:
        headers = RETRY_AFTER if reply.status == 503 else None
        raise http_error(reply.status, reply.error or "refused", headers)
