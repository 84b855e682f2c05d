"""Lighthouse events: the links registry and the uses of each link."""

from __future__ import annotations

from datetime import datetime

from shared.events.envelope import Event


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


LinksEvent = LinkCreated | LinkUpdated | LinkDeleted | LinkUsed

SUBJECTS: dict[type[Event], str] = {
    LinkCreated: "usagehub.events.links.created",
    LinkUpdated: "usagehub.events.links.updated",
    LinkDeleted: "usagehub.events.links.deleted",
    LinkUsed: "usagehub.events.links.used",
}
