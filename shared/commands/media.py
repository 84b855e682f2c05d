"""Media-usage commands: record usages (digital, print, syndication, front, download), delete them and
set a usage's status.

The recording commands carry the request body as the client sent it (the original service's field
names, unchecked), so ingest validates HTTP and NATS intake alike and can name every problem by its
path in the body.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.commands.envelope import Command

# The largest body a recording command takes from HTTP (print records: USAGEHUB_MEDIA_PRINT_MAX_KB),
# and how deep it may nest: no body of this API is nested more than five deep; a deeper one would
# only travel further to be refused (and near msgspec's own limit it could not even be decoded
# inside a command).
MAX_BODY = 64 * 1024
MAX_DEPTH = 32


def json_depth(value: object) -> int:
    """How deep a decoded JSON value nests (a scalar is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class RecordDigitalUsages(Command, tag="RecordDigitalUsages", frozen=True):
    """The usages of one piece of content: every media it uses now, with one status."""

    content_id: Any = msgspec.field(default=None, name="contentId")
    status: Any = None
    media_ids: Any = msgspec.field(default=None, name="mediaIds")
    digital_usage_metadata: Any = msgspec.field(default=None, name="digitalUsageMetadata")
    references: Any = None


class RecordPrintUsages(Command, tag="RecordPrintUsages", frozen=True):
    print_usage_records: Any = msgspec.field(default=None, name="printUsageRecords")


class RecordSyndicationUsage(Command, tag="RecordSyndicationUsage", frozen=True):
    data: Any = None


class RecordFrontUsage(Command, tag="RecordFrontUsage", frozen=True):
    data: Any = None


class RecordDownloadUsage(Command, tag="RecordDownloadUsage", frozen=True):
    data: Any = None


RECORDING: dict[str, type[Command]] = {
    "digital": RecordDigitalUsages,
    "print": RecordPrintUsages,
    "syndication": RecordSyndicationUsage,
    "front": RecordFrontUsage,
    "download": RecordDownloadUsage,
}
_ENVELOPE = {f.name for f in msgspec.structs.fields(Command)}


def recording_command(kind: str, body: dict[str, Any], **envelope: Any) -> Command:
    """The recording command of ``kind`` for a request body (the HTTP route's and the CLI's): each of
    the command's fields from the body's field of the original's name; the rest of the body is left
    out, as the original ignores it. ``envelope``: the request id or idempotency key."""
    command = RECORDING[kind]
    fields: dict[str, Any] = {
        f.name: body.get(f.encode_name) for f in msgspec.structs.fields(command) if f.name not in _ENVELOPE
    }
    return command(**fields, **envelope)


class DeleteMediaUsages(Command, tag="DeleteMediaUsages", frozen=True):
    media_id: str


class DeleteMediaUsage(Command, tag="DeleteMediaUsage", frozen=True):
    media_id: str
    usage_id: str


class UpdateMediaUsageStatus(Command, tag="UpdateMediaUsageStatus", frozen=True):
    media_id: str
    usage_id: str
    # The body's ``data``: the new status.
    data: Any = None


RecordMediaUsages = (
    RecordDigitalUsages | RecordPrintUsages | RecordSyndicationUsage | RecordFrontUsage | RecordDownloadUsage
)
MediaCommand = RecordMediaUsages | DeleteMediaUsages | DeleteMediaUsage | UpdateMediaUsageStatus
