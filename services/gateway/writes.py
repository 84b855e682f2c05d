"""Writes: send a command to ingest, then wait (bounded) until the read models show it.

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
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.gateway.errors import http_error
from shared.bus import COMMANDS_PREFIX, PROJECTED_PREFIX
from shared.commands import Command, Reply, encoder, reply_decoder
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


# Every answer that asks the client to try again says when (RFC 9110 Retry-After, in seconds).
RETRY_AFTER = {"Retry-After": "1"}


async def _request(nc: NATS, subject: str, payload: bytes, within: float) -> Msg:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await nc.request(subject, payload, timeout=max(0.1, deadline - loop.time()))
        except NoRespondersError:
            # Nobody received it, so nothing was done: safe to wait for an ingest (re)start.
            if loop.time() + 0.1 >= deadline:
                raise http_error(503, "the ingest service is not running", RETRY_AFTER) from None
            await asyncio.sleep(0.1)
        except NatsTimeout:
            # Ingest answers within a shorter bound (503 when the event log cannot store), so this is
            # an ingest or a connection that went silent: the only answer where the gateway cannot
            # know whether the write was stored, which is what 504 (the upstream's answer never came) says.
            raise http_error(
                504,
                "no answer from ingest in time: the write may have been stored;"
                " retry with the same Idempotency-Key",
                RETRY_AFTER,
            ) from None
        except NatsError:
            # The connection to NATS is closed or still reconnecting (its buffer full): not sent.
            raise http_error(503, "the event log is unreachable, try again", RETRY_AFTER) from None


async def send_command(
    nc: NATS,
    watch: ProjectionWatch,
    cmd: Command,
    *,
    read_by: tuple[str, ...],
    command_timeout: float,
    read_timeout: float,
) -> Reply:
    """Send ``cmd`` to ingest; on success, wait until the projections in ``read_by`` show it."""
    cmd = msgspec.structs.replace(cmd, request_id=request_id_var.get())
    msg = await _request(nc, COMMANDS_PREFIX + type(cmd).__name__, encoder.encode(cmd), command_timeout)
    reply = reply_decoder.decode(msg.data)
    shown = reply.status >= 400 or not reply.seq or await watch.wait(read_by, reply.seq, read_timeout)
    if not shown:
        log.warning("read model behind after write", seq=reply.seq, projections=read_by)
    return reply


def raise_for_reply(reply: Reply) -> None:
    if reply.status >= 400:
        headers = RETRY_AFTER if reply.status == 503 else None
        raise http_error(reply.status, reply.error or "refused", headers)
