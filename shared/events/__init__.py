"""The events: immutable, versioned facts appended to JetStream as JSON.

One module per domain defines its events, their union and their subjects; this package joins them
into one union and one decoder built once. Events evolve only by adding fields with defaults; a
breaking change is a new ``version`` with an upcaster in ``UPCASTERS``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import msgspec

from shared.events import contributions, heartbeat, links, media, metering
from shared.events.contributions import ContributionsEvent
from shared.events.envelope import Event, new_event_id, now
from shared.events.heartbeat import (
    BeatRecorded,
    DeviceRegistered,
    DeviceTokenRegenerated,
    HeartbeatEvent,
    InstallationSetUp,
    PageVisited,
)
from shared.events.links import LinkCreated, LinkDeleted, LinksEvent, LinkUpdated, LinkUsed
from shared.events.media import (
    MediaEvent,
    MediaUsageDeleted,
    MediaUsagesDeleted,
    MediaUsagesRecorded,
    MediaUsageStatusUpdated,
)
from shared.events.metering import MeteringEvent

# A new domain adds its union here and its subjects below.
AnyEvent = HeartbeatEvent | LinksEvent | MediaEvent | MeteringEvent | ContributionsEvent

EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)

SUBJECTS: dict[type[Event], str] = {
    **heartbeat.SUBJECTS,
    **links.SUBJECTS,
    **media.SUBJECTS,
    **metering.SUBJECTS,
    **contributions.SUBJECTS,
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


def event_schema() -> dict[str, Any]:
    """JSON Schema of every event, generated from these types (docs/events.md is made from it)."""
    schema: dict[str, Any] = msgspec.json.schema(AnyEvent)
    return schema


__all__ = [
    "EVENT_TYPES",
    "SUBJECTS",
    "UPCASTERS",
    "AnyEvent",
    "BeatRecorded",
    "DeviceRegistered",
    "DeviceTokenRegenerated",
    "Event",
    "InstallationSetUp",
    "LinkCreated",
    "LinkDeleted",
    "LinkUpdated",
    "LinkUsed",
    "MediaUsageDeleted",
    "MediaUsageStatusUpdated",
    "MediaUsagesDeleted",
    "MediaUsagesRecorded",
    "PageVisited",
    "decode_event",
    "encode_event",
    "event_schema",
    "new_event_id",
    "now",
    "subject_of",
]
