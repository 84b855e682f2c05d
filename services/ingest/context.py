"""What every handler decides with: the appender, state folded from the stream, and the one loop
that decides, appends expecting the stream unchanged, and decides again after a lost race."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.ingest.contributions import ContributionsDirectory, fold_directory
from services.ingest.heartbeat import DEVICE_SUBJECTS, DeviceRegistry, fold_device_registry
from services.ingest.links import REGISTRY_SUBJECTS, LinkRegistry, fold_link_registry
from services.ingest.rejected import Rejected
from shared import metrics
from shared.bus import (
    EVENTS_STREAM,
    Appended,
    Appender,
    Expectation,
    ExpectationFailed,
    get_event_data,
    read_stream,
)
from shared.commands import Command
from shared.events import Event, decode_event, new_event_id, now
from shared.events.contributions import DIRECTORY_SUBJECTS

MAX_RETRIES = 20


class Sequenced(Protocol):
    @property
    def last_seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)
E = TypeVar("E", bound=Event)


class Folded(Generic[S]):
    """State folded from the events on ``subjects``, caught up from the stream on demand."""

    def __init__(self, subjects: list[str], fold: Callable[[S, Event, int], S], initial: S) -> None:
        self.subjects = subjects
        self.state = initial
        self._fold = fold
        # Changes within one process take turns: then only replicas ever race each other.
        self.changes = asyncio.Lock()
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None

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
        async for batch in read_stream(js, self.subjects, after=state.last_seq):
            for d in batch:
                state = self._fold(state, decode_event(d.data), d.seq)
        # Two concurrent catch-ups may finish out of order: keep the one that saw more.
        if state.last_seq > self.state.last_seq:
            self.state = state


def msg_id_for(cmd: Command) -> str:
    """The append's ``Nats-Msg-Id``: the client's idempotency key (already scoped by command), or a
    fresh id. Never the request id: clients choose those too, and reusing one is not a retry."""
    return cmd.idempotency_key or f"{type(cmd).__name__}:{new_event_id()}"


@dataclass
class Ingest:
    appender: Appender
    js: JetStreamContext
    pool: asyncpg.Pool
    devices: Folded[DeviceRegistry] = field(
        default_factory=lambda: Folded([DEVICE_SUBJECTS], fold_device_registry, DeviceRegistry())
    )
    links: Folded[LinkRegistry] = field(
        default_factory=lambda: Folded(REGISTRY_SUBJECTS, fold_link_registry, LinkRegistry())
    )
    contributions: Folded[ContributionsDirectory] = field(
        default_factory=lambda: Folded(DIRECTORY_SUBJECTS, fold_directory, ContributionsDirectory())
    )

    async def append(self, event: Event, msg_id: str, expect: Expectation | None = None) -> Appended:
        appended = await self.appender.append(event, msg_id, expect)
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
                return event, await self.append(event, msg_id, expect(folded.state))
            except ExpectationFailed:
                await folded.catch_up(self.js)
                caught_up = True
        raise Rejected(503, "too much contention, try again")

    async def event_at(self, seq: int) -> Event:
        return decode_event(await get_event_data(self.js, seq))

    async def original(self, appended: Appended, fallback: E) -> E | Event:
        """The event a duplicate append points at: a retried command answers what the first one did."""
        return await self.event_at(appended.seq) if appended.duplicate else fallback

    async def earlier_outcome(self, key: str | None) -> Event | None:
        """The event an idempotency key produced before JetStream's duplicate window, if any."""
        if key is None:
            return None
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
            oldest_unrecorded = await self.event_at(position + 1)
        except NotFoundError:
            return  # the key projection has seen the whole stream
        age = (now() - oldest_unrecorded.occurred_at).total_seconds()
        if age < 1.0:
            return  # the usual few milliseconds behind; every window is longer than this
        window = float((await self.js.stream_info(EVENTS_STREAM)).config.duplicate_window or 0)
        if age >= window * 0.9:
            raise Rejected(503, "idempotency keys are being caught up, try again shortly")
