"""What every handler decides with: the appender, state folded from the stream, idempotency keys,
and the one loop that decides, appends expecting the stream unchanged, and decides again after a
lost race."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.ingest.contributions import ContributionsDirectory, fold_directory, skip_directory_message
from services.ingest.heartbeat import (
    DEVICE_SUBJECTS,
    DeviceRegistry,
    fold_device_registry,
    skip_device_message,
)
from services.ingest.idempotency import IdempotencyKey, same_request
from services.ingest.links import REGISTRY_SUBJECTS, LinkRegistry, fold_link_registry, skip_link_message
from services.ingest.metering import REGISTRY_SUBJECTS as METERING_SUBJECTS
from services.ingest.metering import MeteringRegistry, fold_metering_registry, skip_metering_message
from services.ingest.rejected import Rejected
from shared import metrics
from shared.bus import (
    EVENTS_STREAM,
    Appended,
    Appender,
    Expectation,
    ExpectationFailed,
    ExpectationInFlight,
    get_event_data,
    get_stored,
    read_new,
    read_stream,
)
from shared.commands import Command
from shared.events import Event, decode_event, new_event_id, now
from shared.events.contributions import DIRECTORY_SUBJECTS
from shared.logging import get_logger

MAX_RETRIES = 20
log = get_logger(__name__)


class Sequenced(Protocol):
    @property
    def last_seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)
E = TypeVar("E", bound=Event)


class Folded(Generic[S]):
    """State folded from the events on ``subjects``, caught up from the stream on demand.

    Catching up never creates a JetStream consumer: it reads what is new with message gets (one
    request per new event, and one per subject to learn there is none), so a flood of unknown
    tokens costs a few cheap requests at a time, never a server-side resource per request.
    """

    def __init__(
        self,
        subjects: list[str],
        fold: Callable[[S, Event, int], S],
        initial: S,
        skip: Callable[[S, str, int], S],
    ) -> None:
        self.subjects = subjects
        self.state = initial
        self._fold = fold
        # For a message that is no event (a projection quarantines it): the state only notes its
        # position, so appends still expect the stream as it is.
        self._skip = skip
        # Every event on ``subjects`` up to this stream position is folded into ``state``.
        self._cursor = 0
        # Changes within one process take turns: then only replicas ever race each other.
        self.changes = asyncio.Lock()
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None

    async def load(self, js: JetStreamContext) -> None:
        """At start-up: fold everything so far through one short-lived consumer (deleted after)."""
        state, cursor = self.state, self._cursor
        async for batch in read_stream(js, self.subjects, after=cursor):
            for d in batch:
                state = self._apply(state, d.seq, d.subject, d.data)
                cursor = d.seq
        self._advance(state, cursor)

    async def catch_up(self, js: JetStreamContext) -> None:
        """Fold in what the stream has now. Callers that arrive while a read is under way share the
        one read after it, so a flood of unknown tokens costs one read at a time, not one each."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._read(js))
            await asyncio.shield(self._running)
            return
        if self._next is None or self._next.done():
            self._next = asyncio.create_task(self._after(self._running, js))
        await asyncio.shield(self._next)

    async def _after(self, running: asyncio.Task[None], js: JetStreamContext) -> None:
        with contextlib.suppress(Exception):
            await running
        # From here this is the read under way; whoever comes now needs the one after it.
        self._running, self._next = self._next, None
        await self._read(js)

    async def _read(self, js: JetStreamContext) -> None:
        state = self.state
        until, found = await read_new(js, self.subjects, after=self._cursor)
        for seq, subject, data in found:
            state = self._apply(state, seq, subject, data)
        self._advance(state, until)

    def _apply(self, state: S, seq: int, subject: str, data: bytes) -> S:
        try:
            event = decode_event(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as exc:
            log.warning("unreadable event skipped", seq=seq, subject=subject, reason=str(exc)[:200])
            return self._skip(state, subject, seq)
        return self._fold(state, event, seq)

    def _advance(self, state: S, cursor: int) -> None:
        # Two concurrent reads may finish out of order: keep the one that saw more.
        if cursor >= self._cursor and state.last_seq >= self.state.last_seq:
            self.state, self._cursor = state, cursor


def msg_id_for(cmd: Command, key: IdempotencyKey | None) -> str:
    """The append's ``Nats-Msg-Id``: the scoped idempotency key, or a fresh id. Never the request
    id: clients choose those too, and reusing one is not a retry."""
    return key.scoped if key is not None else f"{type(cmd).__name__}:{new_event_id()}"


def _keyed(event: E, key: IdempotencyKey | None) -> E:
    if key is None:
        return event
    return msgspec.structs.replace(event, idempotency_key=key.scoped, request_fingerprint=key.fingerprint)


@dataclass
class Ingest:
    appender: Appender
    js: JetStreamContext
    pool: asyncpg.Pool
    devices: Folded[DeviceRegistry] = field(
        default_factory=lambda: Folded(
            [DEVICE_SUBJECTS], fold_device_registry, DeviceRegistry(), skip_device_message
        )
    )
    links: Folded[LinkRegistry] = field(
        default_factory=lambda: Folded(
            REGISTRY_SUBJECTS, fold_link_registry, LinkRegistry(), skip_link_message
        )
    )
    metering: Folded[MeteringRegistry] = field(
        default_factory=lambda: Folded(
            METERING_SUBJECTS, fold_metering_registry, MeteringRegistry(), skip_metering_message
        )
    )
    contributions: Folded[ContributionsDirectory] = field(
        default_factory=lambda: Folded(
            DIRECTORY_SUBJECTS, fold_directory, ContributionsDirectory(), skip_directory_message
        )
    )

    async def append(
        self, event: Event, msg_id: str, expect: Expectation | None = None, key: IdempotencyKey | None = None
    ) -> Appended:
        """Append durably; with ``key``, the event carries the scoped key and the request's fingerprint."""
        appended = await self.appender.append(_keyed(event, key), msg_id, expect)
        if not appended.duplicate:
            metrics.EVENTS_APPENDED.labels(type(event).__name__).inc()
        return appended

    async def decide_and_append(
        self,
        folded: Folded[S],
        decide: Callable[[S], E],
        expect: Callable[[S], Expectation],
        msg_id: str,
        *,
        key: IdempotencyKey | None = None,
        maybe_news: Iterable[int] = (),
    ) -> tuple[E, Appended]:
        """Decide against ``folded`` and append only if the stream still agrees with it.

        A lost race, or a refusal whose status is in ``maybe_news`` (say, 404 for something another
        replica created a moment ago), catches up and decides again; any other refusal stands.
        """
        retry_statuses = frozenset(maybe_news)
        caught_up = False
        for _ in range(MAX_RETRIES):
            try:
                event = decide(folded.state)
            except Rejected as exc:
                if exc.status not in retry_statuses or caught_up:
                    raise
                await folded.catch_up(self.js)
                caught_up = True
                continue
            try:
                return event, await self.append(event, msg_id, expect(folded.state), key)
            except ExpectationInFlight:
                # Another replica's append is being replicated: give it a moment to land.
                await asyncio.sleep(random.uniform(0.001, 0.01))
                await folded.catch_up(self.js)
                caught_up = True
            except ExpectationFailed:
                await folded.catch_up(self.js)
                caught_up = True
        raise Rejected(503, "too much contention, try again")

    async def change_registry(
        self,
        folded: Folded[S],
        decide: Callable[[S], E],
        expect: Callable[[S], Expectation],
        msg_id: str,
        key: IdempotencyKey | None = None,
    ) -> tuple[E | Event, Appended]:
        """A change to a registry (devices, links, orgs): one at a time per process, appended only if
        no other change landed since the registry was read, a 404 deciding again once caught up
        (another replica may have just created the target), and answered as its first try was."""
        async with folded.changes:
            event, appended = await self.decide_and_append(
                folded, decide, expect, msg_id, key=key, maybe_news=[404]
            )
            await folded.catch_up(self.js)
        return await self.original(appended, event, key), appended

    async def event_at(self, seq: int) -> Event:
        return decode_event(await get_event_data(self.js, seq))

    async def original(self, appended: Appended, fallback: E, key: IdempotencyKey | None = None) -> E | Event:
        """The event a duplicate append points at: a retried command answers what the first one did,
        and a key reused for a different request is refused (422)."""
        if not appended.duplicate:
            return fallback
        event = await self.event_at(appended.seq)
        if key is not None:
            same_request(key, event)
        return event

    async def earlier_outcome(self, key: IdempotencyKey | None) -> Event | None:
        """The event ``key`` produced before, past JetStream's duplicate window too; 422 when the key
        was used for a different request. Only after the caller is authenticated and the target exists."""
        if key is None:
            return None
        earlier = await self._recorded(key.scoped)
        if earlier is not None:
            same_request(key, earlier)
        return earlier

    async def _recorded(self, key: str) -> Event | None:
        row = await self.pool.fetchrow(
            "SELECT (SELECT stream_seq FROM idempotency_keys WHERE idempotency_key = $1) AS seq,"
            " (SELECT position FROM projection_checkpoints WHERE projection = 'idempotency') AS position",
            key,
        )
        assert row is not None  # a SELECT of two scalar subqueries always returns one row
        if row["seq"] is not None:
            return await self.event_at(int(row["seq"]))
        await self._keys_cover_window(int(row["position"] or 0))
        return None

    async def _keys_cover_window(self, position: int) -> None:
        """Refuse (503) rather than risk a double write when neither JetStream nor Postgres can vouch
        for a key: the key projection has not yet recorded an event older than the duplicate window."""
        try:
            oldest_unrecorded = await get_stored(self.js, position + 1)
        except NotFoundError:
            return  # the key projection has seen the whole stream
        # The server's own time of storage: it is what the duplicate window is measured from, and it
        # is there even for a message that is no event.
        stored_at = oldest_unrecorded.time or now()
        age = (now() - stored_at).total_seconds()
        if age < 1.0:
            return  # the usual few milliseconds behind; every window is longer than this
        window = float((await self.js.stream_info(EVENTS_STREAM)).config.duplicate_window or 0)
        if age >= window * 0.9:
            raise Rejected(503, "idempotency keys are being caught up, try again shortly")
