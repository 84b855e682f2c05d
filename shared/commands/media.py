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
