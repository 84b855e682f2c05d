"""Heartbeat events: the installation, devices and their tokens, beats and page visits."""

from __future__ import annotations

from shared.events.envelope import Event


class InstallationSetUp(Event, tag="InstallationSetUp", frozen=True):
    """The first start of this installation; ``uptime`` counts from here."""


class DeviceRegistered(Event, tag="DeviceRegistered", frozen=True):
    device_id: int
    name: str
    # SHA-256 of the token: the plaintext never reaches the stream.
    token_hash: str


class DeviceTokenRegenerated(Event, tag="DeviceTokenRegenerated", frozen=True):
    device_id: int
    token_hash: str


class BeatRecorded(Event, tag="BeatRecorded", frozen=True):
    device_id: int


class PageVisited(Event, tag="PageVisited", frozen=True):
    path: str


HeartbeatEvent = InstallationSetUp | DeviceRegistered | DeviceTokenRegenerated | BeatRecorded | PageVisited

# Subject of each event type: usagehub.events.<domain>.<type>.
SUBJECTS: dict[type[Event], str] = {
    InstallationSetUp: "usagehub.events.installation.set_up",
    DeviceRegistered: "usagehub.events.devices.registered",
    DeviceTokenRegenerated: "usagehub.events.devices.token_regenerated",
    BeatRecorded: "usagehub.events.heartbeat.beat_recorded",
    PageVisited: "usagehub.events.heartbeat.page_visited",
}
