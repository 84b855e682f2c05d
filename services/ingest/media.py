"""Media-usage decisions: validate a write as the original service reads its body (every problem, by
its path in the body), give each usage its deterministic id, and decide the event. Pure, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from services.ingest.rejected import Rejected
from shared.commands import (
    DeleteMediaUsage,
    DeleteMediaUsages,
    RecordDigitalUsages,
    RecordDownloadUsage,
    RecordFrontUsage,
    RecordPrintUsages,
    RecordSyndicationUsage,
    UpdateMediaUsageStatus,
)
from shared.events import MediaUsageDeleted, MediaUsagesDeleted, MediaUsagesRecorded, MediaUsageStatusUpdated
from shared.events.media import (
    DigitalUsageMetadata,
    DownloadUsageMetadata,
    FrontUsageMetadata,
    PrintImageSize,
    PrintUsageMetadata,
    RecordedUsage,
    SyndicationUsageMetadata,
    UsageGroup,
    UsageReference,
)

# Every status the original service knows; ``removed`` is also what a usage becomes when its
# publisher stops reporting it.
STATUSES = ("pending", "published", "removed", "syndicated", "downloaded", "failed", "unknown")
CONTENT_STATUSES = ("pending", "published")
REFERENCE_TYPES = ("indesign", "frontend", "composer", "syndication", "front", "download")
MAX_ID = 200
MAX_TEXT = 2000
MAX_MEDIA_PER_CONTENT = 1000
MAX_REFERENCES = 50
MAX_PROBLEMS = 1000
_INT32 = 2**31
_INT64 = 2**63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


# --- reading a body, collecting every problem ---------------------------------------------------


@dataclass
class Problems:
    """What is wrong with a body, each as ``path: problem``, in body order."""

    found: list[str] = field(default_factory=list)

    def add(self, path: str, problem: str) -> None:
        self.found.append(f"{path}: {problem}")

    def raise_any(self) -> None:
        if not self.found:
            return
        listed = self.found[:MAX_PROBLEMS]
        if len(self.found) > MAX_PROBLEMS:
            # The refusal must fit one NATS reply (1 MiB) whatever the body: the rest are counted.
            listed.append(f"and {len(self.found) - MAX_PROBLEMS} more problems")
        raise Rejected(400, "; ".join(listed))


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def valid_id(value: str) -> bool:
    """A media or content id: 1-200 printable ASCII characters, no ``/`` (it is one path segment)."""
    return 0 < len(value) <= MAX_ID and all(0x21 <= ord(c) <= 0x7E and c != "/" for c in value)


def valid_usage_id(value: str) -> bool:
    """What a usage id can be: a grouping (made of ids and ``/``), ``_`` and an MD5."""
    return 0 < len(value) <= 2 * MAX_ID and all(0x21 <= ord(c) <= 0x7E for c in value)


def _text_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
        return "must not contain control characters"
    return None


def _url_problem(value: str) -> str | None:
    if len(value) > MAX_TEXT or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return f"must be an absolute http(s) URL of at most {MAX_TEXT} characters"
    try:
        parts = urlsplit(value)
        _ = parts.port  # reading the port validates it
    except ValueError:
        return "must be an absolute http(s) URL"
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return "must be an absolute http(s) URL"
    return None


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 date-time (UTC when it has no offset) or epoch milliseconds, as the original's
    Joda reader takes them; ``None`` when it is neither."""
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
            return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            return None
    return None


@dataclass
class Body:
    """One JSON object of the body at ``path``; each read reports its own problems."""

    fields: Mapping[str, Any]
    path: str
    problems: Problems

    def _get(self, key: str, required: bool) -> Any:
        value = self.fields.get(key)
        if value is None and required:
            self.problems.add(_at(self.path, key), "required")
        return value

    def _typed(self, key: str, required: bool, check: Callable[[Any], T | None], expected: str) -> T | None:
        value = self._get(key, required)
        if value is None:
            return None
        checked = check(value)
        if checked is None:
            self.problems.add(_at(self.path, key), f"must be {expected}")
        return checked

    def text(self, key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
        value = self._typed(key, required, lambda v: v if isinstance(v, str) else None, "a string")
        if value is not None and (problem := _text_problem(value, limit)):
            self.problems.add(_at(self.path, key), problem)
            return None
        return value

    def ident(self, key: str) -> str | None:
        value = self._typed(key, True, lambda v: v if isinstance(v, str) else None, "a string")
        if value is not None and not valid_id(value):
            self.problems.add(
                _at(self.path, key), f"must be 1 to {MAX_ID} printable ASCII characters, without '/'"
            )
            return None
        return value

    def url(self, key: str, *, required: bool = True) -> str | None:
        value = self._typed(key, required, lambda v: v if isinstance(v, str) else None, "a string")
        if value is not None and (problem := _url_problem(value)):
            self.problems.add(_at(self.path, key), problem)
            return None
        return value

    def integer(self, key: str, *, bits: int = 32) -> int | None:
        bound = _INT32 if bits == 32 else _INT64

        def check(v: Any) -> int | None:
            ok = isinstance(v, int) and not isinstance(v, bool) and -bound <= v < bound
            return v if ok else None

        return self._typed(key, True, check, f"a {bits}-bit integer")

    def flag(self, key: str) -> bool | None:
        return self._typed(key, False, lambda v: v if isinstance(v, bool) else None, "true or false")

    def time(self, key: str) -> datetime | None:
        return self._typed(key, True, parse_time, "a date-time, e.g. 2014-07-25T15:30:00Z")

    def choice(self, key: str, allowed: tuple[str, ...] = STATUSES) -> str | None:
        # The original reads statuses (and reference types) case-insensitively.
        return self._typed(
            key,
            True,
            lambda v: v.lower() if isinstance(v, str) and v.lower() in allowed else None,
            "one of " + ", ".join(allowed),
        )

    def obj(self, key: str, *, required: bool = True) -> Body | None:
        value = self._typed(key, required, lambda v: v if isinstance(v, dict) else None, "an object")
        return None if value is None else Body(value, _at(self.path, key), self.problems)

    def array(self, key: str, *, required: bool = True, limit: int) -> list[Any] | None:
        value = self._typed(key, required, lambda v: v if isinstance(v, list) else None, "an array")
        if value is not None and len(value) > limit:
            self.problems.add(_at(self.path, key), f"must have at most {limit} items")
            return None
        return value


def _root(value: object, name: str, problems: Problems) -> Body | None:
    """The object under a top-level key (``data`` of the syndication, front and download bodies)."""
    return Body({name: value}, "", problems).obj(name)


# --- ids ----------------------------------------------------------------------------------------


def md5(*parts: object) -> str:
    """MD5 of the parts joined with ``_``, as the original service builds its ids (not a security use)."""
    text = "_".join(str(p) for p in parts)
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def iso_millis(at: datetime) -> str:
    """``2014-07-25T15:30:00.000Z``: how the original prints a date it hashes."""
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at:%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def epoch_millis(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def usage_id(grouping: str, *parts: object) -> str:
    return f"{grouping}_{md5(*parts)}"


# --- references the original derives from metadata ------------------------------------------------


def digital_references(meta: DigitalUsageMetadata) -> tuple[UsageReference, ...]:
    frontend = UsageReference("frontend", meta.web_url, meta.web_title)
    if meta.composer_url is None:
        return (frontend,)
    return frontend, UsageReference("composer", meta.composer_url)


def print_references(meta: PrintUsageMetadata) -> tuple[UsageReference, ...]:
    day = f"{meta.issue_date.year:04d}-{meta.issue_date:%m-%d}"
    title = ", ".join([day, meta.publication_name, meta.section_name, f"Page {meta.page_number}"])
    return (UsageReference("indesign", name=title),)


# --- decisions ----------------------------------------------------------------------------------


def _recorded(
    platform: str, groups: list[UsageGroup], cmd: Any, event_id: str, at: datetime
) -> MediaUsagesRecorded:
    return MediaUsagesRecorded(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        platform=platform,
        groups=tuple(groups),
    )


def _references(items: list[Any], path: str, problems: Problems) -> tuple[UsageReference, ...]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.add(f"{path}[{i}]", "must be an object")
            continue
        ref = Body(item, f"{path}[{i}]", problems)
        kind, uri, name = (
            ref.choice("type", REFERENCE_TYPES),
            ref.url("uri", required=False),
            ref.text("name", required=False),
        )
        if kind is not None:
            out.append(UsageReference(kind, uri, name))
    return tuple(out)


def _digital_metadata(body: Body | None) -> DigitalUsageMetadata | None:
    if body is None:
        return None
    title, url, section = body.text("webTitle"), body.url("webUrl"), body.text("sectionId", limit=MAX_ID)
    composer = body.url("composerUrl", required=False)
    if title is None or url is None or section is None:
        return None
    return DigitalUsageMetadata(title, url, section, composer)


def record_digital(cmd: RecordDigitalUsages, *, event_id: str, at: datetime) -> MediaUsagesRecorded:
    """The usages of one piece of content now: grouping ``composer/<contentId>``, and for each media
    ``md5(mediaId_status)``, as the original builds them from content."""
    problems = Problems()
    body = Body(
        {
            "contentId": cmd.content_id,
            "status": cmd.status,
            "mediaIds": cmd.media_ids,
            "digitalUsageMetadata": cmd.digital_usage_metadata,
            "references": cmd.references,
        },
        "",
        problems,
    )
    content_id = body.ident("contentId")
    status = body.choice("status", CONTENT_STATUSES)
    media_ids = body.array("mediaIds", limit=MAX_MEDIA_PER_CONTENT)
    meta = _digital_metadata(body.obj("digitalUsageMetadata"))
    given = body.array("references", required=False, limit=MAX_REFERENCES)
    references = None if given is None else _references(given, "references", problems)
    media: list[str] = []
    for i, media_id in enumerate(media_ids or []):
        if not isinstance(media_id, str) or not valid_id(media_id):
            problems.add(
                f"mediaIds[{i}]",
                f"must be a media id (1 to {MAX_ID} printable ASCII characters, without '/')",
            )
        elif media_id not in media:
            media.append(media_id)
    problems.raise_any()
    assert content_id is not None and status is not None and meta is not None
    grouping = f"composer/{content_id}"
    refs = digital_references(meta) if references is None else references
    usages = tuple(
        RecordedUsage(
            usage_id=usage_id(grouping, media_id, status),
            grouping=grouping,
            media_id=media_id,
            platform="digital",
            status=status,
            references=refs,
            digital_usage_metadata=meta,
        )
        for media_id in media
    )
    return _recorded("digital", [UsageGroup(grouping, status, usages)], cmd, event_id, at)


def _print_metadata(body: Body | None) -> PrintUsageMetadata | None:
    if body is None:
        return None
    section_name, issue_date = body.text("sectionName"), body.time("issueDate")
    page_number, story_name = body.integer("pageNumber"), body.text("storyName")
    publication_code = body.text("publicationCode", limit=MAX_ID)
    publication_name = body.text("publicationName")
    layout_id, edition = body.integer("layoutId", bits=64), body.integer("edition")
    size, ordered_by = _print_size(body.obj("size")), body.text("orderedBy")
    section_code = body.text("sectionCode", limit=MAX_ID)
    notes, source = body.text("notes", required=False), body.text("source", required=False)
    if (
        section_name is None
        or issue_date is None
        or page_number is None
        or story_name is None
        or publication_code is None
        or publication_name is None
        or layout_id is None
        or edition is None
        or size is None
        or ordered_by is None
        or section_code is None
    ):
        return None
    return PrintUsageMetadata(
        section_name=section_name,
        issue_date=issue_date,
        page_number=page_number,
        story_name=story_name,
        publication_code=publication_code,
        publication_name=publication_name,
        layout_id=layout_id,
        edition=edition,
        size=size,
        ordered_by=ordered_by,
        section_code=section_code,
        notes=notes,
        source=source,
    )


def _print_size(body: Body | None) -> PrintImageSize | None:
    if body is None:
        return None
    x, y = body.integer("x"), body.integer("y")
    return None if x is None or y is None else PrintImageSize(x, y)


def _print_usage(body: Body) -> RecordedUsage | None:
    date_added = body.time("dateAdded")
    media_id = body.ident("mediaId")
    meta = _print_metadata(body.obj("printUsageMetadata"))
    body.text("containerId", limit=MAX_ID)  # required by the original; not part of a usage
    body.text("usageId", limit=MAX_ID)
    status = body.choice("usageStatus")
    if date_added is None or media_id is None or meta is None or status is None:
        return None
    parts = (media_id, meta.page_number, meta.section_code, iso_millis(meta.issue_date))
    grouping = f"print/{md5(*parts)}"
    return RecordedUsage(
        usage_id=usage_id(grouping, *parts, status),
        grouping=grouping,
        media_id=media_id,
        platform="print",
        status=status,
        references=print_references(meta),
        date_added=date_added,
        print_usage_metadata=meta,
    )


def record_print(cmd: RecordPrintUsages, *, event_id: str, at: datetime) -> MediaUsagesRecorded:
    """Every print record is its own grouping (``print/md5(mediaId_page_section_issueDate)``); all
    of them are valid or none is written."""
    problems = Problems()
    records = Body({"printUsageRecords": cmd.print_usage_records}, "", problems).array(
        "printUsageRecords", limit=1_000_000
    )
    usages: list[RecordedUsage] = []
    for i, item in enumerate(records or []):
        path = f"printUsageRecords[{i}]"
        if not isinstance(item, dict):
            problems.add(path, "must be an object")
            continue
        usage = _print_usage(Body(item, path, problems))
        if usage is not None:
            usages.append(usage)
    problems.raise_any()
    groups = [UsageGroup(u.grouping, u.status, (u,)) for u in usages]
    return _recorded("print", groups, cmd, event_id, at)


def _data(cmd: RecordSyndicationUsage | RecordFrontUsage | RecordDownloadUsage) -> tuple[Body, Problems]:
    """The ``data`` object of a single-usage command, and where its field problems are gathered."""
    problems = Problems()
    data = _root(cmd.data, "data", problems)
    if data is None:
        problems.raise_any()
    assert data is not None
    return data, problems


def _single_usage(
    cmd: RecordSyndicationUsage | RecordFrontUsage | RecordDownloadUsage,
    platform: str,
    usage: RecordedUsage,
    *,
    event_id: str,
    at: datetime,
) -> MediaUsagesRecorded:
    """A usage of one of the platforms whose command reports exactly one: a group of its own."""
    group = UsageGroup(usage.grouping, usage.status, (usage,))
    return _recorded(platform, [group], cmd, event_id, at)


def _usage(
    platform: str, grouping: str, media_id: str, status: str, name: str, date_added: datetime, *id_parts: str
) -> RecordedUsage:
    return RecordedUsage(
        usage_id=usage_id(grouping, media_id, *id_parts, status),
        grouping=grouping,
        media_id=media_id,
        platform=platform,
        status=status,
        references=(UsageReference(platform, name=name),),
        date_added=date_added,
    )


def record_syndication(cmd: RecordSyndicationUsage, *, event_id: str, at: datetime) -> MediaUsagesRecorded:
    data, problems = _data(cmd)
    partner = data.text("partnerName", limit=MAX_ID)
    syndicated_by = data.text("syndicatedBy", required=False, limit=MAX_ID)
    start_pending = data.flag("startPending")
    media_id = data.ident("mediaId")
    date_added = data.time("dateAdded")
    problems.raise_any()
    assert partner is not None and media_id is not None and date_added is not None
    status = "pending" if start_pending else "syndicated"
    grouping = f"syndication/{md5(partner, media_id)}"
    by = [syndicated_by] if syndicated_by else []
    usage = _usage("syndication", grouping, media_id, status, partner, date_added, partner, *by)
    metadata = SyndicationUsageMetadata(partner, syndicated_by)
    usage = msgspec.structs.replace(usage, syndication_usage_metadata=metadata)
    return _single_usage(cmd, "syndication", usage, event_id=event_id, at=at)


def record_front(cmd: RecordFrontUsage, *, event_id: str, at: datetime) -> MediaUsagesRecorded:
    data, problems = _data(cmd)
    added_by, front = data.text("addedBy", limit=MAX_ID), data.text("front")
    media_id, date_added = data.ident("mediaId"), data.time("dateAdded")
    problems.raise_any()
    assert added_by is not None and front is not None and media_id is not None and date_added is not None
    # Nobody knows whether a front is live or a draft: the original says "unknown".
    grouping = f"front/{md5(media_id, front)}"
    usage = _usage("front", grouping, media_id, "unknown", front, date_added, front)
    usage = msgspec.structs.replace(usage, front_usage_metadata=FrontUsageMetadata(added_by, front))
    return _single_usage(cmd, "front", usage, event_id=event_id, at=at)


def record_download(cmd: RecordDownloadUsage, *, event_id: str, at: datetime) -> MediaUsagesRecorded:
    """Each download is its own usage: its time is part of its grouping."""
    data, problems = _data(cmd)
    by, media_id, date_added = (
        data.text("downloadedBy", limit=MAX_ID),
        data.ident("mediaId"),
        data.time("dateAdded"),
    )
    problems.raise_any()
    assert by is not None and media_id is not None and date_added is not None
    grouping = f"download/{md5(media_id, by, epoch_millis(date_added))}"
    usage = _usage("download", grouping, media_id, "downloaded", by, date_added, by)
    usage = msgspec.structs.replace(usage, download_usage_metadata=DownloadUsageMetadata(by))
    return _single_usage(cmd, "download", usage, event_id=event_id, at=at)


def new_status(cmd: UpdateMediaUsageStatus) -> str:
    """The body's ``data``, checked before the usage is looked up (as the original does)."""
    problems = Problems()
    status = Body({"data": cmd.data}, "", problems).choice("data")
    problems.raise_any()
    assert status is not None
    return status


def _existing(exists: bool, cmd: DeleteMediaUsage | UpdateMediaUsageStatus) -> None:
    if not exists:
        raise Rejected(404, f"media {cmd.media_id} has no usage {cmd.usage_id}")


def update_status(
    cmd: UpdateMediaUsageStatus, exists: bool, *, event_id: str, at: datetime
) -> MediaUsageStatusUpdated:
    status = new_status(cmd)
    _existing(exists, cmd)
    return MediaUsageStatusUpdated(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        media_id=cmd.media_id,
        usage_id=cmd.usage_id,
        status=status,
    )


def delete_usage(cmd: DeleteMediaUsage, exists: bool, *, event_id: str, at: datetime) -> MediaUsageDeleted:
    _existing(exists, cmd)
    return MediaUsageDeleted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        media_id=cmd.media_id,
        usage_id=cmd.usage_id,
    )


def delete_media_usages(cmd: DeleteMediaUsages, *, event_id: str, at: datetime) -> MediaUsagesDeleted | None:
    """``None`` when the id could name no media: nothing to delete, and nothing worth recording."""
    if not valid_id(cmd.media_id):
        return None
    return MediaUsagesDeleted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        media_id=cmd.media_id,
    )
