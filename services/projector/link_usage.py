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


def add_use(sessions: Sessions, at: datetime) -> Sessions:
    """The sessions of one (link, user) after one more use at ``at``.

    Equal to recomputing from all uses sorted by time: only the gaps beside ``at`` can change.
    """
    i = bisect_right([s.start for s in sessions], at)
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


def fold_usage_sessions(state: LinksState, event: AnyEvent) -> LinksState:
    match event:
        case LinkCreated(link_id=link_id, name=name, url=url, description=description, occurred_at=at):
            row = LinkRow(link_id, name, url, description, at)
            return replace(state, links={**state.links, link_id: row})
        case LinkUpdated(link_id=link_id):
            current = state.links.get(link_id)
            if current is None:
                return state
            row = replace(
                current,
                name=current.name if event.name is None else event.name,
                url=current.url if event.url is None else event.url,
                description=current.description if event.description is None else event.description,
            )
            return replace(state, links={**state.links, link_id: row})
        case LinkDeleted(link_id=link_id):
            sessions = {k: v for k, v in state.sessions.items() if k[0] != link_id}
            return LinksState(links={**state.links, link_id: None}, sessions=sessions)
        case LinkUsed(link_id=link_id, user=user, used_at=at):
            # Ingest never accepts a use of a missing link; ignoring one keeps replays deterministic anyway.
            if state.links.get(link_id) is None:
                return state
            key = (link_id, user)
            return replace(state, sessions={**state.sessions, key: add_use(state.sessions.get(key, ()), at)})
    return state


def fold_usage_events(state: LinksState, events: Iterable[AnyEvent]) -> LinksState:
    for event in events:
        state = fold_usage_sessions(state, event)
    return state
