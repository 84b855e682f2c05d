"""Media-usage decisions: every problem of a body by its path, ids as the original builds them, and
no body (whatever its JSON) ever doing anything but a clean refusal or one event."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.media import (
    delete_media_usages,
    delete_usage,
    parse_time,
    record_digital,
    record_download,
    record_front,
    record_print,
    record_syndication,
    update_status,
)
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
from shared.events.media import PrintImageSize, UsageReference

AT = datetime(2015, 11, 30, 12, 7, 14, tzinfo=UTC)
MEDIA = "53b2098571e4e9f1d22e98b74db9a8bc5d060331"
CONTENT = "56587d29e4b0fe4d55bb97d5"
META = {
    "webTitle": "Headline",
    "webUrl": "http://www.example.com/culture/2015/dec/02/headline",
    "sectionId": "culture",
    "composerUrl": f"https://composer.tools.example.com/content/{CONTENT}",
}
PRINT_META: dict[str, Any] = {
    "sectionName": "Grauniad Weekly Test",
    "issueDate": "2014-07-25T15:30:00Z",
    "pageNumber": 1,
    "storyName": "NWPalLoad",
    "publicationCode": "gdn",
    "publicationName": "The Grauniad",
    "layoutId": 10884608,
    "edition": 1,
    "size": {"x": 70, "y": 82},
    "orderedBy": "Davina Bloshen",
    "sectionCode": "gnd",
}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def print_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "dateAdded": "2014-07-25T16:00:00Z",
        "mediaId": MEDIA,
        "printUsageMetadata": PRINT_META,
        "containerId": "c1",
        "usageId": "u1",
        "usageStatus": "pending",
    }
    return {**record, **changes}


def rejection(decide: Any, cmd: Any) -> list[str]:
    with pytest.raises(Rejected) as caught:
        decide(cmd, event_id="e", at=AT)
    assert caught.value.status == 400
    return caught.value.message.split("; ")


# --- digital ------------------------------------------------------------------------------------


def digital(**changes: Any) -> RecordDigitalUsages:
    fields: dict[str, Any] = {
        "content_id": CONTENT,
        "status": "pending",
        "media_ids": [MEDIA],
        "digital_usage_metadata": META,
    }
    return RecordDigitalUsages(**{**fields, **changes})


def test_a_digital_usage_id_is_the_content_grouping_and_an_md5_of_media_and_status() -> None:
    event = record_digital(digital(), event_id="e", at=AT)
    [group] = event.groups
    [usage] = group.usages
    assert (group.grouping, group.status) == (f"composer/{CONTENT}", "pending")
    assert usage.usage_id == f"composer/{CONTENT}_{md5(MEDIA + '_pending')}"
    assert (usage.media_id, usage.platform, usage.status) == (MEDIA, "digital", "pending")
    assert usage.date_added is None  # a digital usage is added when ingest accepts it
    # Without references, they are made from the metadata, as the original makes them.
    assert usage.references == (
        UsageReference("frontend", META["webUrl"], "Headline"),
        UsageReference("composer", META["composerUrl"]),
    )
    published = record_digital(digital(status="Published"), event_id="e", at=AT)
    assert published.groups[0].usages[0].usage_id == f"composer/{CONTENT}_{md5(MEDIA + '_published')}"
    assert record_digital(digital(), event_id="x", at=AT).groups == event.groups


def test_digital_references_and_media_as_given() -> None:
    refs = [{"type": "frontend", "uri": "http://www.example.com/global/x"}, {"type": "Composer", "name": "C"}]
    event = record_digital(
        digital(
            references=refs, media_ids=["a", "b", "a"], digital_usage_metadata={**META, "composerUrl": None}
        ),
        event_id="e",
        at=AT,
    )
    usages = event.groups[0].usages
    assert [u.media_id for u in usages] == ["a", "b"]  # once each, in the order given
    assert usages[0].references == (
        UsageReference("frontend", "http://www.example.com/global/x"),
        UsageReference("composer", name="C"),
    )
    assert (
        usages[0].digital_usage_metadata is not None and usages[0].digital_usage_metadata.composer_url is None
    )


def test_content_without_media_removes_what_it_had() -> None:
    event = record_digital(digital(media_ids=[]), event_id="e", at=AT)
    assert [(g.grouping, g.status, g.usages) for g in event.groups] == [
        (f"composer/{CONTENT}", "pending", ())
    ]


def test_every_problem_of_a_digital_body_by_path() -> None:
    cmd = RecordDigitalUsages(
        content_id="has/slash",
        status="removed",
        media_ids=["ok", 7, "", "x" * 201],
        digital_usage_metadata={"webTitle": 3, "webUrl": "ftp://x/", "composerUrl": "not a url"},
        references=[{"type": "poster"}, "ref", {"type": "frontend", "uri": "/relative", "name": "a\x00b"}],
    )
    assert rejection(record_digital, cmd) == [
        "contentId: must be 1 to 200 printable ASCII characters, without '/'",
        "status: must be one of pending, published",
        "digitalUsageMetadata.webTitle: must be a string",
        "digitalUsageMetadata.webUrl: must be an absolute http(s) URL",
        "digitalUsageMetadata.sectionId: required",
        "digitalUsageMetadata.composerUrl: must be an absolute http(s) URL of at most 2000 characters",
        "references[0].type: must be one of indesign, frontend, composer, syndication, front, download",
        "references[1]: must be an object",
        "references[2].uri: must be an absolute http(s) URL",
        "references[2].name: must not contain control characters",
        "mediaIds[1]: must be a media id (1 to 200 printable ASCII characters, without '/')",
        "mediaIds[2]: must be a media id (1 to 200 printable ASCII characters, without '/')",
        "mediaIds[3]: must be a media id (1 to 200 printable ASCII characters, without '/')",
    ]
    assert rejection(record_digital, RecordDigitalUsages()) == [
        "contentId: required",
        "status: required",
        "mediaIds: required",
        "digitalUsageMetadata: required",
    ]


# --- print --------------------------------------------------------------------------------------


def test_print_ids_as_the_original_builds_them() -> None:
    event = record_print(RecordPrintUsages(print_usage_records=[print_record()]), event_id="e", at=AT)
    [group] = event.groups
    [usage] = group.usages
    parts = f"{MEDIA}_1_gnd_2014-07-25T15:30:00.000Z"
    assert group.grouping == f"print/{md5(parts)}"
    assert usage.usage_id == f"print/{md5(parts)}_{md5(parts + '_pending')}"
    assert usage.date_added == datetime(2014, 7, 25, 16, tzinfo=UTC)  # the client's
    meta = usage.print_usage_metadata
    assert meta is not None and meta.size == PrintImageSize(70, 82) and meta.layout_id == 10884608
    assert usage.references == (
        UsageReference("indesign", name="2014-07-25, The Grauniad, Grauniad Weekly Test, Page 1"),
    )


def test_each_print_record_is_its_own_group() -> None:
    records = [print_record(), print_record(mediaId="other"), print_record(usageStatus="published")]
    event = record_print(RecordPrintUsages(print_usage_records=records), event_id="e", at=AT)
    assert [len(g.usages) for g in event.groups] == [1, 1, 1]
    assert len({g.usages[0].usage_id for g in event.groups}) == 3
    assert event.groups[0].grouping == event.groups[2].grouping  # same page, another status


def test_every_problem_of_a_print_body_by_path() -> None:
    bad_meta = {**PRINT_META, "size": {"y": "82"}, "pageNumber": "1", "layoutId": 2**63, "edition": True}
    del bad_meta["orderedBy"]
    records = [
        print_record(),
        print_record(),
        print_record(printUsageMetadata={**PRINT_META, "size": {"y": 82}}),
        "nope",
        print_record(printUsageMetadata=bad_meta, dateAdded="yesterday", usageStatus="gone", mediaId=None),
    ]
    assert rejection(record_print, RecordPrintUsages(print_usage_records=records)) == [
        "printUsageRecords[2].printUsageMetadata.size.x: required",
        "printUsageRecords[3]: must be an object",
        "printUsageRecords[4].dateAdded: must be a date-time, e.g. 2014-07-25T15:30:00Z",
        "printUsageRecords[4].mediaId: required",
        "printUsageRecords[4].printUsageMetadata.pageNumber: must be a 32-bit integer",
        "printUsageRecords[4].printUsageMetadata.layoutId: must be a 64-bit integer",
        "printUsageRecords[4].printUsageMetadata.edition: must be a 32-bit integer",
        "printUsageRecords[4].printUsageMetadata.size.x: required",
        "printUsageRecords[4].printUsageMetadata.size.y: must be a 32-bit integer",
        "printUsageRecords[4].printUsageMetadata.orderedBy: required",
        "printUsageRecords[4].usageStatus: must be one of pending, published, removed, syndicated,"
        " downloaded, failed, unknown",
    ]
    assert rejection(record_print, RecordPrintUsages()) == ["printUsageRecords: required"]
    assert rejection(record_print, RecordPrintUsages(print_usage_records={})) == [
        "printUsageRecords: must be an array"
    ]


def test_at_most_a_thousand_problems_are_listed_and_the_rest_counted() -> None:
    problems = rejection(record_print, RecordPrintUsages(print_usage_records=["x"] * 1500))
    assert len(problems) == 1001 and problems[-1] == "and 500 more problems"
    assert problems[999] == "printUsageRecords[999]: must be an object"


@pytest.mark.parametrize("field", sorted(PRINT_META))
def test_every_documented_print_field_is_required(field: str) -> None:
    meta = {k: v for k, v in PRINT_META.items() if k != field}
    cmd = RecordPrintUsages(print_usage_records=[print_record(printUsageMetadata=meta)])
    assert rejection(record_print, cmd) == [f"printUsageRecords[0].printUsageMetadata.{field}: required"]


# --- syndication, front, download ---------------------------------------------------------------


def test_syndication_front_and_download_usages() -> None:
    data = {"partnerName": "Reuters", "mediaId": MEDIA, "dateAdded": "2018-01-01T00:00:00Z"}
    [syndicated] = record_syndication(RecordSyndicationUsage(data=data), event_id="e", at=AT).groups[0].usages
    assert (syndicated.platform, syndicated.status) == ("syndication", "syndicated")
    assert syndicated.grouping == f"syndication/{md5('Reuters_' + MEDIA)}"
    assert syndicated.usage_id == f"{syndicated.grouping}_{md5(MEDIA + '_Reuters_syndicated')}"
    assert syndicated.references == (UsageReference("syndication", name="Reuters"),)
    pending = record_syndication(
        RecordSyndicationUsage(data={**data, "startPending": True, "syndicatedBy": "ed"}), event_id="e", at=AT
    ).groups[0]
    assert pending.status == "pending" and pending.usages[0].usage_id.endswith(
        md5(MEDIA + "_Reuters_ed_pending")
    )

    front_data = {"addedBy": "ed", "front": "uk", "mediaId": MEDIA, "dateAdded": "2018-01-01T00:00:00Z"}
    [front] = record_front(RecordFrontUsage(data=front_data), event_id="e", at=AT).groups[0].usages
    assert (front.platform, front.status, front.grouping) == (
        "front",
        "unknown",
        f"front/{md5(MEDIA + '_uk')}",
    )
    assert front.references == (UsageReference("front", name="uk"),)

    download_data = {"downloadedBy": "ed", "mediaId": MEDIA, "dateAdded": "2018-01-01T00:00:00.5Z"}
    [download] = (
        record_download(RecordDownloadUsage(data=download_data), event_id="e", at=AT).groups[0].usages
    )
    assert (download.platform, download.status) == ("download", "downloaded")
    assert download.grouping == f"download/{md5(MEDIA + '_ed_1514764800500')}"  # each download is its own


@pytest.mark.parametrize(
    ("decide", "command", "data", "problems"),
    [
        (record_syndication, RecordSyndicationUsage, None, ["data: required"]),
        (record_syndication, RecordSyndicationUsage, [], ["data: must be an object"]),
        (
            record_syndication,
            RecordSyndicationUsage,
            {"startPending": "yes", "syndicatedBy": 1},
            [
                "data.partnerName: required",
                "data.syndicatedBy: must be a string",
                "data.startPending: must be true or false",
                "data.mediaId: required",
                "data.dateAdded: required",
            ],
        ),
        (
            record_front,
            RecordFrontUsage,
            {"addedBy": "", "front": 5, "mediaId": "a b", "dateAdded": 1.5},
            [
                "data.front: must be a string",
                "data.mediaId: must be 1 to 200 printable ASCII characters, without '/'",
                "data.dateAdded: must be a date-time, e.g. 2014-07-25T15:30:00Z",
            ],
        ),
        (
            record_download,
            RecordDownloadUsage,
            {},
            ["data.downloadedBy: required", "data.mediaId: required", "data.dateAdded: required"],
        ),
    ],
)
def test_every_problem_of_a_data_body(decide: Any, command: Any, data: Any, problems: list[str]) -> None:
    assert rejection(decide, command(data=data)) == problems


# --- status and deletes -------------------------------------------------------------------------


def test_status_is_checked_before_existence() -> None:
    bad = UpdateMediaUsageStatus(media_id=MEDIA, usage_id="u", data="gone")
    with pytest.raises(Rejected) as caught:
        update_status(bad, False, event_id="e", at=AT)
    assert caught.value.status == 400 and caught.value.message.startswith("data: must be one of pending")
    good = UpdateMediaUsageStatus(media_id=MEDIA, usage_id="u", data="PUBLISHED")
    with pytest.raises(Rejected) as caught:
        update_status(good, False, event_id="e", at=AT)
    assert caught.value.status == 404
    assert update_status(good, True, event_id="e", at=AT).status == "published"


def test_deletes() -> None:
    with pytest.raises(Rejected) as caught:
        delete_usage(DeleteMediaUsage(media_id=MEDIA, usage_id="u"), False, event_id="e", at=AT)
    assert caught.value.status == 404
    assert (
        delete_usage(DeleteMediaUsage(media_id=MEDIA, usage_id="u"), True, event_id="e", at=AT).usage_id
        == "u"
    )
    assert delete_media_usages(DeleteMediaUsages(media_id=MEDIA), event_id="e", at=AT) is not None
    # An id no media can have: there is nothing to delete, and nothing to record.
    assert delete_media_usages(DeleteMediaUsages(media_id="a\x00b"), event_id="e", at=AT) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2014-07-25T15:30:00Z", datetime(2014, 7, 25, 15, 30, tzinfo=UTC)),
        ("2014-07-25T16:30:00+01:00", datetime(2014, 7, 25, 15, 30, tzinfo=UTC)),
        ("2014-07-25T15:30:00.250Z", datetime(2014, 7, 25, 15, 30, 0, 250000, tzinfo=UTC)),
        ("2014-07-25T15:30:00", datetime(2014, 7, 25, 15, 30, tzinfo=UTC)),
        ("2014-07-25", datetime(2014, 7, 25, tzinfo=UTC)),
        (1406302200000, datetime(2014, 7, 25, 15, 30, tzinfo=UTC)),
        ("yesterday", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("9999-12-31T23:59:59-01:00", None),
        ("2014-13-01T00:00:00Z", None),
        (True, None),
        (1.5, None),
        (10**20, None),
        (None, None),
    ],
)
def test_times_as_the_original_reads_them(raw: object, expected: datetime | None) -> None:
    assert parse_time(raw) == expected


# --- anything at all ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
print_like = st.fixed_dictionaries(
    {},
    optional={
        "dateAdded": json_values | st.just("2014-07-25T16:00:00Z"),
        "mediaId": json_values | st.just(MEDIA),
        "printUsageMetadata": st.fixed_dictionaries(
            {}, optional={k: json_values | st.just(v) for k, v in PRINT_META.items()}
        )
        | json_values,
        "containerId": json_values | st.just("c"),
        "usageId": json_values | st.just("u"),
        "usageStatus": json_values | st.sampled_from(["pending", "published"]),
    },
)


@given(st.lists(print_like | json_values, max_size=4) | json_values)
def test_any_print_body_is_one_event_or_a_400_naming_each_problem(records: Any) -> None:
    cmd = RecordPrintUsages(print_usage_records=records)
    try:
        event = record_print(cmd, event_id="e", at=AT)
    except Rejected as exc:
        assert exc.status == 400
        assert all(p.startswith("printUsageRecords") and ": " in p for p in exc.message.split("; "))
        return
    assert isinstance(records, list) and len(event.groups) == len(records)
    json.dumps([str(g) for g in event.groups])


@given(json_values, json_values, json_values, json_values, json_values)
def test_any_digital_body_is_one_event_or_a_400(
    content: Any, status: Any, media: Any, meta: Any, refs: Any
) -> None:
    cmd = RecordDigitalUsages(
        content_id=content, status=status, media_ids=media, digital_usage_metadata=meta, references=refs
    )
    try:
        record_digital(cmd, event_id="e", at=AT)
    except Rejected as exc:
        assert exc.status == 400 and exc.message
