"""The Lighthouse merge, as a pure fold: link events in, links and usage sessions out.

A use within ``MERGE_WINDOW`` (inclusive) of the same user's previous use of the same link extends
that usage; otherwise it starts a new one. Uses are ordered by ``used_at``, never by arrival, so the
result depends only on the set of (link, user, used_at) uses: any order, any repetition, same answer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import attrgetter

from shared.events import AnyEvent, LinkCreated, LinkDeleted, LinkUpdated, LinkUsed

MERGE_WINDOW = timedelta(hours=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Session:
    """One usage: its first use and its last; every gap between its uses is within the window."""

    start: datetime
    last: datetime

    @property
    def duration(self) -> int:
        """Whole seconds from the first use to the last (rounded down)."""
        return (self.last - self.start) // _SECOND


Sessions = tuple[Session, ...]  # sorted by start, gaps between them larger than the window
_start = attrgetter("start")


def add_use(sessions: Sessions, at: datetime) -> Sessions:
    """The sessions of one (link, user) after one more use at ``at``.

    Equal to recomputing from all uses sorted by time: only the gaps beside ``at`` can change.
    """
    i = bisect_right(sessions, at, key=_start)
    before = sessions[i - 1] if i > 0 else None
    after = sessions[i] if i < len(sessions) else None
    if before is not None and at <= before.last:
        return sessions  # inside a usage already seen: a duplicate or a late, covered use
    joins_before = before is not None and at - before.last <= MERGE_WINDOW
    joins_after = after is not None and after.start - at <= MERGE_WINDOW
    if before is not None and after is not None and joins_before and joins_after:
        return (*sessions[: i - 1], Session(before.start, after.last), *sessions[i + 1 :])
    if before is not None and joins_before:
        return (*sessions[: i - 1], Session(before.start, at), *sessions[i:])
    if after is not None and joins_after:
        return (*sessions[:i], Session(at, after.last), *sessions[i + 1 :])
    return (*sessions[:i], Session(at, at), *sessions[i:])


@dataclass(frozen=True, slots=True)
class LinkRow:
    link_id: int
    name: str
    url: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LinksState:
    # None marks a link deleted by the events folded here (so its row must go).
    links: Mapping[int, LinkRow | None] = field(default_factory=dict)
    sessions: Mapping[tuple[int, str], Sessions] = field(default_factory=dict)


def _apply(
    links: dict[int, LinkRow | None], sessions: dict[tuple[int, str], Sessions], event: AnyEvent
) -> None:
    """``event`` folded into ``links`` and ``sessions`` in place: the one place the rules live."""
    match event:
        case LinkCreated(link_id=link_id, name=name, url=url, description=description, occurred_at=at):
            links[link_id] = LinkRow(link_id, name, url, description, at)
        case LinkUpdated(link_id=link_id):
            current = links.get(link_id)
            if current is not None:
                links[link_id] = replace(
                    current,
                    name=current.name if event.name is None else event.name,
                    url=current.url if event.url is None else event.url,
                    description=current.description if event.description is None else event.description,
                )
        case LinkDeleted(link_id=link_id):
            for key in [k for k in sessions if k[0] == link_id]:
                del sessions[key]
            links[link_id] = None
        case LinkUsed(link_id=link_id, user=user, used_at=at):
            # Ingest never accepts a use of a missing link; ignoring one keeps replays deterministic anyway.
            if links.get(link_id) is not None:
                key = (link_id, user)
                sessions[key] = add_use(sessions.get(key, ()), at)


def fold_usage_sessions(state: LinksState, event: AnyEvent) -> LinksState:
    if not isinstance(event, LinkCreated | LinkUpdated | LinkDeleted | LinkUsed):
        return state  # not a link's event: the very same state
    return fold_usage_events(state, [event])


def fold_usage_events(state: LinksState, events: Iterable[AnyEvent]) -> LinksState:
    """``state`` after ``events``; ``state`` itself is not changed. One copy of its maps for the whole
    batch, folded in place (a copy per event made a batch cost its events times its users)."""
    links = dict(state.links)
    sessions = dict(state.sessions)
    for event in events:
        _apply(links, sessions, event)
    return LinksState(links=links, sessions=sessions)
