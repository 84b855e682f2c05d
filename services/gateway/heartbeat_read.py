"""The heartbeat statistics answer: read from the read model, shaped by a pure function of "now"."""

from __future__ import annotations

from dataclasses import dataclass
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
