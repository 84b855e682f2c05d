"""Media-usage events: where a picture is used (digital, print, syndication, front, download), and
deletions and status changes of those usages.

The metadata and reference objects keep the API's own camelCase names: they are the documents
publishing systems send and the read model shows, stored as received after validation.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from shared.events.envelope import Event


class UsageReference(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where the usage is: a frontend page, a Composer item, an InDesign page, a partner…"""

    type: str
    uri: str | None = None
    name: str | None = None


class DigitalUsageMetadata(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    web_title: str
    web_url: str
    section_id: str
    composer_url: str | None = None


class PrintImageSize(msgspec.Struct, frozen=True):
    x: int
    y: int


class PrintUsageMetadata(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    section_name: str
    issue_date: datetime
    page_number: int
    story_name: str
    publication_code: str
    publication_name: str
    layout_id: int
    edition: int
    size: PrintImageSize
    ordered_by: str
    section_code: str
    notes: str | None = None
    source: str | None = None


class SyndicationUsageMetadata(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    partner_name: str
    syndicated_by: str | None = None


class FrontUsageMetadata(msgspec.Struct, frozen=True, rename="camel"):
    added_by: str
    front: str


class DownloadUsageMetadata(msgspec.Struct, frozen=True, rename="camel"):
    downloaded_by: str


UsageMetadata = (
    DigitalUsageMetadata
    | PrintUsageMetadata
    | SyndicationUsageMetadata
    | FrontUsageMetadata
    | DownloadUsageMetadata
)


class RecordedUsage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One usage as a publishing system reported it, with its deterministic id."""

    # ``<grouping>_<md5>``: the same usage reported again has the same id.
    usage_id: str
    grouping: str
    media_id: str
    platform: str
    status: str
    references: tuple[UsageReference, ...]
    # The client's own ``dateAdded`` (all but digital): the usage's dateAdded when it is first recorded.
    date_added: datetime | None = None
    # Exactly one, the platform's: untagged structs cannot share one union field.
    digital_usage_metadata: DigitalUsageMetadata | None = None
    print_usage_metadata: PrintUsageMetadata | None = None
    syndication_usage_metadata: SyndicationUsageMetadata | None = None
    front_usage_metadata: FrontUsageMetadata | None = None
    download_usage_metadata: DownloadUsageMetadata | None = None

    @property
    def metadata(self) -> UsageMetadata:
        found = (
            self.digital_usage_metadata
            or self.print_usage_metadata
            or self.syndication_usage_metadata
            or self.front_usage_metadata
            or self.download_usage_metadata
        )
        assert found is not None, "a recorded usage always has its platform's metadata"
        return found


class UsageGroup(msgspec.Struct, frozen=True):
    """The usages a grouping has with ``status`` now: any other usage of that grouping and status
    is no longer there (it becomes ``removed``)."""

    grouping: str
    status: str
    usages: tuple[RecordedUsage, ...]


class MediaUsagesRecorded(Event, tag="MediaUsagesRecorded", frozen=True):
    """One write of usages (a piece of content, a batch of print records, a syndication, a front or
    a download): every group replaces what its grouping had with its status."""

    platform: str
    groups: tuple[UsageGroup, ...]


class MediaUsagesDeleted(Event, tag="MediaUsagesDeleted", frozen=True):
    """Every usage of a media is deleted (not marked removed: gone)."""

    media_id: str


class MediaUsageDeleted(Event, tag="MediaUsageDeleted", frozen=True):
    media_id: str
    usage_id: str


class MediaUsageStatusUpdated(Event, tag="MediaUsageStatusUpdated", frozen=True):
    """A usage's status set by hand; its id stays the same."""

    media_id: str
    usage_id: str
    status: str


MediaEvent = MediaUsagesRecorded | MediaUsagesDeleted | MediaUsageDeleted | MediaUsageStatusUpdated

SUBJECTS: dict[type[Event], str] = {
    MediaUsagesRecorded: "usagehub.events.media.recorded",
    MediaUsagesDeleted: "usagehub.events.media.deleted",
    MediaUsageDeleted: "usagehub.events.media.usage_deleted",
    MediaUsageStatusUpdated: "usagehub.events.media.status_updated",
}
