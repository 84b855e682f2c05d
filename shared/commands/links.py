"""Lighthouse commands: the links registry and recording a use of a link."""

from __future__ import annotations

from datetime import datetime

from shared.commands.envelope import Command


class CreateLink(Command, tag="CreateLink", frozen=True):
    name: str
    url: str
    description: str = ""


class UpdateLink(Command, tag="UpdateLink", frozen=True):
    link_id: int
    # None leaves a field as it is.
    name: str | None = None
    url: str | None = None
    description: str | None = None


class DeleteLink(Command, tag="DeleteLink", frozen=True):
    link_id: int


class RecordLinkUsage(Command, tag="RecordLinkUsage", frozen=True):
    link_id: int
    user: str
    # A client's own time of the use; ingest accepts it only within a bounded skew of its clock.
    used_at: datetime | None = None


LinksCommand = CreateLink | UpdateLink | DeleteLink | RecordLinkUsage
