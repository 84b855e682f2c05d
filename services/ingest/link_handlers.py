"""Command handlers for links and their usage; ``handlers.HANDLERS`` lists them.

Each append expects the stream not to have moved on the one subject its decision depends on: a new
id on ``links.created``, a link's existence on ``links.deleted``. Expecting on ``links.>`` would
include every usage event, so link changes would keep losing races to ordinary usage traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from services.ingest.devices import Rejected
from services.ingest.links import (
    CREATED_SUBJECT,
    DELETED_SUBJECT,
    REGISTRY_SUBJECTS,
    Link,
    LinkRegistry,
    create_link,
    delete_link,
    fold_link_registry,
    live_link,
    record_link_usage,
    update_link,
    updated,
)
from shared.bus import Appended, Expectation, ExpectationFailed, get_event_data, read_stream
from shared.commands import Command, CreateLink, DeleteLink, RecordLinkUsage, Reply, UpdateLink
from shared.events import (
    Event,
    LinkCreated,
    LinkUpdated,
    LinkUsed,
    decode_event,
    new_event_id,
    now,
)

if TYPE_CHECKING:
    from services.ingest.handlers import Ingest

MAX_RETRIES = 20


async def catch_up_links(ingest: Ingest) -> None:
    registry = ingest.links
    async for batch in read_stream(ingest.js, REGISTRY_SUBJECTS, after=registry.last_seq):
        for d in batch:
            registry = fold_link_registry(registry, decode_event(d.data), d.seq)
    # Two concurrent catch-ups may finish out of order: keep the one that saw more.
    if registry.last_seq > ingest.links.last_seq:
        ingest.links = registry


def _msg_id(cmd: Command) -> str:
    return f"{type(cmd).__name__}:{cmd.idempotency_key or cmd.request_id or new_event_id()}"


async def _original(ingest: Ingest, appended: Appended, fallback: Event) -> Event:
    """The event a duplicate append points at: a retried command answers what the first one did."""
    if not appended.duplicate:
        return fallback
    return decode_event(await get_event_data(ingest.js, appended.seq))


async def _append_change(
    ingest: Ingest,
    decide: Callable[[LinkRegistry], Event],
    expect: Callable[[LinkRegistry], Expectation],
    msg_id: str,
) -> tuple[Event, Appended]:
    """Decide a registry change and append it, deciding again after every lost race."""
    async with ingest.link_changes:
        for attempt in range(MAX_RETRIES):
            try:
                event = decide(ingest.links)
            except Rejected as exc:
                if exc.status != 404 or attempt > 0:
                    raise
                # Maybe another replica created this link just now.
                await catch_up_links(ingest)
                continue
            try:
                appended = await ingest.append(event, msg_id, expect(ingest.links))
            except ExpectationFailed:
                await catch_up_links(ingest)
                continue
            await catch_up_links(ingest)
            return await _original(ingest, appended, event), appended
    raise Rejected(503, "too much contention on links, try again")


def _created_expectation(registry: LinkRegistry) -> Expectation:
    return Expectation(CREATED_SUBJECT, registry.last_created_seq)


def _deleted_expectation(registry: LinkRegistry) -> Expectation:
    return Expectation(DELETED_SUBJECT, registry.last_deleted_seq)


def _created_reply(event: LinkCreated, seq: int) -> Reply:
    link = Link(event.link_id, event.name, event.url, event.description, event.occurred_at)
    return Reply(status=201, seq=seq, result=link.as_result())


async def handle_create_link(ingest: Ingest, cmd: CreateLink) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, LinkCreated):
        return _created_reply(earlier, 0)
    event, appended = await _append_change(
        ingest,
        lambda registry: create_link(cmd, registry, event_id=new_event_id(), at=now()),
        _created_expectation,
        _msg_id(cmd),
    )
    assert isinstance(event, LinkCreated)
    return _created_reply(event, appended.seq)


async def handle_update_link(ingest: Ingest, cmd: UpdateLink) -> Reply:
    before: dict[str, Link] = {}

    def decide(registry: LinkRegistry) -> Event:
        event = update_link(cmd, registry, event_id=new_event_id(), at=now())
        before["link"] = live_link(registry, cmd.link_id)
        return event

    event, appended = await _append_change(ingest, decide, _deleted_expectation, _msg_id(cmd))
    assert isinstance(event, LinkUpdated)
    # The link as this update left it (a later concurrent update may change other fields again).
    return Reply(status=200, seq=appended.seq, result=updated(before["link"], event).as_result())


async def handle_delete_link(ingest: Ingest, cmd: DeleteLink) -> Reply:
    # No replay of an earlier outcome: deleting is idempotent anyway, and a repeat is plainly 404.
    _, appended = await _append_change(
        ingest,
        lambda registry: delete_link(cmd, registry, event_id=new_event_id(), at=now()),
        _deleted_expectation,
        _msg_id(cmd),
    )
    return Reply(status=204, seq=appended.seq)


async def handle_record_link_usage(ingest: Ingest, cmd: RecordLinkUsage) -> Reply:
    """Usage takes no lock: uses never conflict with each other, only with a delete of their link."""
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, LinkUsed):
        return Reply(status=201, seq=0, result={"status": "ok"})
    msg_id = _msg_id(cmd)
    for attempt in range(MAX_RETRIES):
        try:
            event = record_link_usage(cmd, ingest.links, event_id=new_event_id(), at=now())
        except Rejected as exc:
            if exc.status != 404 or attempt > 0:
                raise
            await catch_up_links(ingest)
            continue
        try:
            appended = await ingest.append(event, msg_id, _deleted_expectation(ingest.links))
        except ExpectationFailed:
            await catch_up_links(ingest)
            continue
        return Reply(status=201, seq=appended.seq, result={"status": "ok"})
    raise Rejected(503, "too much contention on links, try again")
