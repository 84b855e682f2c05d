"""What the dashboard shows, read in one snapshot, every query bounded (top N, fixed windows).

The charts and the media panel read the counters the projections fold for them (beats per device
per minute and hour, usages per status and platform, API calls per quarter hour); the other panels
read existing read models through their keys or indexes, within the last week or day. Nothing
here scans the event stream or raw beats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from services.projector.beat_counts import hour_of, minute_of
from shared.db import Conn

MAX_DEVICES = 50
MAX_LINKS = 10
TOP_USERS = 3
LINK_DAYS = 7
MAX_METERED = 10
MAX_MODULES = 10
MAX_MEDIA_GROUPS = 20
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DeviceBoard:
    id: int
    name: str
    last_beat: datetime | None
    num_beats: int
    longest_absence_us: int
    longest_absence_ended: datetime | None
    per_minute: dict[datetime, int] = field(default_factory=dict)
    per_hour: dict[datetime, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkBoard:
    id: int
    name: str
    per_day: dict[datetime, tuple[int, int]]  # UTC day -> (usages, seconds of use)
    top_users: list[tuple[str, int, int]]  # (user, usages, seconds of use), most used first


@dataclass(frozen=True, slots=True)
class MeteredBoard:
    org_id: str
    org_name: str
    service: str
    per_hour: dict[datetime, int]


@dataclass(frozen=True, slots=True)
class Board:
    now: datetime
    devices: list[DeviceBoard]
    device_count: int
    links: list[LinkBoard]
    link_count: int
    media: list[tuple[str, str, int]]  # (status, platform, usages), most first
    media_ids: list[str]
    metered: list[MeteredBoard]
    modules: list[tuple[str, int, int]]  # (module, commits, loc), most commits first
    companies: list[tuple[str, int, int]]


async def _devices(conn: Conn, now: datetime) -> tuple[list[DeviceBoard], int]:
    rows = await conn.fetch(
        "SELECT device_id, name, last_beat, num_beats, longest_absence_us, longest_absence_ended"
        " FROM heartbeat_devices ORDER BY last_beat DESC NULLS LAST, device_id LIMIT $1",
        MAX_DEVICES,
    )
    count = await conn.fetchval("SELECT count(*) FROM heartbeat_devices")
    ids = [r["device_id"] for r in rows]
    minutes = await conn.fetch(
        "SELECT device_id, minute, beats FROM heartbeat_beats_minute"
        " WHERE minute > $1 AND device_id = ANY($2::int[])",
        minute_of(now) - HOUR,
        ids,
    )
    hours = await conn.fetch(
        "SELECT device_id, hour, beats FROM heartbeat_beats_hour"
        " WHERE hour > $1 AND device_id = ANY($2::int[])",
        hour_of(now) - DAY,
        ids,
    )
    boards = {
        r["device_id"]: DeviceBoard(
            r["device_id"],
            r["name"],
            r["last_beat"],
            r["num_beats"],
            r["longest_absence_us"],
            r["longest_absence_ended"],
        )
        for r in rows
    }
    for m in minutes:
        boards[m["device_id"]].per_minute[m["minute"]] = m["beats"]
    for h in hours:
        boards[h["device_id"]].per_hour[h["hour"]] = h["beats"]
    return list(boards.values()), count


async def _links(conn: Conn, now: datetime) -> tuple[list[LinkBoard], int]:
    since = hour_of(now).replace(hour=0) - DAY * (LINK_DAYS - 1)
    links = await conn.fetch("SELECT link_id, name FROM links ORDER BY link_id DESC LIMIT $1", MAX_LINKS)
    count = await conn.fetchval("SELECT count(*) FROM links")
    ids = [r["link_id"] for r in links]
    # Each link's sessions of the week, through the (link_id, started_at) index.
    days = await conn.fetch(
        "SELECT link_id, date_trunc('day', started_at, 'UTC') AS day, count(*) AS usages,"
        " sum(duration) AS seconds FROM link_usage_sessions"
        " WHERE link_id = ANY($1::int[]) AND started_at >= $2 GROUP BY 1, 2",
        ids,
        since,
    )
    users = await conn.fetch(
        "SELECT link_id, user_name, usages, seconds FROM ("
        " SELECT link_id, user_name, count(*) AS usages, sum(duration) AS seconds,"
        " row_number() OVER (PARTITION BY link_id ORDER BY sum(duration) DESC, count(*) DESC, user_name)"
        " AS place FROM link_usage_sessions WHERE link_id = ANY($1::int[]) AND started_at >= $2"
        " GROUP BY 1, 2) AS ranked WHERE place <= $3 ORDER BY link_id, place",
        ids,
        since,
        TOP_USERS,
    )
    boards = {r["link_id"]: LinkBoard(r["link_id"], r["name"], {}, []) for r in links}
    for d in days:
        boards[d["link_id"]].per_day[d["day"]] = (d["usages"], int(d["seconds"]))
    for u in users:
        boards[u["link_id"]].top_users.append((u["user_name"], u["usages"], int(u["seconds"])))
    return list(boards.values()), count


async def _metered(conn: Conn, now: datetime) -> list[MeteredBoard]:
    rows = await conn.fetch(
        "WITH hours AS (SELECT org_id, service, date_trunc('hour', bucket, 'UTC') AS hour,"
        " sum(calls) AS calls"
        " FROM api_call_counts WHERE bucket > $1 GROUP BY 1, 2, 3),"
        " top AS (SELECT org_id, service FROM hours GROUP BY 1, 2"
        " ORDER BY sum(calls) DESC, org_id, service LIMIT $2)"
        " SELECT h.org_id, coalesce(o.name, h.org_id) AS org_name, h.service, h.hour, h.calls"
        " FROM hours h JOIN top USING (org_id, service)"
        " LEFT JOIN metering_orgs o ON o.org_id = h.org_id",
        hour_of(now) - DAY,
        MAX_METERED,
    )
    boards: dict[tuple[str, str], MeteredBoard] = {}
    for r in rows:
        key = (r["org_id"], r["service"])
        board = boards.setdefault(key, MeteredBoard(r["org_id"], r["org_name"], r["service"], {}))
        board.per_hour[r["hour"]] = int(r["calls"])
    return sorted(boards.values(), key=lambda b: (-sum(b.per_hour.values()), b.org_id, b.service))


async def _contributions(conn: Conn, rollup: int, column: str) -> list[tuple[str, int, int]]:
    # Rollup 1 is per module, 2 per company; kind 1 is commits. The arrays hold running totals.
    rows = await conn.fetch(
        f"SELECT {column} AS name, n[array_upper(n, 1)] AS commits,"
        " coalesce(loc[array_upper(loc, 1)], 0) AS loc"
        " FROM contribution_month_sums WHERE rollup = $1 AND kind = 1 ORDER BY 2 DESC, 1 LIMIT $2",
        rollup,
        MAX_MODULES,
    )
    return [(r["name"], r["commits"], int(r["loc"])) for r in rows]


async def read_board(pool: asyncpg.Pool, now: datetime, *, with_devices: bool = True) -> Board:
    """The board; without devices (none, counted 0) for the panels the page refreshes, which do not
    show them: the heartbeat panel is live from the WebSocket feed."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        devices, device_count = await _devices(conn, now) if with_devices else ([], 0)
        links, link_count = await _links(conn, now)
        media = await conn.fetch(
            "SELECT status, platform, usages FROM media_usage_counts ORDER BY 3 DESC, 1, 2 LIMIT $1",
            MAX_MEDIA_GROUPS,
        )
        media_ids = await conn.fetch("SELECT DISTINCT media_id FROM media_usages ORDER BY 1 LIMIT 5")
        metered = await _metered(conn, now)
        modules = await _contributions(conn, 1, "module")
        companies = await _contributions(conn, 2, "company")
    return Board(
        now=now,
        devices=devices,
        device_count=device_count,
        links=links,
        link_count=link_count,
        media=[(r["status"], r["platform"], r["usages"]) for r in media],
        media_ids=[r["media_id"] for r in media_ids],
        metered=metered,
        modules=modules,
        companies=companies,
    )
