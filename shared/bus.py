"""The bus: NATS connection, the streams, the one append path to JetStream, and pull consumers.

Appends from concurrent writers are grouped into JetStream atomic batches, so one fsync on the
server covers many writers; a batch the server refuses (a duplicate id, a failed expectation) is
retried message by message, so each writer gets its own exact answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from shared.events import Event, encode_event, subject_of
from shared.logging import get_logger

EVENTS_STREAM = "USAGEHUB_EVENTS"
EVENTS_SUBJECTS = "usagehub.events.>"
# Events other services publish straight onto the bus, before validation.
INTAKE_STREAM = "USAGEHUB_INTAKE"
INTAKE_SUBJECTS = "usagehub.ingest.>"
# Intake messages that failed validation, kept with the reason: never lost silently.
REJECTED_STREAM = "USAGEHUB_REJECTED"
REJECTED_SUBJECTS = "usagehub.rejected.>"
COMMANDS_PREFIX = "usagehub.commands."
INGEST_QUEUE = "ingest"
# usagehub.commands.Ping: any ingest answers 200 at once (readiness: is an ingest there?).
PING = "Ping"
# Core-NATS notices a projector sends after each commit: the gateway's read-your-writes waits on them.
PROJECTED_PREFIX = "usagehub.projected."

# Byte limits: the intake is a queue (a backlog this large means ingest is down), the rejected
# stream a record for operators; a message in either is at most what it can usefully be.
INTAKE_MAX_BYTES = 1024**3
INTAKE_MAX_MESSAGE = 1024 * 1024
REJECTED_MAX_BYTES = 256 * 1024**2
REJECTED_MAX_MESSAGE = 128 * 1024

# JetStream's own limits on an atomic batch are 1000 messages and 50 open batches per stream.
MAX_BATCH = 256
MAX_BATCHES_IN_FLIGHT = 4

log = get_logger(__name__)


async def _on_error(exc: Exception) -> None:
    log.warning("nats connection problem", error=repr(exc))


async def connect(url: str, name: str) -> NATS:
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=_on_error,
        drain_timeout=5,
    )


async def close(nc: NATS) -> None:
    """Drain (finish in-flight work) when the server is there; never hang shutdown when it is not."""
    try:
        if nc.is_connected:
            await asyncio.wait_for(nc.drain(), 6)
    except Exception as exc:
        log.warning("nats drain failed", client=nc.options.get("name"), error=repr(exc))
    finally:
        await nc.close()


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams if missing; safe when several processes start at once."""
    configs = [
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[EVENTS_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=120.0,
            allow_atomic=True,
            allow_direct=True,
            deny_delete=True,
            deny_purge=True,
        ),
        StreamConfig(
            name=INTAKE_STREAM,
            subjects=[INTAKE_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
            # Full: publishers are refused (they retry), never is an unprocessed message dropped.
            max_bytes=INTAKE_MAX_BYTES,
            max_msg_size=INTAKE_MAX_MESSAGE,
            discard=DiscardPolicy.NEW,
        ),
        StreamConfig(
            name=REJECTED_STREAM,
            subjects=[REJECTED_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=30 * 24 * 3600.0,
            # Full: the oldest rejection records go first.
            max_bytes=REJECTED_MAX_BYTES,
            max_msg_size=REJECTED_MAX_MESSAGE,
            discard=DiscardPolicy.OLD,
        ),
    ]
    for config in configs:
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            with contextlib.suppress(APIError):  # another process created it first
                await js.add_stream(config)
            continue
        if (info.config.max_bytes, info.config.max_msg_size) != (config.max_bytes, config.max_msg_size):
            # Streams created before these limits existed get them (the limits are all that changes).
            limited = replace(info.config, max_bytes=config.max_bytes, max_msg_size=config.max_msg_size)
            if config.discard is not None:
                limited = replace(limited, discard=config.discard)
            with contextlib.suppress(APIError):
                await js.update_stream(limited)


class AppendError(Exception):
    """JetStream refused an append."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{description} ({code})")
        self.code = code
        self.description = description


class ExpectationFailed(AppendError):
    """The stream moved on since the writer decided: reload state and decide again."""


WRONG_LAST_SEQUENCE = 10071


@dataclass(frozen=True, slots=True)
class Expectation:
    """Append only if the last message on ``subject`` (wildcards allowed) has this sequence."""

    subject: str
    last_sequence: int


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    duplicate: bool


def subject_matches(subject: str, pattern: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, w in enumerate(wanted):
        if w == ">":
            return len(tokens) > i
        if i >= len(tokens) or (w != "*" and w != tokens[i]):
            return False
    return len(tokens) == len(wanted)


@dataclass(slots=True)
class _Pending:
    subject: str
    data: bytes
    headers: dict[str, str]
    # Changes what its own expectation checks. JetStream checks every expectation in an atomic batch
    # against the stream as it was before the batch, so such a write must travel alone.
    alone: bool = False
    done: asyncio.Future[Appended] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _headers(msg_id: str, expect: Expectation | None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": msg_id}
    if expect is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expect.last_sequence)
        headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expect.subject
    return headers


def _error_of(reply: dict[str, Any]) -> AppendError:
    err = reply["error"]
    code = int(err.get("err_code", 0))
    cls = ExpectationFailed if code == WRONG_LAST_SEQUENCE else AppendError
    return cls(code, str(err.get("description", "append refused")))


class Appender:
    """The one way events reach the event stream: ``await append(...)`` returns once stored durably."""

    def __init__(self, nc: NATS, timeout: float = 10.0) -> None:
        self._nc = nc
        self._timeout = timeout
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Appender:
        self._task = asyncio.create_task(self._run(), name="appender")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        # Whatever never left the queue was never appended: say so rather than leave writers waiting.
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(ConnectionError("the appender stopped before this append"))

    async def append(self, event: Event, msg_id: str, expect: Expectation | None = None) -> Appended:
        subject = subject_of(event)
        alone = expect is not None and subject_matches(subject, expect.subject)
        pending = _Pending(subject, encode_event(event), _headers(msg_id, expect), alone)
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._slots.acquire()
            # Everything that queued up while we waited for a slot shares this batch (and its fsync).
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) > 1 and not any(p.alone for p in batch):
                try:
                    first_seq = await self._send_atomic(batch)
                except AppendError:
                    pass  # resolved one by one below, each with its own answer
                else:
                    for i, p in enumerate(batch):
                        if not p.done.done():
                            p.done.set_result(Appended(first_seq + i, False))
                    return
            await asyncio.gather(*(self._send_one(p) for p in batch))
        except Exception as exc:  # a lost connection or timeout: every writer hears about it
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
        finally:
            self._slots.release()

    async def _send_atomic(self, batch: list[_Pending]) -> int:
        batch_id = uuid.uuid4().hex
        last = len(batch)
        for i, p in enumerate(batch[:-1], start=1):
            headers = {**p.headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            await self._nc.publish(p.subject, p.data, headers=headers)
        tail = batch[-1]
        headers = {
            **tail.headers,
            "Nats-Batch-Id": batch_id,
            "Nats-Batch-Sequence": str(last),
            "Nats-Batch-Commit": "1",
        }
        msg = await self._nc.request(tail.subject, tail.data, headers=headers, timeout=self._timeout)
        reply = json.loads(msg.data)
        if "error" in reply:
            raise _error_of(reply)
        return int(reply["seq"]) - int(reply.get("count", last)) + 1

    async def _send_one(self, p: _Pending) -> None:
        try:
            msg = await self._nc.request(p.subject, p.data, headers=p.headers, timeout=self._timeout)
            reply = json.loads(msg.data)
            if "error" in reply:
                raise _error_of(reply)
            p.done.set_result(Appended(int(reply["seq"]), bool(reply.get("duplicate", False))))
        except Exception as exc:
            if not p.done.done():
                p.done.set_exception(exc)


async def get_event_data(js: JetStreamContext, seq: int) -> bytes:
    msg = await js.get_msg(EVENTS_STREAM, seq, direct=True)
    return bytes(msg.data or b"")


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    data: bytes
    subject: str
    num_delivered: int
    msg: Msg


async def pull_consumer(
    js: JetStreamContext, durable: str, filters: list[str], start_after: int, *, fresh: bool = False
) -> JetStreamContext.PullSubscription:
    """Bind the durable pull consumer ``durable``, (re)created to start right after ``start_after``.

    ``fresh`` recreates it unconditionally: messages a crashed process had fetched but not acked
    would otherwise be redelivered after newer ones. It is also recreated when it disagrees with
    the checkpoint the caller holds in Postgres, which is the truth about what has been applied.
    """
    try:
        info = await js.consumer_info(EVENTS_STREAM, durable)
        floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        if fresh or floor > start_after or sorted(info.config.filter_subjects or []) != sorted(filters):
            await js.delete_consumer(EVENTS_STREAM, durable)
            raise NotFoundError
    except NotFoundError:
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=30.0,
            max_ack_pending=20_000,
            filter_subjects=filters,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_after else DeliverPolicy.ALL,
            opt_start_seq=start_after + 1 if start_after else None,
        )
        with contextlib.suppress(APIError):
            await js.add_consumer(EVENTS_STREAM, config)
    return await js.pull_subscribe_bind(durable=durable, stream=EVENTS_STREAM)


async def fetch(sub: JetStreamContext.PullSubscription, batch: int, wait: float = 1.0) -> list[Delivery]:
    try:
        msgs = await sub.fetch(batch, timeout=wait)
    except TimeoutError:
        return []
    out = []
    for m in msgs:
        meta = m.metadata
        out.append(Delivery(meta.sequence.stream, m.data, m.subject, meta.num_delivered, m))
    return out


async def read_stream(
    js: JetStreamContext, filters: list[str], after: int = 0, batch: int = 1000
) -> AsyncIterator[list[Delivery]]:
    """Read the event stream from ``after`` to its current end with a short-lived consumer, deleted
    when the read ends (however it ends), so one-off reads never pile up on the server."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        filter_subjects=filters,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=after + 1,
        # The server's own clean-up, should this process die before it deletes the consumer.
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe("", stream=EVENTS_STREAM, config=config)
    name: str | None = None
    try:
        info = await sub.consumer_info()
        name = info.name
        # What is pending now is "the current end"; later appends are the caller's next read.
        pending = int(info.num_pending or 0)
        while pending > 0:
            got = await fetch(sub, min(batch, pending), wait=5.0)
            if not got:
                raise TimeoutError("the event stream did not deliver pending events")
            pending -= len(got)
            yield got
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if name is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, name)


async def read_new(
    js: JetStreamContext, subjects: list[str], after: int, most: int = 10_000
) -> tuple[int, list[tuple[int, str, bytes]]]:
    """The events on ``subjects`` after ``after``, by direct gets: no consumer is created.

    Returns (position read up to, [(seq, subject, data)] in stream order). Reading stops at the stream's
    last sequence as it was when the read began, so the position is exact even while appends go on;
    past ``most`` events the position is where the read stopped.
    """
    until = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
    found: list[tuple[int, str, bytes]] = []
    for subject in subjects:
        seq = after + 1
        while seq <= until:
            try:
                msg = await js.get_msg(EVENTS_STREAM, seq=seq, subject=subject, next=True, direct=True)
            except NotFoundError:
                break
            got = int(msg.seq or 0)
            if got > until:
                break
            found.append((got, msg.subject or "", bytes(msg.data or b"")))
            seq = got + 1
            if len(found) >= most:
                until = got
                break
    found.sort()
    return until, [item for item in found if item[0] <= until]
