"""The recording commands the HTTP routes and the CLI build from a request body, by one function."""

from __future__ import annotations

from shared.commands.media import (
    RecordDigitalUsages,
    RecordFrontUsage,
    RecordPrintUsages,
    recording_command,
)


def test_fields_come_from_the_originals_names() -> None:
    body = {
        "contentId": "c1",
        "status": "published",
        "mediaIds": ["m1"],
        "digitalUsageMetadata": {"webTitle": "t"},
        "references": [],
    }
    assert recording_command("digital", body, idempotency_key="k") == RecordDigitalUsages(
        content_id="c1",
        status="published",
        media_ids=["m1"],
        digital_usage_metadata={"webTitle": "t"},
        references=[],
        idempotency_key="k",
    )
    assert recording_command("print", {"printUsageRecords": [1]}, request_id="r") == RecordPrintUsages(
        print_usage_records=[1], request_id="r"
    )


def test_the_envelope_never_comes_from_the_body() -> None:
    # A body cannot choose the idempotency key or the request id its command travels with.
    body = {"data": {"x": 1}, "idempotency_key": "stolen", "request_id": "forged", "extra": True}
    cmd = recording_command("front", body, request_id="r")
    assert cmd == RecordFrontUsage(data={"x": 1}, request_id="r")


def test_absent_fields_stay_absent_for_ingest_to_name() -> None:
    assert recording_command("digital", {}) == RecordDigitalUsages()
