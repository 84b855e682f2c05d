"""The bus: NATS connection, the streams, the one append path to JetStream, and pull consumers.

Appends from concurrent writers are grouped into JetStream atomic batches, so one fsync on the
server covers many writers (a handful, quicker sent one by one, go so); a batch the server refuses
(a duplicate id, a failed expectation) is retried message by message, so each writer gets its own
exact answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RawStreamMsg,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from shared.events import Event, encode_event, subject_of
from shared.logging import get_logger
from shared.settings import Settings

EVENTS_STREAM = "USAGEHUB_EVENTS"
EVENTS_SUBJECTS = "usagehub.events.>"
# Events other services publish straight onto the bus, before validation: see intake_subject.
INTAKE_STREAM = "USAGEHUB_INTAKE"
INTAKE_PREFIX = "usagehub.ingest."
INTAKE_SUBJECTS = INTAKE_PREFIX + ">"
# Intake messages that failed validation, kept with the reason: never lost silently.
REJECTED_STREAM = "USAGEHUB_REJECTED"
REJECTED_SUBJECTS = "usagehub.rejected.>"
# Notifications projectors send for other services to consume (media usage, from the next API on).
NOTIFY_STREAM = "USAGEHUB_NOTIFY"
NOTIFY_SUBJECTS = "usagehub.notify.>"
STREAMS = (EVENTS_STREAM, INTAKE_STREAM, REJECTED_STREAM, NOTIFY_STREAM)
COMMANDS_PREFIX = "usagehub.commands."
INGEST_QUEUE = "ingest"
# usagehub.commands.Ping: any ingest answers 200 at once (readiness: is an ingest there?).
PING = "Ping"
# usagehub.commands.Batch: a JSON array of commands, answered by the JSON array of their replies in
# the same order; the gateway sends the commands that arrive together as one (services/gateway/
# command_batches.py). Bounded so a batch and its answer stay far below NATS's max_payload.
BATCH = "Batch"
MAX_COMMANDS_PER_BATCH = 256
MAX_BATCH_BYTES = 256 * 1024
# Core-NATS notices a projector sends after each commit: the gateway's read-your-writes waits on them.
PROJECTED_PREFIX = "usagehub.projected."

# Byte limits. JetStream reserves a stream's byte limit on the server's file store when it creates
# the stream, so they are modest: the intake is a queue (a backlog this large means ingest is down),
# the rejected stream a record for operators, notifications the latest state of what changed.
INTAKE_MAX_BYTES = 256 * 1024**2
INTAKE_MAX_MESSAGE = 1024 * 1024
REJECTED_MAX_BYTES = 64 * 1024**2
REJECTED_MAX_MESSAGE = 128 * 1024
NOTIFY_MAX_BYTES = 256 * 1024**2
NOTIFY_MAX_MESSAGE = 1024 * 1024

# JetStream's own limits on an atomic batch are 1000 messages and 50 open batches per stream.
MAX_BATCH = 256
MAX_BATCHES_IN_FLIGHT = 4
# Below these counts a batch is cheaper sent message by message than as an atomic batch. The server
# stages an atomic batch in a file store of its own (a directory, metadata written with O_SYNC, a
# block, an index, then renamed and removed): measured here, an atomic batch took 3.3 ms however
# small, while single appends took 0.6 ms each one after another (those with an expectation must
# go so) and 0.25 ms each side by side (docs/performance.md). The counts stay well below the
# break-even, as each single append costs the server an fsync of its own.
ONE_BY_ONE_EXPECTING = 2
ONE_BY_ONE_FREE = 6

log = get_logger(__name__)

# A subject token that names something on the bus: an intake kind, a publisher, a NATS user.
_TOKEN = re.compile(r"[a-z][a-z0-9_]{0,62}")


def intake_subject(kind: str, publisher: str | None = None) -> str:
    """Where another service publishes intake of ``kind``: ``usagehub.ingest.<kind>`` as the generic
    ``publisher`` user, or ``usagehub.ingest.<kind>.<publisher>`` as the named publisher user
    ``<publisher>``, whom the server lets publish only under its own name."""
    for token in (kind, publisher):
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError(f"{token!r} is not a subject token (a-z, 0-9 and _, starting with a letter)")
    return INTAKE_PREFIX + kind + ("" if publisher is None else "." + publisher)


def parse_intake_subject(subject: str) -> tuple[str, str | None]:
    """``(kind, publisher)`` of an intake subject; the publisher is None for the generic form."""
    tokens = subject.removeprefix(INTAKE_PREFIX).split(".")
    if not subject.startswith(INTAKE_PREFIX) or len(tokens) > 2 or not all(tokens):
        raise ValueError(f"{subject!r} is not usagehub.ingest.<kind> or usagehub.ingest.<kind>.<publisher>")
    return tokens[0], (tokens[1] if len(tokens) == 2 else None)


def inbox_prefix(user: str) -> str:
    """Each NATS user gets its own reply subjects, which only it may subscribe to, so no other role
    can read the answers it is sent (registration replies carry new tokens)."""
    return f"_INBOX_{user}" if user else "_INBOX"


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is a reply inbox. A responder checks it: the requester picks the reply
    subject, and a reply must never be steered onto a stream's subjects."""
    return subject.startswith("_INBOX")


class BusRefused(Exception):
    """The NATS server refused our credentials, or we refused its certificate: retrying with the same
    configuration cannot help."""


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.nats_ca_file:
        return ssl.create_default_context(cafile=settings.nats_ca_file)
    return None  # tls:// without a CA file: nats-py verifies against the system's CAs


def _refusal(exc: Exception, user: str) -> str | None:
    """What to tell the operator when ``exc`` means the configuration, not the network, is wrong."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the NATS server's certificate is not trusted ({exc.verify_message}):"
            " set USAGEHUB_NATS_CA_FILE to the CA certificate that signed it"
        )
    if "authorization violation" in str(exc).lower():
        who = f"user {user!r}" if user else "a client without credentials"
        return (
            f"the NATS server refused {who}: set USAGEHUB_NATS_USER and USAGEHUB_NATS_PASSWORD"
            " (or USAGEHUB_NATS_PASSWORD_FILE) to a user of its configuration"
        )
    return None


# A server that stops answering (paused, partitioned away) keeps its TCP connection open: the client
# notices only when pings go unanswered, so ping often enough to move to another server in seconds.
PING_INTERVAL = 2
MAX_OUTSTANDING_PINGS = 2


def server_urls(url: str) -> list[str]:
    """``USAGEHUB_NATS_URL`` names one server or, separated by commas, several servers of a cluster."""
    return [part.strip() for part in url.split(",") if part.strip()]


# A raw subscription's handler: (subject, reply, payload, header block or None), as the parser read
# them. It runs inside the client's reading task, so it must not block.
RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]


class _RawParser(Parser):
    """nats-py's protocol parser, with a quicker path for the messages of raw subscriptions: each
    whole message at the front of the buffer is cut out with ``find`` and ``split`` (nats-py runs
    several regular expressions and copies per message). Anything else, the parser's own way."""

    def __init__(self, nc: NATS, handlers: dict[int, RawHandler]) -> None:
        self._handlers = handlers
        super().__init__(nc)

    def reset(self) -> None:
        super().reset()
        # Bytes the buffer must hold before the message at its front is whole.
        self._wanted = 0

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE or not self._handlers:
            await super().parse(data)
            return
        buf: bytearray = self.buf
        buf.extend(data)
        if len(buf) < self._wanted:
            return
        self._wanted = 0
        handlers = self._handlers
        view = bytes(buf)
        pos, size, ours = 0, len(view), True
        while pos < size:
            eol = view.find(b"\r\n", pos)
            if eol < 0:
                break
            line = view[pos:eol].split()
            op = line[0] if line else b""
            # HMSG <subject> <sid> [reply] <header bytes> <total bytes>; MSG <subject> <sid> [reply] <bytes>
            if op == b"HMSG" and 5 <= len(line) <= 6:
                reply = line[3] if len(line) == 6 else b""
                header_size = int(line[-2])
            elif op == b"MSG" and 4 <= len(line) <= 5:
                reply = line[3] if len(line) == 5 else b""
                header_size = 0
            else:
                ours = False
                break
            handler = handlers.get(int(line[2]))
            if handler is None:
                ours = False
                break
            start = eol + 2
            end = start + int(line[-1])
            if end + 2 > size:
                self._wanted = end + 2 - pos
                break
            headers = view[start : start + header_size] if header_size else None
            handler(line[1], reply, view[start + header_size : end], headers)
            pos = end + 2
        if pos:
            del buf[:pos]
        if not ours:
            await super().parse()


class BusClient(NATS):
    """nats-py's client with one shortcut for reading the event stream: a raw subscription hands each
    message to a plain function as the protocol parser left it. nats-py's own path builds a ``Msg``,
    parses its headers into a dict and, for a pull fetch, runs a ``wait_for`` per message: profiled,
    that was most of the projector's time (about 10,000 events/s at best on this machine)."""

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}
        self._ps = _RawParser(self, self._raw_handlers)

    async def raw_subscribe(self, subject: str, handler: RawHandler) -> Any:
        sub = await self.subscribe(subject)
        self._raw_handlers[sub._id] = handler
        return sub

    async def raw_unsubscribe(self, sub: Any) -> None:
        self._raw_handlers.pop(sub._id, None)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            # nats-py's parser passes None for a message without headers, whatever the annotation says.
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        else:
            handler(subject, reply, data, headers)


async def connect(settings: Settings, name: str) -> NATS:
    """Connect as ``settings.nats_user`` (empty: no authentication) with that user's inbox prefix.

    An unreachable server is waited for; refused credentials or an untrusted server certificate
    raise ``BusRefused`` at once.
    """
    user = settings.nats_user
    credentials: dict[str, Any] = {}
    if user:
        credentials = {"user": user, "password": settings.nats_password}
    tls = _tls(settings)
    if tls is not None:
        credentials["tls"] = tls
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        refusal = _refusal(exc, user)
        if refusal is not None and not refused.done():
            refused.set_result(refusal)
        log.warning("nats connection problem", client=name, error=repr(exc))

    async def connected(servers: list[str], **options: Any) -> NATS:
        nc = BusClient()
        await nc.connect(servers, **options)
        return nc

    connecting: asyncio.Future[NATS] = asyncio.ensure_future(
        connected(
            server_urls(settings.nats_url),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            ping_interval=PING_INTERVAL,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=on_error,
            drain_timeout=5,
            inbox_prefix=inbox_prefix(user),
            **credentials,
        )
    )
    either: list[asyncio.Future[Any]] = [connecting, refused]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if connecting.done():
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await connecting
    raise BusRefused(refused.result())


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
    """Create the streams if missing; safe when several processes start at once. Only ingest (and the
    tests' superuser) may: the other roles wait for them with ``wait_for_stream``."""
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
        StreamConfig(
            name=NOTIFY_STREAM,
            subjects=[NOTIFY_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=7 * 24 * 3600.0,
            # Full: the oldest notifications go first (a subscriber needs only each media's latest).
            max_bytes=NOTIFY_MAX_BYTES,
            max_msg_size=NOTIFY_MAX_MESSAGE,
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


async def wait_for_stream(js: JetStreamContext, stream: str, stop: asyncio.Event) -> bool:
    """Until ``stream`` exists (ingest creates it); False if ``stop`` is set first."""
    waiting = False
    while not stop.is_set():
        try:
            await js.stream_info(stream)
            return True
        except NotFoundError:
            if not waiting:
                log.info("waiting for ingest to create the stream", stream=stream)
                waiting = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


class AppendError(Exception):
    """JetStream refused an append."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{description} ({code})")
        self.code = code
        self.description = description


class ExpectationFailed(AppendError):
    """The stream moved on since the writer decided: reload state and decide again."""


class ExpectationInFlight(ExpectationFailed):
    """A replicated stream's leader checks an expectation only when no earlier append with the same
    expectation subject is still being replicated; until then it refuses: the stream is moving on."""


class DuplicateInFlight(AppendError):
    """An append with this message id is still being stored (by another replica, say): its outcome
    is not known yet; the same append a moment later is a duplicate, or goes in."""


WRONG_LAST_SEQUENCE = 10071
WRONG_LAST_SEQUENCE_IN_FLIGHT = 10164
DUPLICATE_IN_PROCESS = 10158
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


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
        headers[EXPECTED_SUBJECT] = expect.subject
    return headers


def _error_of(reply: dict[str, Any]) -> AppendError:
    err = reply["error"]
    code = int(err.get("err_code", 0))
    cls = {
        WRONG_LAST_SEQUENCE: ExpectationFailed,
        WRONG_LAST_SEQUENCE_IN_FLIGHT: ExpectationInFlight,
        DUPLICATE_IN_PROCESS: DuplicateInFlight,
    }.get(code, AppendError)
    return cls(code, str(err.get("description", "append refused")))


class Appender:
    """The one way events reach the event stream: ``await append(...)`` returns once stored durably."""

    def __init__(self, nc: NATS, timeout: float = 10.0) -> None:
        self._nc = nc
        self._timeout = timeout
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # One batch at a time per expectation subject: a replicated stream refuses an expectation
        # while another on the same subject is in flight. A batch still shares one fsync.
        self._expecting: dict[str, asyncio.Lock] = {}

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
        while self._queue:
            pending = self._queue.popleft()
            if not pending.done.done():
                pending.done.set_exception(ConnectionError("the appender stopped before this append"))

    async def append(self, event: Event, msg_id: str, expect: Expectation | None = None) -> Appended:
        subject = subject_of(event)
        alone = expect is not None and subject_matches(subject, expect.subject)
        pending = _Pending(subject, encode_event(event), _headers(msg_id, expect), alone)
        self._queue.append(pending)
        self._queued.set()
        return await pending.done

    async def _run(self) -> None:
        queue = self._queue
        while True:
            while not queue:
                self._queued.clear()
                await self._queued.wait()
            await self._slots.acquire()
            if not queue:  # a batch waiting for its expectation took them all
                self._slots.release()
                continue
            # Everything that queued up while we waited for a slot shares this batch (and its fsync).
            batch = [queue.popleft()]
            while len(batch) < MAX_BATCH and queue:
                batch.append(queue.popleft())
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            subjects = sorted({s for p in batch if (s := p.headers.get(EXPECTED_SUBJECT))})
            async with contextlib.AsyncExitStack() as held:
                for subject in subjects:  # sorted: two batches never wait for each other's locks
                    await held.enter_async_context(self._expecting.setdefault(subject, asyncio.Lock()))
                if subjects:
                    self._top_up(batch, frozenset(subjects))
                await self._send_held(batch)
        except Exception as exc:  # a lost connection or timeout: every writer hears about it
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
        finally:
            self._slots.release()

    def _top_up(self, batch: list[_Pending], held: frozenset[str]) -> None:
        """Appends that queued while ``batch`` waited for its expectations join it, up to the first
        that needs an expectation it does not hold or must travel alone: else batches formed while
        one holds the expectation would each wait their turn with a handful, every one paying a
        batch's round trip and fsync."""
        queue = self._queue
        while len(batch) < MAX_BATCH and queue:
            upcoming = queue[0]
            subject = upcoming.headers.get(EXPECTED_SUBJECT)
            if upcoming.alone or (subject is not None and subject not in held):
                return
            batch.append(queue.popleft())

    async def _send_held(self, batch: list[_Pending]) -> None:
        if len(batch) > 1 and not any(p.alone for p in batch) and not _small(batch):
            try:
                first_seq = await self._send_atomic(batch)
            except AppendError:
                pass  # resolved one by one below, each with its own answer
            else:
                for i, p in enumerate(batch):
                    if not p.done.done():
                        p.done.set_result(Appended(first_seq + i, False))
                return
        expecting = [p for p in batch if EXPECTED_SUBJECT in p.headers]

        async def one_at_a_time() -> None:
            for p in expecting:
                await self._send_one(p)

        free = [p for p in batch if EXPECTED_SUBJECT not in p.headers]
        await asyncio.gather(one_at_a_time(), *(self._send_one(p) for p in free))

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


def _small(batch: list[_Pending]) -> bool:
    """Whether ``batch`` is quicker stored message by message than as one atomic batch."""
    expecting = sum(1 for p in batch if EXPECTED_SUBJECT in p.headers)
    return expecting <= ONE_BY_ONE_EXPECTING and len(batch) - expecting <= ONE_BY_ONE_FREE


async def get_stored(js: JetStreamContext, seq: int, next_on: str | None = None) -> RawStreamMsg:
    """The event stream's message ``seq`` (or, with ``next_on``, the first at or after ``seq`` on that
    subject), as the stream's leader has it. Not a direct get: on a replicated stream any replica
    answers those, and a follower may not have applied yet what was just acknowledged; the readers
    here (state catch-up, answers to retries, key checks) must see every acknowledged event."""
    if next_on is None:
        return await js.get_msg(EVENTS_STREAM, seq)
    return await js.get_msg(EVENTS_STREAM, seq=seq, subject=next_on, next=True)


async def get_event_data(js: JetStreamContext, seq: int) -> bytes:
    msg = await get_stored(js, seq)
    return bytes(msg.data or b"")


class Delivery(msgspec.Struct, frozen=True):
    """One message of a pull consumer (a Struct: built tens of thousands of times a second)."""

    seq: int
    data: bytes
    subject: str
    num_delivered: int
    # Where to acknowledge it (AckAll: acknowledging one acknowledges every earlier delivery too).
    ack_subject: str
    # The consumer's own count of deliveries: one more for each message it sends, so a gap means
    # messages it sent never arrived (a connection cut while they were on the way).
    consumer_seq: int = 0
    # Messages the consumer still had to deliver after this one: the projection's lag.
    pending: int = 0


def _status_of(data: bytes, headers: bytes | None) -> bytes | None:
    """The status of a JetStream status message (``NATS/1.0 408 Request Timeout``: no payload, the
    code on the header line), or None for a message."""
    if headers is not None and not data and headers[8:9] == b" ":
        return headers[9:12]
    return None


# Statuses that end a pull request: 404 (nothing to deliver), 408 (its time ran out) and the 409s
# (all delivered, byte budget spent, a leader change, a server shutting down...): the reader asks
# again. 100 is an idle heartbeat. A 409 for a consumer that is gone, or any other status, means the
# reader must start again.
_REQUEST_DONE = (b"404", b"408", b"409")
_CONSUMER_GONE = (b"Consumer Deleted", b"push based")
# One pull request's byte budget: with the window below, what a reader buffers stays bounded even
# for the largest events (1 MiB each).
PULL_MAX_BYTES = 16 * 1024**2
# How long the server holds a pull request open waiting for new events (long poll), and how long
# past that we wait for its end before taking it as lost (the connection was cut meanwhile).
PULL_EXPIRES = 5.0
_PULL_GRACE = 5.0


class Puller:
    """Reads a pull consumer with the next deliveries already on their way.

    It keeps pull requests for up to ``window`` messages open on the server, so messages flow into
    a local buffer while the caller applies the previous batch; ``fetch`` returns what has arrived
    (waiting only when nothing has). The server serves pull requests in order, so deliveries still
    come in consumer order; callers check ``consumer_seq`` for holes as before.
    """

    def __init__(self, nc: NATS, stream: str, consumer: str, window: int) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._window = max(1, window)
        self._ready: collections.deque[Delivery] = collections.deque()
        # Open pull requests in the order sent: number -> [messages still owed, give-up time].
        self._open: dict[int, list[float]] = {}
        self._owed = 0
        self._numbered = 0
        self._arrived = asyncio.Event()
        self._failure: Exception | None = None
        self._sub: Any = None
        self._reconnects = nc.stats["reconnects"]

    async def start(self) -> Puller:
        if isinstance(self._nc, BusClient):
            self._sub = await self._nc.raw_subscribe(self._inbox + ".*", self._on_message)
        else:  # a plain nats-py client (not made by ``connect``): the same, through its Msg objects

            async def on_msg(msg: Msg) -> None:
                headers = msg.headers or {}
                status = None
                if "Status" in headers and not msg.data:
                    status = f"NATS/1.0 {headers['Status']} {headers.get('Description', '')}\r\n".encode()
                self._on_message(msg.subject.encode(), msg.reply.encode(), msg.data, status)

            self._sub = await self._nc.subscribe(self._inbox + ".*", cb=on_msg)
        return self

    async def close(self) -> None:
        if isinstance(self._nc, BusClient):
            await self._nc.raw_unsubscribe(self._sub)
        elif self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    unsubscribe = close

    def _on_message(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        # Runs for every message read: kept to a handful of operations.
        try:
            status = None if data else _status_of(data, headers)
            if status is None:
                # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>, or
                # the newer form with two more tokens (domain, account hash) before the stream and a
                # random one at the end.
                tokens = reply.split(b".")
                at = 4 if len(tokens) == 9 else 6
                self._ready.append(
                    Delivery(
                        int(tokens[at + 1]),
                        data,
                        subject.decode(),
                        int(tokens[at]),
                        reply.decode(),
                        int(tokens[at + 2]),
                        int(tokens[at + 4]),
                    )
                )
                if self._open:
                    self._owed -= 1
                    number = next(iter(self._open))
                    owed = self._open[number]
                    owed[0] -= 1
                    if owed[0] <= 0:
                        del self._open[number]
            elif status != b"100":
                number = int(subject.rsplit(b".", 1)[1] or 0)
                closed = self._open.pop(number, None)
                if closed is not None:
                    self._owed -= int(closed[0])
                if status not in _REQUEST_DONE or any(gone in (headers or b"") for gone in _CONSUMER_GONE):
                    said = (headers or b"").decode(errors="replace").strip()
                    self._failure = ConnectionError(f"the consumer ended a pull request: {said}")
            else:
                return
            self._arrived.set()
        except (IndexError, ValueError):  # neither a delivery nor a status: nothing a server sends
            self._failure = ConnectionError(f"an unexpected message on a pull inbox: {subject!r} {reply!r}")
            self._arrived.set()

    async def _top_up(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._nc.stats["reconnects"] != self._reconnects:
            # The server forgot the requests of the old connection: ask again at once.
            self._reconnects = self._nc.stats["reconnects"]
            self._open.clear()
            self._owed = 0
        for number, (owed, give_up) in list(self._open.items()):
            if give_up < now:  # its end never came: lost with a connection; ask again
                del self._open[number]
                self._owed -= int(owed)
        wanted = self._window - len(self._ready) - self._owed
        # Not for a handful: one request of many messages costs the server and us the same as one.
        if wanted * 2 >= self._window:
            self._numbered += 1
            self._open[self._numbered] = [wanted, now + PULL_EXPIRES + _PULL_GRACE]
            self._owed += wanted
            request = {"batch": wanted, "max_bytes": PULL_MAX_BYTES, "expires": int(PULL_EXPIRES * 1e9)}
            await self._nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=f"{self._inbox}.{self._numbered}"
            )

    async def fetch(self, most: int, wait: float = 1.0) -> list[Delivery]:
        """Up to ``most`` deliveries, in order: those already here, else the first to arrive within
        ``wait`` seconds (none: an empty list)."""
        deadline = asyncio.get_running_loop().time() + wait
        while not self._ready:
            if self._failure is not None:
                raise self._failure
            self._arrived.clear()
            await self._top_up()
            if self._ready or self._failure is not None:
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, PULL_EXPIRES))
        ready = self._ready
        out = [ready.popleft() for _ in range(min(most, len(ready)))]
        await self._top_up()
        return out

    async def ack(self, last: Delivery) -> None:
        """Acknowledge ``last`` and, the consumer acknowledging all, everything delivered before it."""
        await self._nc.publish(last.ack_subject, b"+ACK")


def _consumer_config(
    filters: list[str], after: int, *, durable: str | None = None, ack: AckPolicy = AckPolicy.NONE
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=ack,
        filter_subjects=filters,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
        opt_start_seq=after + 1 if after else None,
    )


async def pull_consumer(
    js: JetStreamContext,
    durable: str,
    filters: list[str],
    start_after: int,
    *,
    fresh: bool = False,
    window: int = 1000,
) -> Puller:
    """Bind the durable pull consumer ``durable``, (re)created to start right after ``start_after``.

    ``fresh`` recreates it unconditionally: messages a crashed process had fetched but not acked
    would otherwise be redelivered after newer ones. It is also recreated when it disagrees with
    the checkpoint the caller holds in Postgres, which is the truth about what has been applied.
    ``window`` is how many messages may be on their way or waiting here at once.
    """
    try:
        info = await js.consumer_info(EVENTS_STREAM, durable)
        floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        if fresh or floor > start_after or sorted(info.config.filter_subjects or []) != sorted(filters):
            await js.delete_consumer(EVENTS_STREAM, durable)
            raise NotFoundError
    except NotFoundError:
        config = _consumer_config(filters, start_after, durable=durable, ack=AckPolicy.ALL)
        config.ack_wait = 30.0
        # Above the window: the server never holds deliveries back for want of acks.
        config.max_ack_pending = max(20_000, 2 * window)
        with contextlib.suppress(APIError):
            await js.add_consumer(EVENTS_STREAM, config)
    return await Puller(js._nc, EVENTS_STREAM, durable, window).start()


async def fetch(sub: Puller, batch: int, wait: float = 1.0) -> list[Delivery]:
    return await sub.fetch(batch, wait)


async def read_stream(
    js: JetStreamContext, filters: list[str], after: int = 0, batch: int = 1000
) -> AsyncIterator[list[Delivery]]:
    """Read the event stream from ``after`` to its current end with a short-lived consumer, deleted
    when the read ends (however it ends), so one-off reads never pile up on the server. Batches are
    of up to ``batch`` events: what has arrived while the caller handled the previous one."""
    config = _consumer_config(filters, after)
    # The server's own clean-up, should this process die before it deletes the consumer. Generous:
    # with no pull request open while the caller applies a batch (a rebuild's 20,000 records under
    # load can take more than 30 s), a shorter one deleted the consumer under the read.
    config.inactive_threshold = 300.0
    info = await js.add_consumer(EVENTS_STREAM, config)
    name: str = info.name
    # What is pending now is "the current end"; later appends are the caller's next read.
    pending = int(info.num_pending or 0)
    puller: Puller | None = None
    try:
        puller = await Puller(js._nc, EVENTS_STREAM, name, min(pending, 2 * batch)).start()
        delivered = 0
        while pending > 0:
            got = await puller.fetch(min(batch, pending), wait=5.0)
            if not got:
                raise TimeoutError("the event stream did not deliver pending events")
            if got[0].consumer_seq != delivered + 1 or got[-1].consumer_seq != delivered + len(got):
                # Lost on the way (a connection cut): a read with a hole in it must not pass as whole.
                raise ConnectionError("events were lost while the event stream was being read")
            delivered += len(got)
            pending -= len(got)
            yield got
    finally:
        if puller is not None:
            await puller.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(EVENTS_STREAM, name)


async def read_new(
    js: JetStreamContext, subjects: list[str], after: int, most: int = 10_000
) -> tuple[int, list[tuple[int, str, bytes]]]:
    """The events on ``subjects`` after ``after``, by single-message gets: no consumer is created.

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
                msg = await get_stored(js, seq, next_on=subject)
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
