"""The media-usage read model: every usage reported and not deleted (a status rule may hide one from
a read, never from the table), and the notification each change of a media's usages leaves behind.

``fold_media_usages`` is pure and takes time only from events; ``reported_usages`` is the one place
the status rules live (reads and notifications both use it). ``apply_media_usage`` loads the rows a
batch can touch, folds it and writes back in the batch's transaction, with each changed media's new
usage list; ``publish_notifications`` sends those after the commit.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, TypeVar

import asyncpg
import msgspec
from nats.js import JetStreamContext

from services.projector.media_counts import apply_count_change, count_change
from shared.bus import NOTIFY_MAX_MESSAGE, NOTIFY_STREAM
from shared.db import Conn
from shared.events import (
    AnyEvent,
    MediaUsageDeleted,
    MediaUsagesDeleted,
    MediaUsagesRecorded,
    MediaUsageStatusUpdated,
)
from shared.events.media import RecordedUsage

FILTERS = ["usagehub.events.media.>"]
TABLES = ("media_usages", "media_usage_notifications", "media_usage_counts")
REMOVED = "removed"
PUBLISHED = "published"
PENDING = "pending"
METADATA_KEYS = {
    "digital": "digitalUsageMetadata",
    "print": "printUsageMetadata",
    "syndication": "syndicationUsageMetadata",
    "front": "frontUsageMetadata",
    "download": "downloadUsageMetadata",
}
NOTIFY_PREFIX = "usagehub.notify.media."
# Room for the headers: a document must fit the stream's largest message, or it could never be sent.
MAX_NOTIFICATION = NOTIFY_MAX_MESSAGE - 16 * 1024
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class UsageRow:
    usage_id: str
    media_id: str
    grouping: str
    platform: str
    status: str
    # JSON as shown by the API, kept as text so reads pass it through untouched.
    references: str
    metadata: str
    date_added: datetime
    last_modified: datetime
    date_removed: datetime | None
    # Stream position of the event that last changed this usage.
    position: int


@dataclass(frozen=True, slots=True)
class MediaUsagesState:
    usages: Mapping[str, UsageRow] = field(default_factory=dict)
    # Media whose usages the folded events changed: (position, time) of the last such event.
    changed: Mapping[str, tuple[int, datetime]] = field(default_factory=dict)


# --- the status rules ---------------------------------------------------------------------------


class Ruled(Protocol):
    @property
    def usage_id(self) -> str: ...
    @property
    def media_id(self) -> str: ...
    @property
    def grouping(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def last_modified(self) -> datetime: ...


R = TypeVar("R", bound=Ruled)


def reported_usages(usages: Iterable[R]) -> list[R]:
    """The usages a read reports, newest change first (then by id).

    Usages *match* when they share grouping and media id. A published usage is always reported.
    Where a removed usage matches another, only published usages of those are reported; otherwise a
    pending usage is reported only when no published usage matches it. Anything else is reported.
    """
    matching: dict[tuple[str, str], list[R]] = {}
    for usage in usages:
        matching.setdefault((usage.media_id, usage.grouping), []).append(usage)
    shown: list[R] = []
    for members in matching.values():
        statuses = {m.status for m in members}
        only_published = len(members) > 1 and REMOVED in statuses
        for m in members:
            if m.status == PUBLISHED:
                shown.append(m)
            elif only_published or (m.status == PENDING and PUBLISHED in statuses):
                continue
            else:
                shown.append(m)
    # Two stable sorts: by id, then newest change first (the cheapest way to that order).
    shown.sort(key=attrgetter("usage_id"))
    shown.sort(key=attrgetter("last_modified"), reverse=True)
    return shown


# --- documents ----------------------------------------------------------------------------------


def iso_seconds(at: datetime) -> str:
    """``2015-11-27T15:56:51Z``: the API's times (UTC, whole seconds)."""
    at = at.astimezone(UTC)
    # Field by field: strftime writes year 1 as "1", not "0001".
    return f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:{at.second:02d}Z"


def usage_document(row: UsageRow) -> dict[str, Any]:
    """A usage as the API shows it (the seed's field order); JSON columns pass through as they are."""
    doc: dict[str, Any] = {
        "id": row.usage_id,
        "references": msgspec.Raw(row.references),
        "platform": row.platform,
        "media": "image",
        "status": row.status,
        METADATA_KEYS[row.platform]: msgspec.Raw(row.metadata),
        "dateAdded": iso_seconds(row.date_added),
    }
    if row.date_removed is not None:
        doc["dateRemoved"] = iso_seconds(row.date_removed)
    doc["lastModified"] = iso_seconds(row.last_modified)
    return doc


def usage_json(row: UsageRow) -> str:
    return _encoder.encode(usage_document(row)).decode()


class ListedUsage(NamedTuple):
    """What reads and notifications need of a usage: what the rules look at, and its document.
    A tuple, not a dataclass: a read makes one per row, and a frozen dataclass's ``__init__`` is
    several times slower."""

    usage_id: str
    media_id: str
    grouping: str
    status: str
    last_modified: datetime
    document: str  # usage_json of its row


def listed(row: UsageRow) -> ListedUsage:
    return ListedUsage(
        row.usage_id, row.media_id, row.grouping, row.status, row.last_modified, usage_json(row)
    )


def notification_document(media_id: str, usages: Iterable[ListedUsage], position: int, at: datetime) -> bytes:
    """What subscribers get: the media's usages as a read reports them, in the shape of the search
    index document (``usages``, each with ``isRemoved`` first), and the stream position it reflects.
    When that would not fit one message, ``usages`` is null and ``usageCount`` says how many."""
    shown = [
        msgspec.Raw('{"isRemoved":' + ("true" if u.status == REMOVED else "false") + "," + u.document[1:])
        for u in reported_usages(usages)
    ]
    head = {"id": media_id, "position": position, "lastModified": iso_seconds(at)}
    document = _encoder.encode({**head, "usages": shown})
    if len(document) <= MAX_NOTIFICATION:
        return document
    # Too many usages for one message: say how many, and let the subscriber read them (GET).
    return _encoder.encode({**head, "usages": None, "usageCount": len(shown)})


def subject_token(media_id: str) -> str:
    """A media id as one NATS subject token: as it is when it is only letters, digits, ``-`` and
    ``_``; otherwise ``~`` and the hex of its UTF-8 (``~`` never appears in the first kind)."""
    return media_id if _PLAIN_TOKEN.match(media_id) else "~" + media_id.encode().hex()


def notify_subject(media_id: str) -> str:
    return NOTIFY_PREFIX + subject_token(media_id)


# --- the fold -----------------------------------------------------------------------------------


def _json(value: object) -> str:
    return _encoder.encode(value).decode()


def _recorded_row(usage: RecordedUsage, before: UsageRow | None, seq: int, at: datetime) -> UsageRow:
    # A usage seen for the first time, or again after it was removed or deleted, is added (anew).
    kept = before is not None and before.status != REMOVED
    date_added = before.date_added if before is not None and kept else (usage.date_added or at)
    return UsageRow(
        usage_id=usage.usage_id,
        media_id=usage.media_id,
        grouping=usage.grouping,
        platform=usage.platform,
        status=usage.status,
        references=_json(usage.references),
        metadata=_json(usage.metadata),
        date_added=date_added,
        last_modified=at,
        date_removed=at if usage.status == REMOVED else None,
        position=seq,
    )


def _as_before(row: UsageRow, before: UsageRow) -> UsageRow:
    """``row`` with what a report again always changes (its time and position) taken from ``before``:
    equal to ``before`` when the report says nothing new."""
    return replace(
        row,
        last_modified=before.last_modified,
        date_removed=before.date_removed,
        position=before.position,
    )


class _Working:
    """One batch's usages being folded in place, indexed by grouping and by media, so an event costs
    what it touches rather than what the batch loaded. Only the fold below ever sees it."""

    def __init__(self, state: MediaUsagesState) -> None:
        self.usages = dict(state.usages)
        self.changed = dict(state.changed)
        self.by_grouping: dict[str, set[str]] = {}
        self.by_media: dict[str, set[str]] = {}
        for row in self.usages.values():
            self._index(row)

    def _index(self, row: UsageRow) -> None:
        self.by_grouping.setdefault(row.grouping, set()).add(row.usage_id)
        self.by_media.setdefault(row.media_id, set()).add(row.usage_id)

    def put(self, row: UsageRow, seq: int, at: datetime) -> None:
        self.usages[row.usage_id] = row
        self._index(row)
        self.changed[row.media_id] = (seq, at)

    def drop(self, usage_id: str, seq: int, at: datetime) -> None:
        row = self.usages.pop(usage_id)
        self.by_grouping[row.grouping].discard(usage_id)
        self.by_media[row.media_id].discard(usage_id)
        self.changed[row.media_id] = (seq, at)

    def apply(self, seq: int, event: AnyEvent) -> None:
        at = event.occurred_at
        match event:
            case MediaUsagesRecorded(groups=groups):
                for group in groups:
                    now_there = {u.usage_id for u in group.usages}
                    for usage in group.usages:
                        before = self.usages.get(usage.usage_id)
                        row = _recorded_row(usage, before, seq, at)
                        if before is not None and _as_before(row, before) == before:
                            continue  # reported again as it is: no change, no new lastModified
                        self.put(row, seq, at)
                    for usage_id in sorted(self.by_grouping.get(group.grouping, set()) - now_there):
                        row = self.usages[usage_id]
                        if row.status == group.status:
                            removed = replace(
                                row, status=REMOVED, date_removed=at, last_modified=at, position=seq
                            )
                            self.put(removed, seq, at)
            case MediaUsagesDeleted(media_id=media_id):
                for usage_id in sorted(self.by_media.get(media_id, set())):
                    self.drop(usage_id, seq, at)
            case MediaUsageDeleted(media_id=media_id, usage_id=usage_id):
                if usage_id in self.usages and self.usages[usage_id].media_id == media_id:
                    self.drop(usage_id, seq, at)
            case MediaUsageStatusUpdated(media_id=media_id, usage_id=usage_id, status=status):
                found = self.usages.get(usage_id)
                if found is not None and found.media_id == media_id:
                    still_removed = found.status == REMOVED and status == REMOVED
                    removed_at = found.date_removed if still_removed else (at if status == REMOVED else None)
                    updated = replace(
                        found, status=status, date_removed=removed_at, last_modified=at, position=seq
                    )
                    self.put(updated, seq, at)


def fold_media_usage_events(
    state: MediaUsagesState, events: Iterable[tuple[int, AnyEvent]]
) -> MediaUsagesState:
    """``state`` after ``events`` (stream position, event), in order; ``state`` itself is not changed."""
    working = _Working(state)
    for seq, event in events:
        working.apply(seq, event)
    if working.changed == state.changed:
        return state  # nothing the events name is here: nothing changed
    return MediaUsagesState(usages=working.usages, changed=working.changed)


def fold_media_usages(state: MediaUsagesState, seq: int, event: AnyEvent) -> MediaUsagesState:
    return fold_media_usage_events(state, [(seq, event)])


# --- the read model in Postgres -----------------------------------------------------------------

# The columns ``row_of`` reads, with the JSON columns as text.
USAGE_COLUMNS = (
    "usage_id, media_id, grouping, platform, status, usage_references::text AS usage_references,"
    " metadata::text AS metadata, date_added, last_modified, date_removed, position"
)


def row_of(record: asyncpg.Record) -> UsageRow:
    return UsageRow(
        usage_id=record["usage_id"],
        media_id=record["media_id"],
        grouping=record["grouping"],
        platform=record["platform"],
        status=record["status"],
        references=record["usage_references"],
        metadata=record["metadata"],
        date_added=record["date_added"],
        last_modified=record["last_modified"],
        date_removed=record["date_removed"],
        position=record["position"],
    )


# The columns ``listed_of`` reads: ListedUsage's fields, in their order.
LISTED_COLUMNS = ", ".join(
    "document::text AS document" if name == "document" else name for name in ListedUsage._fields
)


def listed_of(record: asyncpg.Record) -> ListedUsage:
    return ListedUsage._make(record.values())  # LISTED_COLUMNS is ListedUsage's fields, in order


async def listed_usages(conn: Conn, media_ids: Sequence[str]) -> dict[str, list[ListedUsage]]:
    records = await conn.fetch(
        f"SELECT {LISTED_COLUMNS} FROM media_usages WHERE media_id = ANY($1::text[])", media_ids
    )
    out: dict[str, list[ListedUsage]] = {m: [] for m in media_ids}
    for record in records:
        out[record["media_id"]].append(listed_of(record))
    return out


async def _load(conn: Conn, events: list[tuple[int, AnyEvent]]) -> MediaUsagesState:
    """Every row the batch can change: whole groupings it reports, media it deletes, usages it names."""
    groupings: set[str] = set()
    media: set[str] = set()
    ids: set[str] = set()
    for _, event in events:
        match event:
            case MediaUsagesRecorded(groups=groups):
                groupings.update(g.grouping for g in groups)
            case MediaUsagesDeleted(media_id=media_id):
                media.add(media_id)
            case MediaUsageDeleted(usage_id=usage_id) | MediaUsageStatusUpdated(usage_id=usage_id):
                ids.add(usage_id)
    records = await conn.fetch(
        f"SELECT {USAGE_COLUMNS} FROM media_usages WHERE grouping = ANY($1::text[])"
        " OR media_id = ANY($2::text[]) OR usage_id = ANY($3::text[])",
        sorted(groupings),
        sorted(media),
        sorted(ids),
    )
    return MediaUsagesState(usages={r["usage_id"]: row_of(r) for r in records})


def _values(row: UsageRow) -> tuple[Any, ...]:
    return (
        row.usage_id,
        row.media_id,
        row.grouping,
        row.platform,
        row.status,
        row.references,
        row.metadata,
        usage_json(row),
        row.date_added,
        row.last_modified,
        row.date_removed,
        row.position,
    )


async def apply_media_usage(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    before = await _load(conn, events)
    after = fold_media_usage_events(before, events)
    if not after.changed:
        return
    await apply_count_change(conn, count_change(before.usages.values(), after.usages.values()))
    gone = sorted(set(before.usages) - set(after.usages))
    if gone:
        await conn.execute("DELETE FROM media_usages WHERE usage_id = ANY($1::text[])", gone)
    upserts = [_values(row) for k, row in sorted(after.usages.items()) if before.usages.get(k) != row]
    if upserts:
        await conn.executemany(
            "INSERT INTO media_usages (usage_id, media_id, grouping, platform, status, usage_references,"
            " metadata, document, date_added, last_modified, date_removed, position)"
            " VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8::json, $9, $10, $11, $12)"
            " ON CONFLICT (usage_id) DO UPDATE SET media_id = EXCLUDED.media_id,"
            " grouping = EXCLUDED.grouping, platform = EXCLUDED.platform, status = EXCLUDED.status,"
            " usage_references = EXCLUDED.usage_references, metadata = EXCLUDED.metadata,"
            " document = EXCLUDED.document,"
            " date_added = EXCLUDED.date_added, last_modified = EXCLUDED.last_modified,"
            " date_removed = EXCLUDED.date_removed, position = EXCLUDED.position",
            upserts,
        )
    changed = sorted(after.changed)
    current = await listed_usages(conn, changed)
    notifications = [
        (media_id, position, notification_document(media_id, current[media_id], position, at).decode())
        for media_id in changed
        for position, at in [after.changed[media_id]]
    ]
    await conn.executemany(
        "INSERT INTO media_usage_notifications (media_id, position, document) VALUES ($1, $2, $3)"
        " ON CONFLICT (media_id) DO UPDATE SET position = EXCLUDED.position, document = EXCLUDED.document",
        notifications,
    )


# --- notifications, after the commit ------------------------------------------------------------

_PUBLISH_CHUNK = 256


async def publish_notifications(js: JetStreamContext, conn: Conn) -> None:
    """Publish what committed batches left, oldest first, then forget it.

    The message id is the media and the position its document reflects, and the document for a
    position never changes, so a crash between publishing and forgetting only repeats the same
    message (which JetStream drops within its duplicate window).
    """
    while True:
        pending = await conn.fetch(
            "SELECT media_id, position, document FROM media_usage_notifications ORDER BY position, media_id"
            " LIMIT $1",
            _PUBLISH_CHUNK,
        )
        if not pending:
            return
        await asyncio.gather(
            *(
                js.publish(
                    notify_subject(r["media_id"]),
                    r["document"].encode(),
                    stream=NOTIFY_STREAM,
                    headers={"Nats-Msg-Id": f"{subject_token(r['media_id'])}:{r['position']}"},
                )
                for r in pending
            )
        )
        await conn.execute(
            "DELETE FROM media_usage_notifications n"
            " USING unnest($1::text[], $2::bigint[]) AS p(media_id, position)"
            " WHERE n.media_id = p.media_id AND n.position = p.position",
            [r["media_id"] for r in pending],
            [r["position"] for r in pending],
        )
        if len(pending) < _PUBLISH_CHUNK:
            return
