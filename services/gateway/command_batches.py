"""Commands on their way to ingest: those that arrive while others are in flight travel together.

Every write is a command, and one NATS request per command cost the gateway, NATS and ingest a
message, a reply and their syscalls each. Here a command waits only while ``MAX_IN_FLIGHT`` requests
are already out; whatever queued meanwhile goes as one ``usagehub.commands.Batch`` request, and
ingest answers with one reply per command, in order. A command that finds a free slot goes at once and
alone (on its own subject, as before), so a quiet gateway adds no latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

import msgspec
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.gateway.errors import http_error
from shared.bus import BATCH, COMMANDS_PREFIX, MAX_BATCH_BYTES, MAX_COMMANDS_PER_BATCH
from shared.commands import Command, Reply, encoder

# Requests to ingest out at once. One: what arrives while it is out waits and goes with the next,
# which is what fills batches (at 50 connections: four in flight gave 1,123 beats/s, two 1,311, one
# 1,326-1,363, with the least CPU). A batch is answered as its slowest command; commands take a
# round trip or two to the event log, and when it cannot store, all of them fail alike.
MAX_IN_FLIGHT = 1

# A command with less time than this left is not sent: its answer could not come back in time.
_LEAST_TIME = 0.1

# Every answer that asks the client to try again says when (RFC 9110 Retry-After, in seconds).
RETRY_AFTER = {"Retry-After": "1"}

_replies_decoder = msgspec.json.Decoder(list[Reply] | Reply)


@dataclass(slots=True)
class _Waiting:
    name: str
    payload: bytes
    # When the client's answer is due (event loop time): the time a command queues counts too.
    due: float
    answer: asyncio.Future[Reply] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class CommandBatches:
    """Sends commands to ingest, coalescing those that arrive together; ``await ask(cmd)`` is its reply.

    Refusals and failures stay each command's own: a reply per command, and when the request itself
    fails (no ingest, no answer in time) every command in it hears the same HTTP error.
    """

    def __init__(self, nc: NATS, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="command-batches")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        while self._waiting:  # never sent: nothing was done, so the client may retry
            waiting = self._waiting.popleft()
            if not waiting.answer.done():
                waiting.answer.set_exception(_unsent("the gateway is stopping, try again"))

    async def ask(self, cmd: Command) -> Reply:
        due = asyncio.get_running_loop().time() + self._timeout
        waiting = _Waiting(type(cmd).__name__, encoder.encode(cmd), due)
        # A client that goes away leaves its command to be sent and answered all the same (as an
        # unbatched one would be): its answer is then read here, never left unretrieved.
        waiting.answer.add_done_callback(_retrieve)
        self._waiting.append(waiting)
        self._arrived.set()
        return await asyncio.shield(waiting.answer)

    async def _run(self) -> None:
        waiting = self._waiting
        while True:
            while not waiting:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            now = asyncio.get_running_loop().time()
            while waiting and waiting[0].due - now < _LEAST_TIME:
                # Queued for its whole time, never sent: nothing was done, so it is safe to retry.
                late = waiting.popleft()
                if not late.answer.done():
                    late.answer.set_exception(_unsent("ingest is busy, try again"))
            if not waiting:
                self._slots.release()
                continue
            first = waiting.popleft()
            batch, size = [first], len(first.payload)
            while (
                waiting
                and len(batch) < MAX_COMMANDS_PER_BATCH
                and size + len(waiting[0].payload) + 1 <= MAX_BATCH_BYTES
            ):
                batch.append(waiting.popleft())
                size += len(batch[-1].payload) + 1
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            within = min(w.due for w in batch) - asyncio.get_running_loop().time()
            if len(batch) == 1:
                msg = await _request(self._nc, COMMANDS_PREFIX + batch[0].name, batch[0].payload, within)
            else:
                payload = b"[" + b",".join(w.payload for w in batch) + b"]"
                msg = await _request(self._nc, COMMANDS_PREFIX + BATCH, payload, within)
            replies = _replies_decoder.decode(msg.data)
            if isinstance(replies, Reply):  # the batch as a whole was refused
                replies = [replies] * len(batch)
            if len(replies) != len(batch):
                raise _Unsent(503, "ingest answered a command batch with the wrong number of replies")
            for waiting, reply in zip(batch, replies, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(reply)
        except _Unsent as exc:
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc.as_http())
        except Exception as exc:  # an answer that cannot be read, or a bug: no request is left hanging
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
        finally:
            self._slots.release()


class _Unsent(Exception):
    """The request failed as a whole: each command in it gets this HTTP error of its own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def as_http(self) -> web.HTTPException:
        return http_error(self.status, self.message, RETRY_AFTER)


def _unsent(message: str) -> web.HTTPException:
    return _Unsent(503, message).as_http()


async def _request(nc: NATS, subject: str, payload: bytes, within: float) -> Msg:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await nc.request(subject, payload, timeout=max(0.1, deadline - loop.time()))
        except NoRespondersError:
            # Nobody received it, so nothing was done: safe to wait for an ingest (re)start.
            if loop.time() + 0.1 >= deadline:
                raise _Unsent(503, "the ingest service is not running") from None
            await asyncio.sleep(0.1)
        except NatsTimeout:
            # Ingest answers within a shorter bound (503 when the event log cannot store), so this is
            # an ingest or a connection that went silent: the only answer where the gateway cannot
            # know whether the write was stored, which is what 504 (the upstream's answer never came) says.
            raise _Unsent(
                504,
                "no answer from ingest in time: the write may have been stored;"
                " retry with the same Idempotency-Key",
            ) from None
        except NatsError:
            # The connection to NATS is closed or still reconnecting (its buffer full): not sent.
            raise _Unsent(503, "the event log is unreachable, try again") from None


def _retrieve(answer: asyncio.Future[Reply]) -> None:
    if not answer.cancelled():
        answer.exception()
