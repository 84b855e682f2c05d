"""The links read model: ``apply_links`` loads the rows a batch can touch, folds it, writes back.

A use can only change sessions within ``MERGE_WINDOW`` of it, so only those are loaded: the cost of
a batch does not grow with a user's history.
"""

from __future__ import annotations

from datetime import datetime

from services.projector.link_usage import (
    MERGE_WINDOW,
    LinkRow,
    LinksState,
    Session,
    Sessions,
    fold_usage_events,
)
from shared.db import Conn
from shared.events import AnyEvent, LinkCreated, LinkDeleted, LinkUpdated, LinkUsed

FILTERS = ["usagehub.events.links.>"]
TABLES = ("link_usage_sessions", "links")


def usage_windows(events: list[AnyEvent]) -> dict[tuple[int, str], tuple[datetime, datetime]]:
    """Per (link, user): the span of sessions this batch's uses can reach."""
    spans: dict[tuple[int, str], tuple[datetime, datetime]] = {}
    for e in events:
        if isinstance(e, LinkUsed):
            key = (e.link_id, e.user)
            lo, hi = spans.get(key, (e.used_at, e.used_at))
            spans[key] = (min(lo, e.used_at), max(hi, e.used_at))
    return {k: (lo - MERGE_WINDOW, hi + MERGE_WINDOW) for k, (lo, hi) in spans.items()}


async def _load(conn: Conn, events: list[AnyEvent]) -> LinksState:
    ids = sorted(
        {e.link_id for e in events if isinstance(e, LinkCreated | LinkUpdated | LinkDeleted | LinkUsed)}
    )
    rows = await conn.fetch(
        "SELECT link_id, name, url, description, created_at FROM links WHERE link_id = ANY($1::int[])", ids
    )
    windows = usage_windows(events)
    keys = list(windows)
    found = await conn.fetch(
        "SELECT s.link_id, s.user_name, s.started_at, s.last_at FROM link_usage_sessions s"
        " JOIN unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[])"
        " AS w(link_id, user_name, lo, hi)"
        " ON s.link_id = w.link_id AND s.user_name = w.user_name"
        " WHERE s.last_at >= w.lo AND s.started_at <= w.hi",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [windows[k][0] for k in keys],
        [windows[k][1] for k in keys],
    )
    sessions: dict[tuple[int, str], list[Session]] = {}
    for r in found:
        sessions.setdefault((r["link_id"], r["user_name"]), []).append(Session(r["started_at"], r["last_at"]))
    return LinksState(
        links={r["link_id"]: LinkRow(**dict(r)) for r in rows},
        sessions={k: tuple(sorted(v, key=lambda s: s.start)) for k, v in sessions.items()},
    )


def _session_changes(before: Sessions, after: Sessions) -> tuple[list[datetime], list[Session]]:
    """(starts of rows to delete, sessions to upsert) turning ``before`` into ``after``."""
    old = {s.start: s for s in before}
    new = {s.start: s for s in after}
    gone = [start for start in old if start not in new]
    return gone, [s for start, s in new.items() if old.get(start) != s]


async def apply_links(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    batch = [e for _, e in events]
    before = await _load(conn, batch)
    after = fold_usage_events(before, batch)

    changed = [row for i, row in after.links.items() if row is not None and before.links.get(i) != row]
    if changed:
        await conn.executemany(
            "INSERT INTO links (link_id, name, url, description, created_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (link_id) DO UPDATE SET"
            " name = EXCLUDED.name, url = EXCLUDED.url, description = EXCLUDED.description",
            [(r.link_id, r.name, r.url, r.description, r.created_at) for r in changed],
        )

    gone: list[tuple[int, str, datetime]] = []
    upserts: list[tuple[int, str, datetime, datetime, int]] = []
    for key in before.sessions.keys() | after.sessions.keys():
        link_id, user = key
        if after.links.get(link_id) is None:
            continue  # the link is gone: its sessions go with it (ON DELETE CASCADE)
        starts, sessions = _session_changes(before.sessions.get(key, ()), after.sessions.get(key, ()))
        gone += [(link_id, user, start) for start in starts]
        upserts += [(link_id, user, s.start, s.last, s.duration) for s in sessions]
    # One statement each, with the rows as arrays: executemany is a round of work in Postgres per row.
    if gone:
        await conn.execute(
            "DELETE FROM link_usage_sessions s"
            " USING unnest($1::int[], $2::text[], $3::timestamptz[]) AS g(link_id, user_name, started_at)"
            " WHERE s.link_id = g.link_id AND s.user_name = g.user_name AND s.started_at = g.started_at",
            *(list(column) for column in zip(*gone, strict=True)),
        )
    if upserts:
        await conn.execute(
            "INSERT INTO link_usage_sessions (link_id, user_name, started_at, last_at, duration)"
            " SELECT * FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])"
            " ON CONFLICT (link_id, user_name, started_at) DO UPDATE SET"
            " last_at = EXCLUDED.last_at, duration = EXCLUDED.duration",
            *(list(column) for column in zip(*upserts, strict=True)),
        )

    deleted = [i for i, row in after.links.items() if row is None and before.links.get(i) is not None]
    if deleted:
        await conn.execute("DELETE FROM links WHERE link_id = ANY($1::int[])", deleted)
