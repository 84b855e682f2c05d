"""Media-usage command handlers; listed in ``HANDLERS``.

Recording needs no state: a write's event says what its groupings have now, and the projection
works out what that replaces. Whether one usage exists (to delete it or set its status) is read
from the read model, once it has caught up with every media event: the usages are far too many to
fold into every ingest's memory, and the read model is their index already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import NotFoundError

from services.ingest.context import Ingest, msg_id_for
from services.ingest.idempotency import ADMIN, idempotency_key
from services.ingest.media import (
    delete_media_usages,
    delete_usage,
    new_status,
    record_digital,
    record_download,
    record_front,
    record_print,
    record_syndication,
    update_status,
    valid_id,
    valid_usage_id,
)
from services.ingest.rejected import Rejected
from shared.bus import EVENTS_STREAM
from shared.commands import (
    Command,
    DeleteMediaUsage,
    DeleteMediaUsages,
    RecordDigitalUsages,
    RecordDownloadUsage,
    RecordFrontUsage,
    RecordPrintUsages,
    RecordSyndicationUsage,
    Reply,
    UpdateMediaUsageStatus,
)
from shared.commands.media import RecordMediaUsages
from shared.events import (
    MediaUsageDeleted,
    MediaUsagesDeleted,
    MediaUsagesRecorded,
    MediaUsageStatusUpdated,
    encode_event,
    new_event_id,
    now,
)
from shared.events.media import SUBJECTS

READ_MODEL = "media_usage"
# An event is one NATS message (1 MiB by default), headers included. A print record becomes 1.5 to
# 2 times its size in the event (its id, grouping and reference), so a body within the print limit
# can still make an event too large when its records are tiny: refused, never half-written.
MAX_EVENT_BYTES = 1024 * 1024 - 16 * 1024
# How long a usage lookup waits for the read model to catch up before answering 503.
CATCH_UP_WAIT = 5.0

Decide = Callable[..., MediaUsagesRecorded]


async def _last_media_seq(ingest: Ingest) -> int:
    async def last_on(subject: str) -> int:
        try:
            msg = await ingest.js.get_last_msg(EVENTS_STREAM, subject, direct=True)
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    return max(await asyncio.gather(*(last_on(s) for s in SUBJECTS.values())))


async def usage_exists(ingest: Ingest, media_id: str, usage_id: str) -> bool:
    """Whether ``media_id`` has the usage ``usage_id`` as of every media event appended so far."""
    if not valid_id(media_id) or not valid_usage_id(usage_id):
        return False  # no usage can have it (and Postgres could not even take a NUL)
    deadline = asyncio.get_running_loop().time() + CATCH_UP_WAIT
    while True:
        row = await ingest.pool.fetchrow(
            "SELECT (SELECT media_id FROM media_usages WHERE usage_id = $1) AS media_id,"
            " (SELECT position FROM projection_checkpoints WHERE projection = $2) AS position",
            usage_id,
            READ_MODEL,
        )
        assert row is not None  # a SELECT of two scalar subqueries always returns one row
        if row["media_id"] is not None:
            return bool(row["media_id"] == media_id)
        if int(row["position"] or 0) >= await _last_media_seq(ingest):
            return False
        if asyncio.get_running_loop().time() >= deadline:
            raise Rejected(503, "media usages are being caught up, try again shortly")
        await asyncio.sleep(0.02)


def _principal(cmd: Command) -> str:
    # The admin secret authorizes every HTTP write; a publisher on the intake is its own caller.
    return ADMIN if cmd.origin == "http" else cmd.origin


def _target(event: MediaUsagesRecorded) -> str:
    """What a write acts on: its content, its media, or (print) the batch as a whole."""
    usages = [u for g in event.groups for u in g.usages]
    if event.platform == "digital":
        return f"content:{event.groups[0].grouping.removeprefix('composer/')}"
    if event.platform == "print":
        return "print"
    return f"media:{usages[0].media_id}"


async def _record(ingest: Ingest, cmd: RecordMediaUsages, decide: Decide) -> Reply:
    event = decide(cmd, event_id=new_event_id(), at=now())
    if not event.groups:
        return Reply(status=202)  # an empty list of print records: nothing to record
    size = len(encode_event(event))
    if size > MAX_EVENT_BYTES:
        raise Rejected(
            413,
            f"these usages make an event of {size} bytes, more than the {MAX_EVENT_BYTES} one message"
            " holds: send them in smaller requests",
        )
    key = idempotency_key(cmd, _principal(cmd), _target(event))
    if isinstance(await ingest.earlier_outcome(key), MediaUsagesRecorded):
        return Reply(status=202)
    appended = await ingest.append(event, msg_id_for(cmd, key), key=key)
    await ingest.original(appended, event, key)  # a key reused for another request: 422
    return Reply(status=202, seq=appended.seq)


async def handle_record_digital(ingest: Ingest, cmd: RecordDigitalUsages) -> Reply:
    return await _record(ingest, cmd, record_digital)


async def handle_record_print(ingest: Ingest, cmd: RecordPrintUsages) -> Reply:
    return await _record(ingest, cmd, record_print)


async def handle_record_syndication(ingest: Ingest, cmd: RecordSyndicationUsage) -> Reply:
    return await _record(ingest, cmd, record_syndication)


async def handle_record_front(ingest: Ingest, cmd: RecordFrontUsage) -> Reply:
    return await _record(ingest, cmd, record_front)


async def handle_record_download(ingest: Ingest, cmd: RecordDownloadUsage) -> Reply:
    return await _record(ingest, cmd, record_download)


async def handle_delete_media_usages(ingest: Ingest, cmd: DeleteMediaUsages) -> Reply:
    """200 whether or not the media had usages, as the original answers."""
    event = delete_media_usages(cmd, event_id=new_event_id(), at=now())
    if event is None:
        return Reply(status=200)
    key = idempotency_key(cmd, _principal(cmd), f"media:{cmd.media_id}")
    if isinstance(await ingest.earlier_outcome(key), MediaUsagesDeleted):
        return Reply(status=200)
    appended = await ingest.append(event, msg_id_for(cmd, key), key=key)
    await ingest.original(appended, event, key)
    return Reply(status=200, seq=appended.seq)


async def handle_delete_usage(ingest: Ingest, cmd: DeleteMediaUsage) -> Reply:
    # The usage is looked up before any replay: once deleted, a repeat is plainly 404.
    exists = await usage_exists(ingest, cmd.media_id, cmd.usage_id)
    event = delete_usage(cmd, exists, event_id=new_event_id(), at=now())
    key = idempotency_key(cmd, _principal(cmd), f"usage:{cmd.usage_id}")
    if isinstance(await ingest.earlier_outcome(key), MediaUsageDeleted):
        return Reply(status=200)
    appended = await ingest.append(event, msg_id_for(cmd, key), key=key)
    await ingest.original(appended, event, key)
    return Reply(status=200, seq=appended.seq)


async def handle_update_status(ingest: Ingest, cmd: UpdateMediaUsageStatus) -> Reply:
    new_status(cmd)  # a bad body is 400 before the usage is looked up, as in the original
    exists = await usage_exists(ingest, cmd.media_id, cmd.usage_id)
    event = update_status(cmd, exists, event_id=new_event_id(), at=now())
    key = idempotency_key(cmd, _principal(cmd), f"usage:{cmd.usage_id}")
    if isinstance(await ingest.earlier_outcome(key), MediaUsageStatusUpdated):
        return Reply(status=200)
    appended = await ingest.append(event, msg_id_for(cmd, key), key=key)
    await ingest.original(appended, event, key)
    return Reply(status=200, seq=appended.seq)


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    RecordDigitalUsages: handle_record_digital,
    RecordPrintUsages: handle_record_print,
    RecordSyndicationUsage: handle_record_syndication,
    RecordFrontUsage: handle_record_front,
    RecordDownloadUsage: handle_record_download,
    DeleteMediaUsages: handle_delete_media_usages,
    DeleteMediaUsage: handle_delete_usage,
    UpdateMediaUsageStatus: handle_update_status,
}
