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
    """A view of the status page that may start a visit (a gateway sends one when it has not seen the
    visitor for 30 minutes); counted when the visitor's previous one is over 30 minutes older."""

    path: str
    # SHA-256 (hex) naming the visitor: of their ``uh_visitor`` cookie, or keyed of address and
    # User-Agent. "" in events from before visits were sessions: each of those counts as a visit.
    visitor: str = ""
    # When the view brought no cookie: the visitor named by the cookie it was given, whose next
    # views (with it) are in the same session. "" otherwise.
    cookie_visitor: str = ""


HeartbeatEvent = InstallationSetUp | DeviceRegistered | DeviceTokenRegenerated | BeatRecorded | PageVisited

# Subject of each event type: usagehub.events.<domain>.<type>.
SUBJECTS: dict[type[Event], str] = {
    InstallationSetUp: "usagehub.events.installation.set_up",
    DeviceRegistered: "usagehub.events.devices.registered",
    DeviceTokenRegenerated: "usagehub.events.devices.token_regenerated",
    BeatRecorded: "usagehub.events.heartbeat.beat_recorded",
    PageVisited: "usagehub.events.heartbeat.page_visited",
}
