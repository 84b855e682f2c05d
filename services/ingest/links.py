"""Links: the registry ingest decides against, folded from link events, and the pure decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from services.ingest.rejected import Rejected
from shared.commands import CreateLink, DeleteLink, RecordLinkUsage, UpdateLink
from shared.events import Event, LinkCreated, LinkDeleted, LinkUpdated, LinkUsed

MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2000
MAX_DESCRIPTION_LENGTH = 2000
MAX_USER_LENGTH = 200
# How far a client's ``used_at`` may be from the ingest's clock, either way.
MAX_CLOCK_SKEW = timedelta(minutes=5)

# The registry reads only these: usage events would make every catch-up read the whole usage log.
REGISTRY_SUBJECTS = [
    "usagehub.events.links.created",
    "usagehub.events.links.updated",
    "usagehub.events.links.deleted",
]
CREATED_SUBJECT = "usagehub.events.links.created"
DELETED_SUBJECT = "usagehub.events.links.deleted"


@dataclass(frozen=True, slots=True)
class Link:
    link_id: int
    name: str
    url: str
    description: str
    created_at: datetime

    def as_result(self) -> dict[str, object]:
        return {
            "id": self.link_id,
            "name": self.name,
            "url": self.url,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class LinkRegistry:
    # Live links only: a deleted id is gone here, and never handed out again.
    links: Mapping[int, Link] = field(default_factory=dict)
    last_id: int = 0
    # Sequences of the last registry event, and of the last one on each subject an append expects on.
    last_seq: int = 0
    last_created_seq: int = 0
    last_deleted_seq: int = 0

    @property
    def next_id(self) -> int:
        return self.last_id + 1


def fold_link_registry(registry: LinkRegistry, event: Event, seq: int) -> LinkRegistry:
    match event:
        case LinkCreated(link_id=link_id, name=name, url=url, description=description, occurred_at=at):
            link = Link(link_id, name, url, description, at)
            return replace(
                registry,
                links={**registry.links, link_id: link},
                last_id=max(registry.last_id, link_id),
                last_seq=seq,
                last_created_seq=seq,
            )
        case LinkUpdated(link_id=link_id):
            links = dict(registry.links)
            if link_id in links:
                links[link_id] = updated(links[link_id], event)
            return replace(registry, links=links, last_seq=seq)
        case LinkDeleted(link_id=link_id):
            links = dict(registry.links)
            links.pop(link_id, None)
            return replace(registry, links=links, last_seq=seq, last_deleted_seq=seq)
    return registry


def skip_link_message(registry: LinkRegistry, subject: str, seq: int) -> LinkRegistry:
    """A message on a registry subject that is no event: only its position counts."""
    return replace(
        registry,
        last_seq=seq,
        last_created_seq=seq if subject == CREATED_SUBJECT else registry.last_created_seq,
        last_deleted_seq=seq if subject == DELETED_SUBJECT else registry.last_deleted_seq,
    )


def updated(link: Link, event: LinkUpdated) -> Link:
    return replace(
        link,
        name=link.name if event.name is None else event.name,
        url=link.url if event.url is None else event.url,
        description=link.description if event.description is None else event.description,
    )


def _no_control_characters(value: str, what: str, allowed: str = "") -> None:
    if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
        raise Rejected(400, f"{what} must not contain control characters")


def valid_name(name: str) -> str:
    if not name.strip():
        raise Rejected(400, "name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(400, f"name must be at most {MAX_NAME_LENGTH} characters")
    _no_control_characters(name, "name")
    return name


def valid_url(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise Rejected(400, f"url must be at most {MAX_URL_LENGTH} characters")
    _no_control_characters(url, "url")
    try:
        parts = urlsplit(url)
        # Reading the port validates it (a non-number or out of range raises).
        _ = parts.port
    except ValueError:
        raise Rejected(400, "url must be an absolute http(s) URL") from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or " " in url:
        raise Rejected(400, "url must be an absolute http(s) URL")
    return url


def valid_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise Rejected(400, f"description must be at most {MAX_DESCRIPTION_LENGTH} characters")
    # Line breaks are text; NUL and the rest are not (Postgres could not even store a NUL).
    _no_control_characters(description, "description", allowed="\t\n\r")
    return description


def valid_user(user: str) -> str:
    if not user.strip():
        raise Rejected(400, "user must be a non-empty string")
    if len(user) > MAX_USER_LENGTH:
        raise Rejected(400, f"user must be at most {MAX_USER_LENGTH} characters")
    _no_control_characters(user, "user")
    return user


def live_link(registry: LinkRegistry, link_id: int) -> Link:
    link = registry.links.get(link_id)
    if link is None:
        raise Rejected(404, f"link {link_id} does not exist")
    return link


def create_link(cmd: CreateLink, registry: LinkRegistry, *, event_id: str, at: datetime) -> LinkCreated:
    return LinkCreated(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        link_id=registry.next_id,
        name=valid_name(cmd.name),
        url=valid_url(cmd.url),
        description=valid_description(cmd.description),
    )


def update_link(cmd: UpdateLink, registry: LinkRegistry, *, event_id: str, at: datetime) -> LinkUpdated:
    live_link(registry, cmd.link_id)  # before the arguments: an unknown link is 404 whatever they are
    if cmd.name is None and cmd.url is None and cmd.description is None:
        raise Rejected(400, "nothing to update: give name, url or description")
    return LinkUpdated(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        link_id=cmd.link_id,
        name=None if cmd.name is None else valid_name(cmd.name),
        url=None if cmd.url is None else valid_url(cmd.url),
        description=None if cmd.description is None else valid_description(cmd.description),
    )


def delete_link(cmd: DeleteLink, registry: LinkRegistry, *, event_id: str, at: datetime) -> LinkDeleted:
    live_link(registry, cmd.link_id)
    return LinkDeleted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        link_id=cmd.link_id,
    )


def valid_client_time(used_at: datetime, at: datetime) -> datetime:
    if used_at.tzinfo is None or used_at.utcoffset() is None:
        raise Rejected(400, "used_at must carry a UTC offset (e.g. 2016-03-04T14:53:25.740Z)")
    skew = used_at - at
    if abs(skew) > MAX_CLOCK_SKEW:
        raise Rejected(
            400,
            f"used_at is {skew.total_seconds():+.0f} s from the ingest's clock;"
            f" at most {MAX_CLOCK_SKEW.total_seconds():.0f} s either way is accepted",
        )
    return used_at.astimezone(UTC)


def record_link_usage(
    cmd: RecordLinkUsage, registry: LinkRegistry, *, event_id: str, at: datetime
) -> LinkUsed:
    """A use at the client's time if it gave an acceptable one, else at the ingest's clock ``at``."""
    live_link(registry, cmd.link_id)  # the document: 404 for an unknown link, whatever the arguments
    user = valid_user(cmd.user)
    used_at = at if cmd.used_at is None else valid_client_time(cmd.used_at, at)
    return LinkUsed(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        link_id=cmd.link_id,
        user=user,
        used_at=used_at,
    )
