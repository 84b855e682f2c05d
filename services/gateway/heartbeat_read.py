"""The heartbeat statistics answer: read from the read model, shaped by a pure function of "now"."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.pages import page
from shared.db import Conn


@dataclass(frozen=True, slots=True)
class DeviceStats:
    id: int
    name: str
    last_beat: datetime | None
    num_beats: int


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    set_up_at: datetime | None
    total_beats: int
    last_beat: datetime | None
    longest_absence_us: int
    num_visits: int
    devices: tuple[DeviceStats, ...]


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _whole_seconds(later: datetime, earlier: datetime) -> int:
    return max(0, int((later - earlier).total_seconds()))


def stats_view(snap: StatsSnapshot, now: datetime) -> dict[str, Any]:
    """The ``GET /api/stats`` document.

    ``longest_absence`` includes the gap open now when it is longer than every closed one, as the
    reference server does; with no beats yet, ``last_seen``/``last_seen_relative`` are null.
    """
    relative = None if snap.last_beat is None else _whole_seconds(now, snap.last_beat)
    longest = snap.longest_absence_us // 1_000_000
    if relative is not None:
        longest = max(longest, relative)
    return {
        "last_seen": _unix(snap.last_beat),
        "last_seen_relative": relative,
        "longest_absence": longest,
        "num_visits": snap.num_visits,
        "total_beats": snap.total_beats,
        "devices": [
            {"id": d.id, "name": d.name, "last_beat": _unix(d.last_beat), "num_beats": d.num_beats}
            for d in snap.devices
        ],
        "uptime": 0 if snap.set_up_at is None else _whole_seconds(now, snap.set_up_at),
    }


async def read_snapshot(pool: asyncpg.Pool) -> StatsSnapshot:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        set_up_at = await conn.fetchval("SELECT set_up_at FROM installation")
        stats = await conn.fetchrow(
            "SELECT total_beats, last_beat, longest_absence_us, num_visits FROM heartbeat_stats"
        )
        devices = await conn.fetch(
            "SELECT device_id, name, last_beat, num_beats FROM heartbeat_devices ORDER BY device_id"
        )
    return StatsSnapshot(
        set_up_at=set_up_at,
        total_beats=stats["total_beats"] if stats else 0,
        last_beat=stats["last_beat"] if stats else None,
        longest_absence_us=stats["longest_absence_us"] if stats else 0,
        num_visits=stats["num_visits"] if stats else 0,
        devices=tuple(
            DeviceStats(r["device_id"], r["name"], r["last_beat"], r["num_beats"]) for r in devices
        ),
    )


async def devices_page(conn: Conn, limit: int, offset: int) -> dict[str, Any]:
    total = int(await conn.fetchval("SELECT count(*) FROM heartbeat_devices"))
    rows = await conn.fetch(
        "SELECT device_id, name, registered_at, last_beat, num_beats FROM heartbeat_devices"
        " ORDER BY device_id LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    items = [
        {
            "id": r["device_id"],
            "name": r["name"],
            "registered_at": r["registered_at"].isoformat(),
            "last_beat": None if r["last_beat"] is None else r["last_beat"].isoformat(),
            "num_beats": r["num_beats"],
        }
        for r in rows
    ]
    return page(items, total, limit, offset)


# The devices as the JSON array text ``json.dumps`` writes of ``stats_view``'s list (same keys, order,
# separators and escapes; only a non-ASCII character stays as itself rather than a \u escape), built
# by Postgres: a Python object per device made this answer cost about 5 ms per 1,000 devices.
_DEVICES_JSON = (
    "SELECT '[' || coalesce(string_agg('{\"id\": ' || device_id || ', \"name\": ' || to_json(name)::text"
    " || ', \"last_beat\": ' || coalesce(floor(extract(epoch FROM last_beat))::bigint::text, 'null')"
    " || ', \"num_beats\": ' || num_beats || '}', ', ' ORDER BY device_id), '') || ']'"
    " FROM heartbeat_devices"
)


@dataclass(frozen=True, slots=True)
class DevicesJson:
    """The devices' JSON as of a version of the heartbeat read model: its checkpoint's position and
    the transaction that wrote it (every commit of the projection, and a rebuild, rewrites that row)."""

    position: int
    written_by: int
    text: str


class LastDevicesJson:
    """The devices' JSON last read, kept while the read model has not changed (between beats every
    statistics answer, and the WebSocket feed every second, would build the same text)."""

    def __init__(self) -> None:
        self.kept: DevicesJson | None = None


async def read_stats_json(pool: asyncpg.Pool, last: LastDevicesJson, now: datetime) -> str:
    """The ``GET /api/stats`` document as ``json.dumps(stats_view(...))`` writes it, read with one
    statement (one snapshot), which builds the devices' JSON only if ``last`` is not of its version."""
    kept = last.kept
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT set_up_at FROM installation) AS set_up_at, s.total_beats, s.last_beat,"
            " s.longest_absence_us, s.num_visits, c.position, c.xmin::text::bigint AS written_by,"
            " CASE WHEN c.position = $1 AND c.xmin::text::bigint = $2 THEN NULL"
            f" ELSE ({_DEVICES_JSON}) END AS devices"
            " FROM (VALUES (1)) AS one (x) LEFT JOIN heartbeat_stats AS s ON true"
            " LEFT JOIN projection_checkpoints AS c ON c.projection = 'heartbeat'",
            None if kept is None else kept.position,
            None if kept is None else kept.written_by,
        )
    assert row is not None
    if row["devices"] is None:
        assert kept is not None
        devices = kept.text
    else:
        devices = row["devices"]
        if row["position"] is not None:
            last.kept = DevicesJson(int(row["position"]), int(row["written_by"]), devices)
    snap = StatsSnapshot(
        set_up_at=row["set_up_at"],
        total_beats=row["total_beats"] or 0,
        last_beat=row["last_beat"],
        longest_absence_us=row["longest_absence_us"] or 0,
        num_visits=row["num_visits"] or 0,
        devices=(),
    )
    return stats_json(snap, devices, now)


def stats_json(snap: StatsSnapshot, devices_json: str, now: datetime) -> str:
    """``json.dumps(stats_view(snap, now))`` with ``devices_json`` as its devices."""
    document = json.dumps(stats_view(replace(snap, devices=()), now))
    # Every other field is a number or null: the one '"devices": []' is where the list goes.
    return document.replace('"devices": []', '"devices": ' + devices_json, 1)
