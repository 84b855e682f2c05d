"""The events: immutable, versioned facts appended to JetStream as JSON.

One tagged base struct, one union of every event, one decoder built once. Events evolve only by
adding fields with defaults; a breaking change is a new ``version`` with an upcaster in ``UPCASTERS``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Common envelope: who accepted it, when, and which command produced it."""

    event_id: str
    version: int = 1
    # The time the ingest service accepted the command; projections read time only from here.
    occurred_at: datetime
    # The client's idempotency key, scoped by command ("RecordBeat:<key>"), when it gave one.
    idempotency_key: str | None = None
    request_id: str | None = None


# --- installation -----------------------------------------------------------------------------


class InstallationSetUp(Event, tag="InstallationSetUp", frozen=True):
    """The first start of this installation; ``uptime`` counts from here."""


# --- devices (heartbeat) ----------------------------------------------------------------------


class DeviceRegistered(Event, tag="DeviceRegistered", frozen=True):
    device_id: int
    name: str
    # SHA-256 of the token: the plaintext never reaches the stream.
    token_hash: str


class DeviceTokenRegenerated(Event, tag="DeviceTokenRegenerated", frozen=True):
    device_id: int
    token_hash: str


# --- heartbeat --------------------------------------------------------------------------------


class BeatRecorded(Event, tag="BeatRecorded", frozen=True):
    device_id: int


class PageVisited(Event, tag="PageVisited", frozen=True):
    path: str


# --- links (Lighthouse) -----------------------------------------------------------------------


class LinkCreated(Event, tag="LinkCreated", frozen=True):
    link_id: int
    name: str
    url: str
    description: str = ""


class LinkUpdated(Event, tag="LinkUpdated", frozen=True):
    """Only the fields the update changed (``None``: unchanged), so concurrent updates compose."""

    link_id: int
    name: str | None = None
    url: str | None = None
    description: str | None = None


class LinkDeleted(Event, tag="LinkDeleted", frozen=True):
    link_id: int


class LinkUsed(Event, tag="LinkUsed", frozen=True):
    link_id: int
    user: str
    # When the use happened (UTC): the ingest's clock, or a client's time it accepted.
    used_at: datetime


AnyEvent = (
    InstallationSetUp
    | DeviceRegistered
    | DeviceTokenRegenerated
    | BeatRecorded
    | PageVisited
    | LinkCreated
    | LinkUpdated
    | LinkDeleted
    | LinkUsed
)

EVENT_TYPES: tuple[type[Event], ...] = (
    InstallationSetUp,
    DeviceRegistered,
    DeviceTokenRegenerated,
    BeatRecorded,
    PageVisited,
    LinkCreated,
    LinkUpdated,
    LinkDeleted,
    LinkUsed,
)

# Subject of each event type: usagehub.events.<domain>.<type>.
SUBJECTS: dict[type[Event], str] = {
    InstallationSetUp: "usagehub.events.installation.set_up",
    DeviceRegistered: "usagehub.events.devices.registered",
    DeviceTokenRegenerated: "usagehub.events.devices.token_regenerated",
    BeatRecorded: "usagehub.events.heartbeat.beat_recorded",
    PageVisited: "usagehub.events.heartbeat.page_visited",
    LinkCreated: "usagehub.events.links.created",
    LinkUpdated: "usagehub.events.links.updated",
    LinkDeleted: "usagehub.events.links.deleted",
    LinkUsed: "usagehub.events.links.used",
}

# (type tag, version) -> function turning an older payload into the next version's payload.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

_decoder = msgspec.json.Decoder(AnyEvent)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def subject_of(event: Event) -> str:
    return SUBJECTS[type(event)]


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> AnyEvent:
    """Decode an event, upcasting payloads written by older versions of their type."""
    try:
        event: AnyEvent = _decoder.decode(data)
        return event
    except msgspec.ValidationError:
        raw = _raw_decoder.decode(data)
        key = (raw.get("type", ""), raw.get("version", 1))
        if key not in UPCASTERS:
            raise
        while key in UPCASTERS:
            raw = UPCASTERS[key](raw)
            key = (raw["type"], raw["version"])
        upcast: AnyEvent = msgspec.convert(raw, AnyEvent)
        return upcast


def now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


def event_schema() -> dict[str, Any]:
    """JSON Schema of every event, generated from these types (docs/events.md is made from it)."""
    schema: dict[str, Any] = msgspec.json.schema(AnyEvent)
    return schema
