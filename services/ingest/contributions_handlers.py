"""Contribution statistics command handlers: commits, marks, emails and blueprints (deduplicated by
their primary key) and the directory; listed in ``HANDLERS``.

A record is appended once: its ``Nats-Msg-Id`` is its primary key (JetStream drops a repeat within
its window) and, before appending, the read model is asked which keys it already holds (which covers
the time after the window, as long as the projection is not itself further behind than the window:
then ingest answers 503 rather than guess). The projection ignores a key it holds as a last guard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.js.errors import NotFoundError

from services.ingest.context import Ingest
from services.ingest.contributions import (
    ContributionsDirectory,
    blueprint_events,
    commit_events,
    directory_events,
    each,
    email_event,
    first_of_each_key,
    mark_event,
    removal_event,
)
from services.ingest.rejected import Rejected
from shared.bus import EVENTS_STREAM, Appended
from shared.commands import Command, Reply
from shared.commands.contributions import (
    BlueprintData,
    EmailData,
    ImportCommits,
    MarkData,
    RecordBlueprint,
    RecordBlueprints,
    RecordEmail,
    RecordEmails,
    RecordMark,
    RecordMarks,
    RemoveDirectoryEntry,
    SaveDirectory,
)
from shared.events import decode_event, new_event_id, now
from shared.events.contributions import ActivityEvent, DirectoryEvent, record_key

PROJECTION = "contributions"
SUBJECTS = "usagehub.events.contributions.>"


def msg_id(event: ActivityEvent) -> str:
    return f"contributions:{record_key(event)}"


async def _known_keys(ingest: Ingest, keys: list[str]) -> set[str]:
    rows = await ingest.pool.fetch(
        "SELECT primary_key FROM contribution_records WHERE primary_key = ANY($1::text[])", keys
    )
    return {r["primary_key"] for r in rows}


async def _projection_covers_window(ingest: Ingest) -> None:
    """Refuse (503) while the read model may not know a record older than JetStream's duplicate window."""
    position = await ingest.pool.fetchval(
        "SELECT position FROM projection_checkpoints WHERE projection = $1", PROJECTION
    )
    try:
        msg = await ingest.js.get_msg(EVENTS_STREAM, seq=int(position or 0) + 1, subject=SUBJECTS, next=True)
    except NotFoundError:
        return  # the projection has every contribution event
    age = (now() - decode_event(bytes(msg.data or b"")).occurred_at).total_seconds()
    if age < 1.0:
        return
    window = float((await ingest.js.stream_info(EVENTS_STREAM)).config.duplicate_window or 0)
    if age >= window * 0.9:
        raise Rejected(503, "contribution records are being caught up, try again shortly")


async def append_records(ingest: Ingest, events: Sequence[ActivityEvent]) -> Reply:
    """Append the records whose primary key is new; answer how many were new and how many known."""
    unique = first_of_each_key(events, record_key)
    known = await _known_keys(ingest, [record_key(e) for e in unique]) if unique else set()
    fresh = [e for e in unique if record_key(e) not in known]
    appended: list[Appended] = []
    if fresh:
        await _projection_covers_window(ingest)
        appended = list(await asyncio.gather(*(ingest.append(e, msg_id(e)) for e in fresh)))
    accepted = sum(1 for a in appended if not a.duplicate)
    return Reply(
        status=200,
        # A duplicate points at the first append, which the read model may not show yet either.
        seq=max((a.seq for a in appended), default=0),
        result={"accepted": accepted, "duplicates": len(events) - accepted},
    )


async def handle_import_commits(ingest: Ingest, cmd: ImportCommits) -> Reply:
    return await append_records(ingest, commit_events(cmd, new_id=new_event_id, at=now()))


def _marks(items: Sequence[MarkData], request_id: str | None) -> list[ActivityEvent]:
    at = now()
    return list(
        each(items, "marks", lambda m: mark_event(m, event_id=new_event_id(), at=at, request_id=request_id))
    )


def _emails(items: Sequence[EmailData], request_id: str | None) -> list[ActivityEvent]:
    at = now()
    return list(
        each(items, "emails", lambda e: email_event(e, event_id=new_event_id(), at=at, request_id=request_id))
    )


def _blueprints(items: Sequence[BlueprintData], request_id: str | None) -> list[ActivityEvent]:
    at = now()
    decided = each(
        items, "blueprints", lambda b: blueprint_events(b, new_id=new_event_id, at=at, request_id=request_id)
    )
    return [e for events in decided for e in events]


def _record_of(cmd: Command, data_type: type[Any]) -> Any:
    """The record an intake command carries (its own fields, without the command envelope)."""
    fields = set(data_type.__struct_fields__)
    return data_type(**{f: getattr(cmd, f) for f in fields})


async def handle_record_marks(ingest: Ingest, cmd: RecordMarks) -> Reply:
    return await append_records(ingest, _marks(cmd.marks, cmd.request_id))


async def handle_record_mark(ingest: Ingest, cmd: RecordMark) -> Reply:
    return await append_records(ingest, _marks([_record_of(cmd, MarkData)], cmd.request_id))


async def handle_record_emails(ingest: Ingest, cmd: RecordEmails) -> Reply:
    return await append_records(ingest, _emails(cmd.emails, cmd.request_id))


async def handle_record_email(ingest: Ingest, cmd: RecordEmail) -> Reply:
    return await append_records(ingest, _emails([_record_of(cmd, EmailData)], cmd.request_id))


async def handle_record_blueprints(ingest: Ingest, cmd: RecordBlueprints) -> Reply:
    return await append_records(ingest, _blueprints(cmd.blueprints, cmd.request_id))


async def handle_record_blueprint(ingest: Ingest, cmd: RecordBlueprint) -> Reply:
    return await append_records(ingest, _blueprints([_record_of(cmd, BlueprintData)], cmd.request_id))


async def _change_directory(
    ingest: Ingest, decide: Callable[[ContributionsDirectory], Sequence[DirectoryEvent]]
) -> tuple[Sequence[DirectoryEvent], int]:
    """Directory changes take turns in a process and decide against the stream's latest directory.

    Two replicas saving the same entry at once both append it: each event replaces the entry
    whole, so the later one in the stream is the entry, as with any two saves.
    """
    folded = ingest.contributions
    async with folded.changes:
        if folded.state.last_seq == 0:
            # Never read (or still empty): one consumer reads a whole directory faster than direct gets.
            await folded.load(ingest.js)
        await folded.catch_up(ingest.js)
        events = decide(folded.state)
        appended = await asyncio.gather(*(ingest.append(e, f"directory:{e.event_id}") for e in events))
        await folded.catch_up(ingest.js)
    return events, max((a.seq for a in appended), default=0)


async def handle_save_directory(ingest: Ingest, cmd: SaveDirectory) -> Reply:
    events, seq = await _change_directory(
        ingest, lambda state: directory_events(cmd, state, new_id=new_event_id, at=now())
    )
    given = sum(len(x) for x in (cmd.users, cmd.companies, cmd.releases, cmd.repos))
    given += len(cmd.project_types) + len(cmd.module_groups)
    return Reply(status=200, seq=seq, result={"saved": len(events), "unchanged": given - len(events)})


async def handle_remove_directory_entry(ingest: Ingest, cmd: RemoveDirectoryEntry) -> Reply:
    _, seq = await _change_directory(
        ingest, lambda state: [removal_event(cmd, state, event_id=new_event_id(), at=now())]
    )
    return Reply(status=204, seq=seq)


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    ImportCommits: handle_import_commits,
    RecordMarks: handle_record_marks,
    RecordMark: handle_record_mark,
    RecordEmails: handle_record_emails,
    RecordEmail: handle_record_email,
    RecordBlueprints: handle_record_blueprints,
    RecordBlueprint: handle_record_blueprint,
    SaveDirectory: handle_save_directory,
    RemoveDirectoryEntry: handle_remove_directory_entry,
}
