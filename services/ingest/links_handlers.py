"""Lighthouse command handlers: links and their usage; listed in ``HANDLERS``.

Each append expects the stream not to have moved on the one subject its decision depends on: a new
id on ``links.created``, a link's existence on ``links.deleted``. Expecting on ``links.>`` would
include every usage event, so link changes would keep losing races to ordinary usage traffic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest.context import Ingest, msg_id_for
from services.ingest.idempotency import ADMIN, idempotency_key
from services.ingest.links import (
    CREATED_SUBJECT,
    DELETED_SUBJECT,
    Link,
    LinkRegistry,
    create_link,
    delete_link,
    live_link,
    record_link_usage,
    update_link,
    updated,
    valid_user,
)
from services.ingest.rejected import Rejected
from shared.bus import Expectation
from shared.commands import Command, CreateLink, DeleteLink, RecordLinkUsage, Reply, UpdateLink
from shared.events import Event, LinkCreated, LinkUpdated, LinkUsed, new_event_id, now


def _created_expectation(registry: LinkRegistry) -> Expectation:
    return Expectation(CREATED_SUBJECT, registry.last_created_seq)


def _deleted_expectation(registry: LinkRegistry) -> Expectation:
    return Expectation(DELETED_SUBJECT, registry.last_deleted_seq)


async def _existing_link(ingest: Ingest, link_id: int) -> Link:
    """The live link, looking at the stream once more before refusing (404): another replica may
    have created it a moment ago. Checked before any replay of an idempotency key."""
    try:
        return live_link(ingest.links.state, link_id)
    except Rejected:
        await ingest.links.catch_up(ingest.js)
        return live_link(ingest.links.state, link_id)


def _created_reply(event: LinkCreated, seq: int) -> Reply:
    link = Link(event.link_id, event.name, event.url, event.description, event.occurred_at)
    return Reply(status=201, seq=seq, result=link.as_result())


async def handle_create_link(ingest: Ingest, cmd: CreateLink) -> Reply:
    key = idempotency_key(cmd, ADMIN, "links")
    earlier = await ingest.earlier_outcome(key)
    if isinstance(earlier, LinkCreated):
        return _created_reply(earlier, 0)
    event, appended = await ingest.change_registry(
        ingest.links,
        lambda registry: create_link(cmd, registry, event_id=new_event_id(), at=now()),
        _created_expectation,
        msg_id_for(cmd, key),
        key,
    )
    assert isinstance(event, LinkCreated)
    return _created_reply(event, appended.seq)


async def handle_update_link(ingest: Ingest, cmd: UpdateLink) -> Reply:
    await _existing_link(ingest, cmd.link_id)
    key = idempotency_key(cmd, ADMIN, f"link:{cmd.link_id}")
    if isinstance(await ingest.earlier_outcome(key), LinkUpdated):
        # Answered with the link as it is now: later updates may have changed it since.
        return Reply(status=200, result=live_link(ingest.links.state, cmd.link_id).as_result())
    before: dict[str, Link] = {}

    def decide(registry: LinkRegistry) -> Event:
        event = update_link(cmd, registry, event_id=new_event_id(), at=now())
        before["link"] = live_link(registry, cmd.link_id)
        return event

    event, appended = await ingest.change_registry(
        ingest.links, decide, _deleted_expectation, msg_id_for(cmd, key), key
    )
    assert isinstance(event, LinkUpdated)
    if appended.duplicate:
        return Reply(
            status=200, seq=appended.seq, result=live_link(ingest.links.state, cmd.link_id).as_result()
        )
    # The link as this update left it (a later concurrent update may change other fields again).
    return Reply(status=200, seq=appended.seq, result=updated(before["link"], event).as_result())


async def handle_delete_link(ingest: Ingest, cmd: DeleteLink) -> Reply:
    # No replay of an earlier outcome: the link is checked first, so a repeat is plainly 404.
    await _existing_link(ingest, cmd.link_id)
    key = idempotency_key(cmd, ADMIN, f"link:{cmd.link_id}")
    _, appended = await ingest.change_registry(
        ingest.links,
        lambda registry: delete_link(cmd, registry, event_id=new_event_id(), at=now()),
        _deleted_expectation,
        msg_id_for(cmd, key),
        key,
    )
    return Reply(status=204, seq=appended.seq)


async def handle_record_link_usage(ingest: Ingest, cmd: RecordLinkUsage) -> Reply:
    """Usage takes no lock: uses never conflict with each other, only with a delete of their link."""
    await _existing_link(ingest, cmd.link_id)
    # Usage posts are anonymous: the user they name is the caller a key belongs to, so it is checked
    # before the key is looked up (a NUL in it cannot even be a Postgres text: found by the fuzzer).
    valid_user(cmd.user)
    key = idempotency_key(cmd, f"user:{cmd.user}", f"link:{cmd.link_id}")
    if isinstance(await ingest.earlier_outcome(key), LinkUsed):
        return Reply(status=201, seq=0, result={"status": "ok"})
    decided, appended = await ingest.decide_and_append(
        ingest.links,
        lambda registry: record_link_usage(cmd, registry, event_id=new_event_id(), at=now()),
        _deleted_expectation,
        msg_id_for(cmd, key),
        key=key,
        maybe_news=[404],
    )
    await ingest.original(appended, decided, key)
    return Reply(status=201, seq=appended.seq, result={"status": "ok"})


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    CreateLink: handle_create_link,
    UpdateLink: handle_update_link,
    DeleteLink: handle_delete_link,
    RecordLinkUsage: handle_record_link_usage,
}
