"""Events on the wire, subjects, and configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared import events
from shared.bus import (
    AppendError,
    DuplicateInFlight,
    ExpectationFailed,
    ExpectationInFlight,
    _error_of,
    server_urls,
    subject_matches,
)
from shared.events import BeatRecorded, decode_event, encode_event, event_schema, subject_of
from shared.settings import ENV_VARS, SettingsError, load_settings

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_events_round_trip_as_tagged_json() -> None:
    event = BeatRecorded(event_id="e1", occurred_at=NOW, device_id=3, idempotency_key="RecordBeat:k")
    wire = encode_event(event)
    assert msgspec.json.decode(wire)["type"] == "BeatRecorded"
    assert decode_event(wire) == event
    assert subject_of(event) == "usagehub.events.heartbeat.beat_recorded"


def test_every_event_type_has_a_subject_and_a_schema() -> None:
    assert set(events.SUBJECTS) == set(events.EVENT_TYPES)
    schema = event_schema()
    names = set(schema["$defs"])
    assert {t.__name__ for t in events.EVENT_TYPES} <= names


def test_old_versions_are_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hypothetical version 0 that named the device "device".
    def upcast(raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        raw["device_id"] = raw.pop("device")
        raw["version"] = 1
        return raw

    monkeypatch.setitem(events.UPCASTERS, ("BeatRecorded", 0), upcast)
    old = (
        b'{"type":"BeatRecorded","version":0,"event_id":"e","occurred_at":"2026-01-01T00:00:00Z","device":7}'
    )
    decoded = decode_event(old)
    assert isinstance(decoded, BeatRecorded) and decoded.device_id == 7


def test_unknown_payloads_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"Nope","event_id":"e","occurred_at":"2026-01-01T00:00:00Z"}')


@pytest.mark.parametrize(
    ("subject", "pattern", "expected"),
    [
        ("usagehub.events.devices.registered", "usagehub.events.devices.>", True),
        ("usagehub.events.devices", "usagehub.events.devices.>", False),
        ("usagehub.events.heartbeat.beat_recorded", "usagehub.events.devices.>", False),
        ("a.b.c", "a.*.c", True),
        ("a.b.c", "a.*", False),
        ("a.b", "a.b", True),
    ],
)
def test_subject_matching(subject: str, pattern: str, expected: bool) -> None:
    assert subject_matches(subject, pattern) is expected


KEY = "k" * 32


def test_settings_from_environment() -> None:
    s = load_settings(
        {"USAGEHUB_HTTP_PORT": "9000", "USAGEHUB_SECRET_KEY": KEY, "USAGEHUB_STREAM_REPLICAS": "3"}
    )
    assert (s.http_port, s.secret_key, s.stream_replicas, s.device_routes_enabled) == (9000, KEY, 3, True)
    assert "USAGEHUB_DATABASE_URL" in ENV_VARS


def test_the_nats_url_may_name_every_server_of_a_cluster() -> None:
    urls = "nats://nats-0:4222, nats://nats-1:4222,nats://nats-2:4222"
    assert server_urls(load_settings({"USAGEHUB_NATS_URL": urls}).nats_url) == [
        "nats://nats-0:4222",
        "nats://nats-1:4222",
        "nats://nats-2:4222",
    ]
    with pytest.raises(SettingsError, match="USAGEHUB_NATS_URL"):
        load_settings({"USAGEHUB_NATS_URL": "nats://nats-0:4222,http://nats-1:4222"})


def test_all_invalid_settings_are_reported_together() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(
            {
                "USAGEHUB_HTTP_PORT": "x",
                "USAGEHUB_STREAM_REPLICAS": "2",
                "USAGEHUB_LOG_FORMAT": "xml",
                "USAGEHUB_SECRET_KEY": "change-me",
                "USAGEHUB_HTTP_HOST": "0.0.0.0",
            }
        )
    message = str(err.value)
    assert "USAGEHUB_HTTP_PORT" in message and "STREAM_REPLICAS" in message and "LOG_FORMAT" in message
    assert "USAGEHUB_SECRET_KEY must be at least 32 characters" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_a_short_admin_key_is_accepted_on_loopback_only(host: str) -> None:
    settings = load_settings({"USAGEHUB_SECRET_KEY": "change-me", "USAGEHUB_HTTP_HOST": host})
    assert settings.weak_secret_key and settings.device_routes_enabled
    for beyond in ("0.0.0.0", "10.1.2.3", "gateway.example"):
        with pytest.raises(SettingsError):
            load_settings({"USAGEHUB_SECRET_KEY": "change-me", "USAGEHUB_HTTP_HOST": beyond})


def test_an_empty_admin_key_turns_the_admin_routes_off() -> None:
    assert not load_settings({"USAGEHUB_SECRET_KEY": ""}).device_routes_enabled
    assert load_settings({"USAGEHUB_SECRET_KEY": KEY}).device_routes_enabled


def test_the_nats_password_comes_from_a_file_and_stays_out_of_reprs(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-mounted-file\n")
    s = load_settings({"USAGEHUB_NATS_USER": "gateway", "USAGEHUB_NATS_PASSWORD_FILE": str(secret)})
    assert (s.nats_user, s.nats_password) == ("gateway", "s3cret-from-a-mounted-file")
    assert "s3cret" not in repr(s)
    with pytest.raises(SettingsError) as err:
        load_settings(
            {"USAGEHUB_NATS_USER": "gateway", "USAGEHUB_NATS_PASSWORD_FILE": str(tmp_path / "missing")}
        )
    assert "USAGEHUB_NATS_PASSWORD_FILE: cannot read" in str(err.value)
    with pytest.raises(SettingsError, match="USAGEHUB_NATS_USER needs"):
        load_settings({"USAGEHUB_NATS_USER": "gateway"})


def test_docs_events_md_is_generated_from_the_types() -> None:
    from pathlib import Path

    from shared.event_docs import render_events_markdown

    path = Path(__file__).parents[2] / "docs" / "events.md"
    assert path.read_text() == render_events_markdown(), "run `make docs` to regenerate docs/events.md"


def test_append_refusals_are_told_apart_by_their_codes() -> None:
    """What a writer does next depends on the refusal: decide again, wait for one in flight, or fail."""

    def refusal(code: int) -> AppendError:
        return _error_of({"error": {"err_code": code, "description": "refused"}})

    assert type(refusal(10071)) is ExpectationFailed
    assert type(refusal(10164)) is ExpectationInFlight
    # Two replicas appending the same message id at once (their first set-up): the second waits.
    assert type(refusal(10158)) is DuplicateInFlight
    assert type(refusal(10077)) is AppendError
