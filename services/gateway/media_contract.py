"""The media-usage API's contract: Argo documents, errors as ``{"errorKey", "errorMessage"}``.

Bodies are described as the original documents them; ingest validates them whole and lists every
problem (``docs/api.md``), so the gateway only checks that a body is a JSON object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from services.gateway.contract import ADMIN, Answer, Operation, Param, idempotency_param, rule

TAG = "media-usage"
ARGO = "application/vnd.argo+json"
Time = Annotated[str, rule("a date-time, e.g. 2018-01-02T03:04:05Z", format="date-time")]
# Ids, texts and URLs as ingest checks them (docs/api.md, "Validation").
MediaId = Annotated[str, rule("1-200 printable ASCII characters, no /", pattern=r"^[!-.0-~]{1,200}$")]
Text = Annotated[
    str,
    rule(
        "at most 2000 characters, no control characters",
        maxLength=2000,
        pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
    ),
]
Url = Annotated[
    str, rule("an absolute http(s) URL with a host", maxLength=2000, pattern=r"^https?://[^\s/?#]+[^\s]*$")
]


class MediaError(msgspec.Struct):
    """Every refusal of this API, as the original answers it."""

    errorKey: str
    errorMessage: str


class Reference(msgspec.Struct):
    type: str
    uri: str


class DigitalUsageMetadata(msgspec.Struct):
    webTitle: Text
    webUrl: Url
    sectionId: Text
    composerUrl: Url | None = None


class DigitalUsages(msgspec.Struct):
    contentId: MediaId
    status: Literal["pending", "published"]
    mediaIds: list[MediaId]
    digitalUsageMetadata: DigitalUsageMetadata
    references: list[Reference] | None = None


class PrintSize(msgspec.Struct):
    x: int
    y: int


class PrintUsageMetadata(msgspec.Struct):
    sectionName: str
    issueDate: Time
    pageNumber: int
    storyName: str
    publicationCode: str
    publicationName: str
    layoutId: int
    edition: int
    size: PrintSize
    orderedBy: str
    sectionCode: str
    notes: str | None = None
    source: str | None = None


class PrintUsageRecord(msgspec.Struct):
    dateAdded: Time
    mediaId: MediaId
    printUsageMetadata: PrintUsageMetadata
    containerId: str
    usageId: str
    usageStatus: str


class PrintUsages(msgspec.Struct):
    printUsageRecords: list[PrintUsageRecord]


class SyndicationData(msgspec.Struct):
    partnerName: Text
    mediaId: MediaId
    dateAdded: Time
    syndicatedBy: Text | None = None
    startPending: bool | None = None


class SyndicationUsage(msgspec.Struct):
    data: SyndicationData


class FrontData(msgspec.Struct):
    addedBy: Text
    front: Text
    mediaId: MediaId
    dateAdded: Time


class FrontUsage(msgspec.Struct):
    data: FrontData


class DownloadData(msgspec.Struct):
    downloadedBy: Text
    mediaId: MediaId
    dateAdded: Time


class DownloadUsage(msgspec.Struct):
    data: DownloadData


class StatusUpdate(msgspec.Struct):
    data: Literal["published"]


class ArgoLink(msgspec.Struct):
    rel: str
    href: str


class ArgoEntity(msgspec.Struct):
    uri: str
    data: dict[str, Any]


class MediaUsages(msgspec.Struct):
    uri: str
    length: int
    data: list[ArgoEntity]
    links: list[ArgoLink]


class UsageDocument(msgspec.Struct):
    uri: str
    data: dict[str, Any]
    links: list[ArgoLink]


_MEDIA_ID = Param("mediaId", "path", str, "a media (image) id", required=True)
_USAGE_ID = Param("usageId", "path", str, "a usage id, percent-encoded or not", required=True)
_NOT_FOUND = Answer(404, "not-found", MediaError, (ARGO,))
_NO_KEY = Answer(401, "authentication-failure: wrong or missing Authorization", MediaError, (ARGO,))
_NO_ADMIN = Answer(404, "no secret key is set: the write routes do not exist", MediaError, (ARGO,))


def _write(path: str, operation_id: str, summary: str, body: Any, key: str) -> Operation:
    return Operation(
        "post",
        path,
        operation_id,
        summary,
        TAG,
        (
            Answer(202, "accepted and stored (no body)"),
            Answer(400, key, MediaError, (ARGO,)),
            _NO_KEY,
            _NO_ADMIN,
            Answer(413, "request-entity-too-large", MediaError, (ARGO,)),
        ),
        parameters=(idempotency_param(),),
        body=body,
        security=(ADMIN,),
        error_type=MediaError,
        error_media_type=ARGO,
    )


OPERATIONS = (
    _write(
        "/usages/digital",
        "recordDigitalUsages",
        "A content's usages",
        DigitalUsages,
        "digital-usage-parse-failed",
    ),
    _write(
        "/usages/print", "recordPrintUsages", "Print usages", PrintUsages, "print-usage-request-parse-failed"
    ),
    _write(
        "/usages/syndication",
        "recordSyndicationUsage",
        "A syndication",
        SyndicationUsage,
        "syndication-usage-parse-failed",
    ),
    _write("/usages/front", "recordFrontUsage", "A use on a front", FrontUsage, "front-usage-parse-failed"),
    _write(
        "/usages/download", "recordDownloadUsage", "A download", DownloadUsage, "download-usage-parse-failed"
    ),
    Operation(
        "put",
        "/usages/status/update/{mediaId}/{usageId}",
        "updateMediaUsageStatus",
        "Mark a usage published",
        TAG,
        (
            Answer(200, "updated (no body)"),
            Answer(400, "update-image-usage-status-failed", MediaError, (ARGO,)),
            _NO_KEY,
            Answer(404, "not-found: no such usage of that media", MediaError, (ARGO,)),
        ),
        parameters=(_MEDIA_ID, _USAGE_ID, idempotency_param()),
        body=StatusUpdate,
        security=(ADMIN,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
    Operation(
        "get",
        "/usages/media/{mediaId}",
        "getMediaUsages",
        "A media's usages",
        TAG,
        (Answer(200, "the usages", MediaUsages, (ARGO,)), _NOT_FOUND),
        parameters=(_MEDIA_ID,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
    Operation(
        "delete",
        "/usages/media/{mediaId}",
        "deleteMediaUsages",
        "Delete every usage of a media",
        TAG,
        (Answer(200, "deleted, also when there was none (no body)"), _NO_KEY, _NO_ADMIN),
        parameters=(_MEDIA_ID, idempotency_param()),
        security=(ADMIN,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
    Operation(
        "delete",
        "/usages/media/{mediaId}/{usageId}",
        "deleteMediaUsage",
        "Delete one usage of a media",
        TAG,
        (Answer(200, "deleted (no body)"), _NO_KEY, Answer(404, "not-found", MediaError, (ARGO,))),
        parameters=(_MEDIA_ID, _USAGE_ID, idempotency_param()),
        security=(ADMIN,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
    Operation(
        "get",
        "/usages/{usageId}",
        "getMediaUsage",
        "A usage",
        TAG,
        (Answer(200, "the usage", UsageDocument, (ARGO,)), _NOT_FOUND),
        parameters=(_USAGE_ID,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
    Operation(
        "get",
        "/images/{mediaId}",
        "getMedia",
        "The part of a media API's image document that usages make",
        TAG,
        (Answer(200, "the image document", UsageDocument, (ARGO,)), _NOT_FOUND),
        parameters=(_MEDIA_ID,),
        error_type=MediaError,
        error_media_type=ARGO,
    ),
)
