"""The API-call counters: per org, service and quarter hour, and per local day (own and subtree),
the days kept as one row per local month with a cell per day.

``tally_calls`` is pure: a batch of events in, the increments of every counter out (``by_month``
folds the day increments into month rows). Counters only ever add, so any batching of the same
events gives the same rows; ``apply_api_calls`` writes a batch's increments with one set-based
upsert per table.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from shared.db import Conn
from shared.events import AnyEvent
from shared.events.metering import ApiCallsCounted, OrgCreated

FILTERS = ["usagehub.events.metering.org_created", "usagehub.events.metering.api_calls_counted"]
TABLES = ("api_call_orgs", "api_call_counts", "api_call_months", "api_call_subtree_months")
# Cells of a month row: day d of the month is cell d (1-based in Postgres), zero past its last day.
MONTH_CELLS = 31

QUARTER = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OrgChain:
    """An org's ancestors from its root down to itself, with each one's time zone."""

    ancestors: tuple[str, ...]
    zones: tuple[str, ...]


@dataclass(slots=True)
class CallTally:
    """What one batch adds: new orgs, and increments per counter key."""

    orgs: dict[str, OrgChain] = field(default_factory=dict)
    # (org, quarter hour, service)
    counts: dict[tuple[str, datetime, str], int] = field(default_factory=dict)
    # (zone, org, local day, service): the org's own calls
    days: dict[tuple[str, str, date, str], int] = field(default_factory=dict)
    # (org, local day in its zone, service): the calls of the org and its whole subtree
    subtree_days: dict[tuple[str, date, str], int] = field(default_factory=dict)


def quarter_start(at: datetime) -> datetime:
    """The start of the quarter hour (UTC) holding ``at``."""
    return at - (at - _EPOCH) % QUARTER


@lru_cache(maxsize=65_536)
def local_day(bucket: datetime, zone: str) -> date:
    return bucket.astimezone(zoneinfo.ZoneInfo(zone)).date()


def _chain(org_id: str, zone: str, parent: OrgChain | None) -> OrgChain:
    if parent is None:
        return OrgChain((org_id,), (zone,))
    return OrgChain((*parent.ancestors, org_id), (*parent.zones, zone))


def tally_calls(known: Mapping[str, OrgChain], events: Iterable[AnyEvent]) -> CallTally:
    """The increments a batch makes, given the chains of the orgs it names that were created before it.

    Calls of an org this projection never saw created are left out: ingest never accepts them, and
    skipping them keeps a replay deterministic anyway.
    """
    tally = CallTally()
    counts = tally.counts
    # The chain of each org the batch has counted calls for: once known, an org's chain never changes.
    chains: dict[str, OrgChain] = {}
    for event in events:
        # Plain type checks: this loop runs for every call counted.
        if type(event) is ApiCallsCounted:
            for c in event.counts:
                org_id = c.org_id
                if org_id not in chains:
                    chain = tally.orgs.get(org_id) or known.get(org_id)
                    if chain is None:  # not created yet (it may be later in the batch)
                        continue
                    chains[org_id] = chain
                key = (org_id, quarter_start(c.at), c.service)
                counts[key] = counts.get(key, 0) + c.count
        elif type(event) is OrgCreated:
            if event.org_id in known or event.org_id in tally.orgs:
                continue
            parent_id = event.parent_id
            parent = None if parent_id is None else tally.orgs.get(parent_id) or known.get(parent_id)
            tally.orgs[event.org_id] = _chain(event.org_id, event.time_zone, parent)
    # Then fanned out from the quarter hours, which a batch's many calls share, not call by call:
    # every counter only adds, so the sums are the same.
    tally.days = own_days(chains, counts)
    tally.subtree_days = subtree_days(chains, tally.days)
    return tally


def own_days(
    chains: Mapping[str, OrgChain], counts: Mapping[tuple[str, datetime, str], int]
) -> dict[tuple[str, str, date, str], int]:
    """Quarter-hour counts as an org's own calls per local day, in each distinct zone of its chain."""
    days: dict[tuple[str, str, date, str], int] = {}
    # Orgs share few sets of zones, and a batch's calls few quarter hours: the (zone, local day) pairs
    # are worked out once per (set of zones, quarter hour).
    zone_sets = {org_id: tuple(dict.fromkeys(chain.zones)) for org_id, chain in chains.items()}
    zone_days: dict[tuple[tuple[str, ...], datetime], tuple[tuple[str, date], ...]] = {}
    for (org_id, bucket, service), n in counts.items():
        zones = zone_sets[org_id]
        pairs = zone_days.get((zones, bucket))
        if pairs is None:
            pairs = zone_days[zones, bucket] = tuple((z, local_day(bucket, z)) for z in zones)
        for zone, day in pairs:
            key = (zone, org_id, day, service)
            days[key] = days.get(key, 0) + n
    return days


def subtree_days(
    chains: Mapping[str, OrgChain], days: Mapping[tuple[str, str, date, str], int]
) -> dict[tuple[str, date, str], int]:
    """An org's own days as the days of each of its ancestors' subtrees (itself included), each in
    the ancestor's zone: ``days`` holds every org's calls in every zone of its chain."""
    subtree: dict[tuple[str, date, str], int] = {}
    # The ancestors of each (org, zone) whose zone it is.
    holders: dict[tuple[str, str], tuple[str, ...]] = {}
    for (zone, org_id, day, service), n in days.items():
        ancestors = holders.get((org_id, zone))
        if ancestors is None:
            chain = chains[org_id]
            ancestors = holders[org_id, zone] = tuple(
                a for a, z in zip(chain.ancestors, chain.zones, strict=True) if z == zone
            )
        for ancestor in ancestors:
            key = (ancestor, day, service)
            subtree[key] = subtree.get(key, 0) + n
    return subtree


def by_month(increments: Mapping[tuple[Any, ...], int], day_at: int) -> dict[tuple[Any, ...], list[int]]:
    """Day increments as month rows: each key with its day (at ``day_at``) replaced by the first day
    of its month, and the increments in the cells of the month's days."""
    months: dict[tuple[Any, ...], list[int]] = {}
    for key, n in increments.items():
        day: date = key[day_at]
        month_key = (*key[:day_at], day.replace(day=1), *key[day_at + 1 :])
        cells = months.get(month_key)
        if cells is None:
            cells = months[month_key] = [0] * MONTH_CELLS
        cells[day.day - 1] += n
    return months


def _columns(rows: Mapping[tuple[Hashable, ...], list[int]]) -> tuple[list[list[Any]], list[int]]:
    """Month rows as upsert arguments, in key order: one list per key column, and every row's cells
    end to end (a flat array: Postgres takes no array of arrays of different rows through unnest)."""
    keys = sorted(rows)
    columns = [[k[i] for k in keys] for i in range(len(keys[0]))]
    return columns, [n for k in keys for n in rows[k]]


# The cells of row ``i`` (1-based) of the flat array, and the cell-by-cell sum on conflict (spelled
# out: an expression, where a subquery unnesting both arrays costs twice as much per row).
_CELLS = f"($CELLS::bigint[])[(u.i - 1) * {MONTH_CELLS} + 1 : u.i * {MONTH_CELLS}]"
_ADD_CELLS = "ARRAY[{}]".format(
    ", ".join(f"{{table}}.calls[{d}] + EXCLUDED.calls[{d}]" for d in range(1, MONTH_CELLS + 1))
)


def _named_orgs(events: list[AnyEvent]) -> list[str]:
    # Comprehensions with plain type checks: this runs over every call of a batch.
    names = {c.org_id for e in events if type(e) is ApiCallsCounted for c in e.counts}
    for e in events:
        if type(e) is OrgCreated:
            names.add(e.org_id)
            if e.parent_id is not None:
                names.add(e.parent_id)
    return sorted(names)


async def apply_api_calls(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    # The batch's commit need not wait for its WAL flush: if Postgres loses it in a crash, the
    # checkpoint written in the same transaction is lost with it, and the projector, which always
    # restarts from the checkpoint in Postgres, applies the same events again from the stream.
    await conn.execute("SET LOCAL synchronous_commit = off")
    batch = [e for _, e in events]
    rows = await conn.fetch(
        "SELECT org_id, ancestors, ancestor_zones FROM api_call_orgs WHERE org_id = ANY($1::text[])",
        _named_orgs(batch),
    )
    known = {r["org_id"]: OrgChain(tuple(r["ancestors"]), tuple(r["ancestor_zones"])) for r in rows}
    tally = tally_calls(known, batch)
    if tally.orgs:
        await conn.executemany(
            "INSERT INTO api_call_orgs (org_id, ancestors, ancestor_zones) VALUES ($1, $2, $3)",
            [(o, list(c.ancestors), list(c.zones)) for o, c in sorted(tally.orgs.items())],
        )
    # Sorted, so two writers could never deadlock (one leader writes, but a rebuild may overlap).
    if tally.counts:
        keys = sorted(tally.counts)
        await conn.execute(
            "INSERT INTO api_call_counts (org_id, bucket, service, calls)"
            " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])"
            " ON CONFLICT (org_id, bucket, service) DO UPDATE"
            " SET calls = api_call_counts.calls + EXCLUDED.calls",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [tally.counts[k] for k in keys],
        )
    if tally.days:
        columns, cells = _columns(by_month(tally.days, 2))
        await conn.execute(
            "INSERT INTO api_call_months (zone, org_id, month, service, calls)"
            f" SELECT u.zone, u.org_id, u.month, u.service, {_CELLS.replace('$CELLS', '$5')}"
            " FROM unnest($1::text[], $2::text[], $3::date[], $4::text[])"
            " WITH ORDINALITY AS u(zone, org_id, month, service, i)"
            " ON CONFLICT (zone, org_id, month, service) DO UPDATE"
            f" SET calls = {_ADD_CELLS.format(table='api_call_months')}",
            *columns,
            cells,
        )
    if tally.subtree_days:
        columns, cells = _columns(by_month(tally.subtree_days, 1))
        await conn.execute(
            "INSERT INTO api_call_subtree_months (org_id, month, service, calls)"
            f" SELECT u.org_id, u.month, u.service, {_CELLS.replace('$CELLS', '$4')}"
            " FROM unnest($1::text[], $2::date[], $3::text[]) WITH ORDINALITY AS u(org_id, month, service, i)"
            " ON CONFLICT (org_id, month, service) DO UPDATE"
            f" SET calls = {_ADD_CELLS.format(table='api_call_subtree_months')}",
            *columns,
            cells,
        )
