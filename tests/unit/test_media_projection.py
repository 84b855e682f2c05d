"""The media-usage fold (pure, time only from events) and the documents made from its rows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.media import record_digital, record_print
from services.projector.media_usage import (
    MAX_NOTIFICATION,
    MediaUsagesState,
    UsageRow,
    fold_media_usage_events,
    iso_seconds,
    listed,
    notification_document,
    notify_subject,
    subject_token,
    usage_document,
    usage_json,
)
from shared.commands import RecordDigitalUsages, RecordPrintUsages
from shared.events import AnyEvent, MediaUsageDeleted, MediaUsagesDeleted, MediaUsageStatusUpdated

T0 = datetime(2015, 11, 27, 15, 56, 51, tzinfo=UTC)
META = {"webTitle": "Headline", "webUrl": "http://www.example.com/h", "sectionId": "culture"}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def content(media: list[str], status: str = "published", when: int = 0, content_id: str = "c1") -> AnyEvent:
    cmd = RecordDigitalUsages(
        content_id=content_id, status=status, media_ids=media, digital_usage_metadata=META
    )
    return record_digital(cmd, event_id=f"e{when}", at=at(when))


def fold(*events: AnyEvent) -> MediaUsagesState:
    return fold_media_usage_events(MediaUsagesState(), list(enumerate(events, start=1)))


def by_media(state: MediaUsagesState) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for row in state.usages.values():
        out.setdefault(row.media_id, []).append((row.platform, row.status))
    return {k: sorted(v) for k, v in sorted(out.items())}


def test_republishing_keeps_id_and_date_added_replaces_metadata_and_moves_last_modified() -> None:
    first = fold(content(["a"]))
    cmd = RecordDigitalUsages(
        content_id="c1",
        status="published",
        media_ids=["a"],
        digital_usage_metadata={**META, "webTitle": "New"},
    )
    again = fold(content(["a"]), record_digital(cmd, event_id="e9", at=at(9)))
    [before], [after] = first.usages.values(), again.usages.values()
    assert after.usage_id == before.usage_id and after.date_added == before.date_added == at(0)
    assert after.last_modified == at(9) and after.position == 2
    assert json.loads(after.metadata)["webTitle"] == "New"
    assert again.changed == {"a": (2, at(9))}


def test_a_media_no_longer_in_the_content_is_removed_and_comes_back_anew() -> None:
    state = fold(content(["a", "b"]), content(["a"], when=5))
    b = next(r for r in state.usages.values() if r.media_id == "b")
    assert (b.status, b.date_removed, b.last_modified, b.date_added) == ("removed", at(5), at(5), at(0))
    assert state.changed == {"a": (1, at(0)), "b": (2, at(5))}  # "a" was reported again as it is
    back = fold(content(["a", "b"]), content(["a"], when=5), content(["a", "b"], when=7))
    b = next(r for r in back.usages.values() if r.media_id == "b")
    assert (b.status, b.date_removed, b.date_added) == ("published", None, at(7))


def test_a_status_group_replaces_only_usages_with_its_status() -> None:
    # A draft (pending) without the picture must not remove the published usage of it.
    state = fold(content(["a"], "published"), content(["a"], "pending", 1), content([], "pending", 2))
    assert by_media(state) == {"a": [("digital", "published"), ("digital", "removed")]}


def test_deletes_and_status_updates() -> None:
    events = [content(["a", "b"]), content(["a"], "pending", 1)]
    state = fold(*events)
    published_a = next(r for r in state.usages.values() if r.media_id == "a" and r.status == "published")

    def then(*more: AnyEvent) -> MediaUsagesState:
        return fold(*events, *more)

    def deleted(media_id: str, usage_id: str) -> MediaUsageDeleted:
        return MediaUsageDeleted(event_id="d", occurred_at=at(3), media_id=media_id, usage_id=usage_id)

    def status(value: str, when: int) -> MediaUsageStatusUpdated:
        return MediaUsageStatusUpdated(
            event_id="s", occurred_at=at(when), media_id="a", usage_id=published_a.usage_id, status=value
        )

    assert by_media(then(MediaUsagesDeleted(event_id="d", occurred_at=at(3), media_id="a"))) == {
        "b": [("digital", "published")]
    }
    assert published_a.usage_id not in then(deleted("a", published_a.usage_id)).usages
    wrong_media = then(deleted("b", published_a.usage_id))
    assert wrong_media.usages == state.usages and wrong_media.changed == state.changed
    removed = then(status("removed", 4)).usages[published_a.usage_id]
    assert (removed.status, removed.date_removed, removed.usage_id) == (
        "removed",
        at(4),
        published_a.usage_id,
    )
    again = then(status("removed", 4), status("removed", 6)).usages[published_a.usage_id]
    assert again.date_removed == at(4) and again.last_modified == at(6)
    back = then(status("removed", 4), status("published", 6)).usages[published_a.usage_id]
    assert (back.status, back.date_removed) == ("published", None)


def test_print_usages_are_added_at_the_clients_date() -> None:
    record = {
        "dateAdded": "2014-07-25T16:00:00Z",
        "mediaId": "a",
        "printUsageMetadata": {
            "sectionName": "S",
            "issueDate": "2014-07-25T15:30:00Z",
            "pageNumber": 1,
            "storyName": "N",
            "publicationCode": "gdn",
            "publicationName": "G",
            "layoutId": 1,
            "edition": 1,
            "size": {"x": 1, "y": 2},
            "orderedBy": "D",
            "sectionCode": "gnd",
        },
        "containerId": "c",
        "usageId": "u",
        "usageStatus": "pending",
    }
    event = record_print(RecordPrintUsages(print_usage_records=[record]), event_id="p", at=at(100))
    [row] = fold(event, event).usages.values()
    assert (row.date_added, row.last_modified) == (datetime(2014, 7, 25, 16, tzinfo=UTC), at(100))


def test_times_are_iso_8601_utc_whole_seconds() -> None:
    assert iso_seconds(datetime(2015, 11, 27, 16, 56, 51, 999999, tzinfo=timezone(timedelta(hours=1)))) == (
        "2015-11-27T15:56:51Z"
    )
    assert iso_seconds(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"


def test_a_usage_reported_again_as_it_is_is_no_change() -> None:
    state = fold(content(["a", "b"]))
    assert fold_media_usage_events(state, [(9, content(["a", "b"], when=9))]) is state
    # Removed, then reported again as removed: still nothing new.
    removed = fold(content(["a", "b"]), content(["a"], when=5))
    assert fold_media_usage_events(removed, [(9, content(["a"], when=9))]) is removed


def test_nothing_changed_is_no_change() -> None:
    state = fold(content(["a"]))
    unknown = MediaUsageDeleted(event_id="d", occurred_at=at(3), media_id="a", usage_id="nope")
    assert fold_media_usage_events(state, [(9, unknown)]) is state


def test_the_usage_document_in_the_seeds_field_order() -> None:
    [row] = fold(content(["a"])).usages.values()
    doc = json.loads(json.dumps(usage_document(row), default=lambda raw: json.loads(bytes(raw))))
    assert list(doc) == [
        "id",
        "references",
        "platform",
        "media",
        "status",
        "digitalUsageMetadata",
        "dateAdded",
        "lastModified",
    ]
    assert doc["dateAdded"] == "2015-11-27T15:56:51Z" and doc["digitalUsageMetadata"] == META


def test_the_notification_is_what_a_read_reports_with_is_removed() -> None:
    state = fold(
        content(["a"], "pending"), content(["a", "b"], "published", 1), content(["a"], "published", 2)
    )
    rows = list(state.usages.values())
    doc = json.loads(notification_document("b", [listed(r) for r in rows if r.media_id == "b"], 3, at(2)))
    assert doc["id"] == "b" and doc["position"] == 3 and doc["lastModified"] == "2015-11-27T15:56:53Z"
    assert [(u["status"], u["isRemoved"]) for u in doc["usages"]] == [("removed", True)]
    a = json.loads(notification_document("a", [listed(r) for r in rows if r.media_id == "a"], 3, at(2)))
    [published_a] = [r for r in rows if r.media_id == "a" and r.status == "published"]
    assert a["usages"] == [{"isRemoved": False, **json.loads(usage_json(published_a))}]
    assert list(a["usages"][0])[:2] == ["isRemoved", "id"]  # as in the seed's index document
    assert [(u["status"], u["isRemoved"]) for u in a["usages"]] == [("published", False)]


def test_a_notification_too_large_for_one_message_says_how_many_usages_instead() -> None:
    [row] = fold(content(["a"])).usages.values()
    rows = [listed(replace(row, usage_id=f"composer/c{i}_x", grouping=f"composer/c{i}")) for i in range(3000)]
    document = notification_document("a", rows, 7, at(1))
    assert len(document) <= MAX_NOTIFICATION
    assert json.loads(document) == {
        "id": "a",
        "position": 7,
        "lastModified": "2015-11-27T15:56:52Z",
        "usages": None,
        "usageCount": 3000,
    }
    assert len(json.loads(notification_document("a", rows[:500], 7, at(1)))["usages"]) == 500


def test_notification_subjects_are_one_token_per_media() -> None:
    assert notify_subject("53b2098571e4e9f1d22e98b74db9a8bc5d060331").endswith(
        ".53b2098571e4e9f1d22e98b74db9a8bc5d060331"
    )
    assert subject_token("a.b*c>") == "~" + b"a.b*c>".hex()
    assert subject_token("~41") != subject_token("A")


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200))
def test_subject_tokens_are_safe_and_never_collide(media_id: str) -> None:
    token = subject_token(media_id)
    assert token and not any(c in token for c in ".*> \t")
    decoded = bytes.fromhex(token[1:]).decode() if token.startswith("~") else token
    assert decoded == media_id


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
)
def test_the_fold_takes_time_only_from_events(first: list[str], second: list[str]) -> None:
    events = [content(first), content(second, when=5), content(first, "pending", 6)]
    assert fold(*events) == fold(*events)
    rows: list[UsageRow] = list(fold(*events).usages.values())
    assert all(r.last_modified in {at(0), at(5), at(6)} for r in rows)
