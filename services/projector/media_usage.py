"""The media-usage read model: every usage reported and not deleted (a status rule may hide one from
a read, never from the table), and the notification each change of a media's usages leaves behind.

``fold_media_usages`` is pure and takes time only from events; ``reported_usages`` is the one place
the status rules live (reads and notifications both use it). ``apply_media_usage`` loads the rows a
batch can touch, folds it and writes back in the batch's transaction, with each changed media's new
usage list; ``publish_notifications`` sends those after the commit.
"""

from __future__ import annotations

import asyncio
import functools
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
    usages = list(usages)
    if len(usages) == 1:
        return usages  # alone, a usage matches nothing: always reported (most media, a cheap answer)
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


# Cached: a batch renders the same few times (its events' times, the clients' dateAdded) for every
# usage, and rendering one costs more than looking it up. Equal instants give equal text, whatever
# their zone, so a hit for an equal datetime in another zone is still right.
@functools.lru_cache(maxsize=16384)
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
        # Only deletes of a media's usages need this one: made at the first, kept from then on.
        self._by_media: dict[str, set[str]] | None = None
        for row in self.usages.values():
            self.by_grouping.setdefault(row.grouping, set()).add(row.usage_id)

    def by_media(self, media_id: str) -> set[str]:
        if self._by_media is None:
            self._by_media = {}
            for row in self.usages.values():
                self._by_media.setdefault(row.media_id, set()).add(row.usage_id)
        return self._by_media.get(media_id, set())

    def put(self, row: UsageRow, seq: int, at: datetime) -> None:
        self.usages[row.usage_id] = row
        self.by_grouping.setdefault(row.grouping, set()).add(row.usage_id)
        if self._by_media is not None:
            self._by_media.setdefault(row.media_id, set()).add(row.usage_id)
        self.changed[row.media_id] = (seq, at)

    def drop(self, usage_id: str, seq: int, at: datetime) -> None:
        row = self.usages.pop(usage_id)
        self.by_grouping[row.grouping].discard(usage_id)
        if self._by_media is not None:
            self._by_media[row.media_id].discard(usage_id)
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
                for usage_id in sorted(self.by_media(media_id)):
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


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What a batch starts from: the fold's state, the document of each usage loaded, and the media
    whose every usage was loaded (a notification for those is made without reading them back)."""

    state: MediaUsagesState
    documents: dict[str, str]
    whole_media: frozenset[str]


async def _load(conn: Conn, events: list[tuple[int, AnyEvent]]) -> _Loaded:
    """Every row the batch can change (whole groupings it reports, media it deletes, usages it
    names) and every usage of each media it names."""
    groupings: set[str] = set()
    media: set[str] = set()
    ids: set[str] = set()
    for _, event in events:
        match event:
            case MediaUsagesRecorded(groups=groups):
                for group in groups:
                    groupings.add(group.grouping)
                    for usage in group.usages:
                        media.add(usage.media_id)
                        ids.add(usage.usage_id)
            case MediaUsagesDeleted(media_id=media_id):
                media.add(media_id)
            case (
                MediaUsageDeleted(media_id=media_id, usage_id=usage_id)
                | MediaUsageStatusUpdated(media_id=media_id, usage_id=usage_id)
            ):
                media.add(media_id)
                ids.add(usage_id)
    # Joins with the arrays, never "column = ANY(array)": once Postgres plans this statement
    # generically (from its sixth run on a connection) it may scan the table testing each row against
    # every element, which a rebuild's batches (ten thousands of keys, a table it is filling) turned
    # into minutes per batch. A join is an index probe per key, or a hash join, at worst.
    records = await conn.fetch(
        "WITH wanted AS ("
        " SELECT u.usage_id FROM media_usages u JOIN unnest($1::text[]) AS k(v) ON u.grouping = k.v"
        " UNION SELECT u.usage_id FROM media_usages u JOIN unnest($2::text[]) AS k(v) ON u.media_id = k.v"
        " UNION SELECT unnest($3::text[]))"
        f" SELECT {USAGE_COLUMNS}, document::text AS document FROM media_usages JOIN wanted USING (usage_id)",
        list(groupings),
        list(media),
        list(ids),
    )
    return _Loaded(
        state=MediaUsagesState(usages={r["usage_id"]: row_of(r) for r in records}),
        documents={r["usage_id"]: r["document"] for r in records},
        whole_media=frozenset(media),
    )


def _listed_in_memory(
    usages: Iterable[UsageRow], documents: Mapping[str, str], media_ids: Iterable[str]
) -> dict[str, list[ListedUsage]]:
    """The usages of each of ``media_ids`` among ``usages`` (all of each media's), as a read lists them."""
    out: dict[str, list[ListedUsage]] = {m: [] for m in media_ids}
    for row in usages:
        found = out.get(row.media_id)
        if found is not None:
            found.append(
                ListedUsage(
                    row.usage_id,
                    row.media_id,
                    row.grouping,
                    row.status,
                    row.last_modified,
                    documents[row.usage_id],
                )
            )
    return out


_ROW_COLUMNS = [
    "usage_id",
    "media_id",
    "grouping",
    "platform",
    "status",
    "usage_references",
    "metadata",
    "document",
    "date_added",
    "last_modified",
    "date_removed",
    "position",
]


def _record(row: UsageRow, document: str) -> tuple[Any, ...]:
    return (
        row.usage_id,
        row.media_id,
        row.grouping,
        row.platform,
        row.status,
        row.references,
        row.metadata,
        document,
        row.date_added,
        row.last_modified,
        row.date_removed,
        row.position,
    )


async def _write_usages(conn: Conn, new: list[tuple[Any, ...]], changed: list[tuple[Any, ...]]) -> None:
    """Rows the table cannot have yet by COPY (a rebuild's are nearly all of these: in Postgres about
    half the work of an INSERT, and its binary records cost the client less than arrays); the others
    updated in place, in one statement (executemany is a round of work per row)."""
    if new:
        await conn.copy_records_to_table("media_usages", records=new, columns=_ROW_COLUMNS)
    if changed:
        await conn.execute(
            "UPDATE media_usages u SET media_id = v.media_id, grouping = v.grouping,"
            " platform = v.platform, status = v.status, usage_references = v.usage_references,"
            " metadata = v.metadata, document = v.document, date_added = v.date_added,"
            " last_modified = v.last_modified, date_removed = v.date_removed, position = v.position"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::json[], $7::json[], $8::json[],"
            " $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::bigint[])"
            " AS v(usage_id, media_id, grouping, platform, status, usage_references, metadata, document,"
            " date_added, last_modified, date_removed, position)"
            " WHERE u.usage_id = v.usage_id",
            *(list(column) for column in zip(*changed, strict=True)),
        )


async def apply_media_usage(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    loaded = await _load(conn, events)
    before = loaded.state
    after = fold_media_usage_events(before, events)
    if not after.changed:
        return
    await apply_count_change(conn, count_change(before.usages.values(), after.usages.values()))
    gone = sorted(set(before.usages) - set(after.usages))
    if gone:
        await conn.execute(
            "DELETE FROM media_usages u USING unnest($1::text[]) AS g(v) WHERE u.usage_id = g.v", gone
        )
    documents = dict(loaded.documents)
    # A usage the load did not find is not in the table: the load took every usage the batch names
    # (and no event makes a usage it does not name).
    new: list[tuple[Any, ...]] = []
    changed_rows: list[tuple[Any, ...]] = []
    for usage_id, row in after.usages.items():
        was = before.usages.get(usage_id)
        if was != row:
            documents[usage_id] = document = usage_json(row)
            (new if was is None else changed_rows).append(_record(row, document))
    await _write_usages(conn, new, changed_rows)
    # A media the batch named was loaded whole: its list is in memory. One it did not name (a
    # digital write no longer showing it) may have usages that were not loaded: read it back.
    changed = sorted(after.changed)
    in_memory = [m for m in changed if m in loaded.whole_media]
    current = _listed_in_memory(after.usages.values(), documents, in_memory)
    read_back = [m for m in changed if m not in loaded.whole_media]
    if read_back:
        current.update(await listed_usages(conn, read_back))
    # At most one row per media: the one a batch before left (not yet published) gives way.
    await conn.execute(
        "DELETE FROM media_usage_notifications n USING unnest($1::text[]) AS c(v) WHERE n.media_id = c.v",
        changed,
    )
    await conn.copy_records_to_table(
        "media_usage_notifications",
        records=[
            (media_id, position, notification_document(media_id, current[media_id], position, at).decode())
            for media_id in changed
            for position, at in [after.changed[media_id]]
        ],
        columns=["media_id", "position", "document"],
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
