"""The heartbeat read model: devices, beat counts, the longest absence and visits.

``fold_heartbeat`` is pure and uses only event time; ``apply_heartbeat`` loads the rows a batch
touches, folds the batch and writes the rows back. A visit is a visitor's session, as web analytics
count them (``starts_visit``): gateways append a ``PageVisited`` when they have not seen a visitor
for 30 minutes, and this projection counts one only when that visitor's previous one is more than
30 minutes older, so several gateways, restarts and rebuilds all count the same visits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.projector.beat_counts import apply_beat_counts
from shared.db import Conn
from shared.events import (
    AnyEvent,
    BeatRecorded,
    DeviceRegistered,
    DeviceTokenRegenerated,
    InstallationSetUp,
    PageVisited,
)

FILTERS = [
    "usagehub.events.installation.>",
    "usagehub.events.devices.>",
    "usagehub.events.heartbeat.>",
]
TABLES = (
    "installation",
    "heartbeat_devices",
    "heartbeat_stats",
    "heartbeat_visitors",
    "heartbeat_beats_minute",
    "heartbeat_beats_hour",
)
# The same visitor's views within this time of each other are one visit.
VISIT_SESSION = timedelta(minutes=30)
# A visitor's last visit is kept this long after the newest visit seen; older ones cannot change a
# count unless event times were out of order by about as much (they are minutes at most).
VISITOR_RETENTION = timedelta(days=1)


def starts_visit(previous: datetime | None, at: datetime) -> bool:
    """The session rule: a view at ``at`` is a new visit unless the same visitor's previous one
    (the latest, by event time) is at most ``VISIT_SESSION`` earlier."""
    return previous is None or at - previous > VISIT_SESSION


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: int
    name: str
    registered_at: datetime
    last_beat: datetime | None = None
    num_beats: int = 0
    # Longest gap between two consecutive beats of this device (microseconds), and when it ended.
    longest_absence_us: int = 0
    longest_absence_ended: datetime | None = None


def device_beat(device: DeviceRow, at: datetime) -> DeviceRow:
    """``device`` after a beat at ``at`` (event time; it may be older than the device's last beat)."""
    if device.last_beat is None:
        return replace(device, last_beat=at, num_beats=device.num_beats + 1)
    gap = max(0, _micros(at, device.last_beat))
    longest, ended = device.longest_absence_us, device.longest_absence_ended
    if gap > longest:
        longest, ended = gap, at
    return DeviceRow(
        device.device_id,
        device.name,
        device.registered_at,
        max(device.last_beat, at),
        device.num_beats + 1,
        longest,
        ended,
    )


@dataclass(frozen=True, slots=True)
class StatsRow:
    total_beats: int = 0
    last_beat: datetime | None = None
    # Longest gap between two consecutive beats (of any device), in microseconds.
    longest_absence_us: int = 0
    num_visits: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatState:
    set_up_at: datetime | None = None
    stats: StatsRow = StatsRow()
    devices: Mapping[int, DeviceRow] = field(default_factory=dict)
    # The latest visit of each visitor (of those a batch touches): visitor hash -> event time.
    visitors: Mapping[str, datetime] = field(default_factory=dict)


def _micros(later: datetime, earlier: datetime) -> int:
    delta = later - earlier
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def fold_heartbeat(state: HeartbeatState, event: AnyEvent) -> HeartbeatState:
    match event:
        case InstallationSetUp(occurred_at=at):
            return state if state.set_up_at is not None else replace(state, set_up_at=at)
        case DeviceRegistered(device_id=device_id, name=name, occurred_at=at):
            row = DeviceRow(device_id=device_id, name=name, registered_at=at)
            return replace(state, devices={**state.devices, device_id: row})
        case DeviceTokenRegenerated():
            return state
        case BeatRecorded(device_id=device_id, occurred_at=at):
            stats = state.stats
            gap = 0 if stats.last_beat is None else max(0, _micros(at, stats.last_beat))
            # Beats accepted concurrently may reach the stream slightly out of time order.
            last = at if stats.last_beat is None else max(stats.last_beat, at)
            stats = replace(
                stats,
                total_beats=stats.total_beats + 1,
                last_beat=last,
                longest_absence_us=max(stats.longest_absence_us, gap),
            )
            devices = dict(state.devices)
            device = devices.get(device_id)
            if device is not None:
                devices[device_id] = device_beat(device, at)
            return replace(state, stats=stats, devices=devices)
        case PageVisited(visitor=""):  # from before visits were sessions: each view was a visit
            return replace(state, stats=replace(state.stats, num_visits=state.stats.num_visits + 1))
        case PageVisited(visitor=visitor, cookie_visitor=cookie_visitor, occurred_at=at):
            previous = state.visitors.get(visitor)
            visitors = dict(state.visitors)
            # The visitor's session, and the one of the name their new cookie gives them.
            for name in (visitor, cookie_visitor) if cookie_visitor else (visitor,):
                latest = visitors.get(name)
                visitors[name] = at if latest is None else max(latest, at)
            if not starts_visit(previous, at):
                return replace(state, visitors=visitors)
            stats = replace(state.stats, num_visits=state.stats.num_visits + 1)
            return replace(state, stats=stats, visitors=visitors)
    return state


def fold_heartbeat_events(state: HeartbeatState, events: Iterable[AnyEvent]) -> HeartbeatState:
    """``fold_heartbeat`` over ``events`` in order (a property test holds it to exactly that), with
    beats and views folded into local variables: a new state and a copy of the devices per event
    made a catch-up quadratic in the devices a batch touches. Rarer events go through the fold."""
    set_up_at = state.set_up_at
    total, last_beat = state.stats.total_beats, state.stats.last_beat
    longest, visits = state.stats.longest_absence_us, state.stats.num_visits
    devices, visitors = dict(state.devices), dict(state.visitors)
    for event in events:
        if isinstance(event, BeatRecorded):
            at = event.occurred_at
            if last_beat is None:
                last_beat = at
            else:
                longest = max(longest, max(0, _micros(at, last_beat)))
                last_beat = max(last_beat, at)
            total += 1
            device = devices.get(event.device_id)
            if device is not None:
                devices[event.device_id] = device_beat(device, at)
        elif isinstance(event, PageVisited) and not event.visitor:
            visits += 1
        elif isinstance(event, PageVisited):
            at, visitor, cookie_visitor = event.occurred_at, event.visitor, event.cookie_visitor
            previous = visitors.get(visitor)
            for name in (visitor, cookie_visitor) if cookie_visitor else (visitor,):
                latest = visitors.get(name)
                visitors[name] = at if latest is None else max(latest, at)
            if starts_visit(previous, at):
                visits += 1
        else:
            stats = StatsRow(total, last_beat, longest, visits)
            folded = fold_heartbeat(HeartbeatState(set_up_at, stats, devices, visitors), event)
            set_up_at, devices, visitors = folded.set_up_at, dict(folded.devices), dict(folded.visitors)
            total, last_beat = folded.stats.total_beats, folded.stats.last_beat
            longest, visits = folded.stats.longest_absence_us, folded.stats.num_visits
    return HeartbeatState(set_up_at, StatsRow(total, last_beat, longest, visits), devices, visitors)


async def apply_heartbeat(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    # Only the rows the batch can change are read (a query less for each kind it does not hold).
    ids = sorted({e.device_id for _, e in events if isinstance(e, DeviceRegistered | BeatRecorded)})
    rows = []
    if ids:
        rows = await conn.fetch(
            "SELECT device_id, name, registered_at, last_beat, num_beats, longest_absence_us,"
            " longest_absence_ended FROM heartbeat_devices"
            " WHERE device_id = ANY($1::int[])",
            ids,
        )
    stats = await conn.fetchrow(
        "SELECT total_beats, last_beat, longest_absence_us, num_visits FROM heartbeat_stats"
    )
    visits = [e for _, e in events if isinstance(e, PageVisited) and e.visitor]
    visitors = []
    if visits:
        visitors = await conn.fetch(
            "SELECT visitor, last_visit FROM heartbeat_visitors WHERE visitor = ANY($1::text[])",
            sorted({e.visitor for e in visits} | {e.cookie_visitor for e in visits if e.cookie_visitor}),
        )
    set_up_at = None
    if any(isinstance(e, InstallationSetUp) for _, e in events):
        set_up_at = await conn.fetchval("SELECT set_up_at FROM installation")
    before = HeartbeatState(
        set_up_at=set_up_at,
        stats=StatsRow(**dict(stats)) if stats else StatsRow(),
        devices={r["device_id"]: DeviceRow(**dict(r)) for r in rows},
        visitors={r["visitor"]: r["last_visit"] for r in visitors},
    )
    after = fold_heartbeat_events(before, (e for _, e in events))
    if after.set_up_at is not None and before.set_up_at is None:
        await conn.execute("INSERT INTO installation (set_up_at) VALUES ($1)", after.set_up_at)
    changed = [d for i, d in after.devices.items() if before.devices.get(i) != d]
    if changed:
        # One statement per batch (executemany is a round of work per row); each device once.
        await conn.execute(
            "INSERT INTO heartbeat_devices (device_id, name, registered_at, last_beat, num_beats,"
            " longest_absence_us, longest_absence_ended)"
            " SELECT * FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[],"
            " $6::bigint[], $7::timestamptz[])"
            " ON CONFLICT (device_id) DO UPDATE SET"
            " name = EXCLUDED.name, last_beat = EXCLUDED.last_beat, num_beats = EXCLUDED.num_beats,"
            " longest_absence_us = EXCLUDED.longest_absence_us,"
            " longest_absence_ended = EXCLUDED.longest_absence_ended",
            [d.device_id for d in changed],
            [d.name for d in changed],
            [d.registered_at for d in changed],
            [d.last_beat for d in changed],
            [d.num_beats for d in changed],
            [d.longest_absence_us for d in changed],
            [d.longest_absence_ended for d in changed],
        )
    await apply_beat_counts(conn, [e for _, e in events if isinstance(e, BeatRecorded)])
    seen = [(v, at) for v, at in after.visitors.items() if before.visitors.get(v) != at]
    if seen:
        await conn.execute(
            "INSERT INTO heartbeat_visitors (visitor, last_visit)"
            " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
            " ON CONFLICT (visitor) DO UPDATE SET last_visit = EXCLUDED.last_visit",
            [v for v, _ in seen],
            [at for _, at in seen],
        )
        newest = max(e.occurred_at for e in visits)
        await conn.execute("DELETE FROM heartbeat_visitors WHERE last_visit < $1", newest - VISITOR_RETENTION)
    if after.stats != before.stats:
        s = after.stats
        await conn.execute(
            "INSERT INTO heartbeat_stats (id, total_beats, last_beat, longest_absence_us, num_visits)"
            " VALUES (true, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET"
            " total_beats = EXCLUDED.total_beats, last_beat = EXCLUDED.last_beat,"
            " longest_absence_us = EXCLUDED.longest_absence_us,"
            " num_visits = EXCLUDED.num_visits",
            s.total_beats,
            s.last_beat,
            s.longest_absence_us,
            s.num_visits,
        )
