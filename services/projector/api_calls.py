"""The API-call counters: per org, service and quarter hour, and per local day (own and subtree).

``tally_calls`` is pure: a batch of events in, the increments of every counter out. Counters only
ever add, so any batching of the same events gives the same rows; ``apply_api_calls`` writes a
batch's increments with one upsert per table.
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from shared.db import Conn
from shared.events import AnyEvent
from shared.events.metering import ApiCallsCounted, OrgCreated

FILTERS = ["usagehub.events.metering.org_created", "usagehub.events.metering.api_calls_counted"]
TABLES = ("api_call_orgs", "api_call_counts", "api_call_days", "api_call_subtree_days")

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
    counts: Counter[tuple[str, datetime, str]] = field(default_factory=Counter)
    # (zone, org, local day, service): the org's own calls
    days: Counter[tuple[str, str, date, str]] = field(default_factory=Counter)
    # (org, local day in its zone, service): the calls of the org and its whole subtree
    subtree_days: Counter[tuple[str, date, str]] = field(default_factory=Counter)


def quarter_start(at: datetime) -> datetime:
    """The start of the quarter hour (UTC) holding ``at``."""
    return at - (at - _EPOCH) % QUARTER


@lru_cache(maxsize=65_536)
def local_day(bucket: datetime, zone: str) -> date:
    return bucket.astimezone(zoneinfo.ZoneInfo(zone)).date()


def tally_calls(known: Mapping[str, OrgChain], events: Iterable[AnyEvent]) -> CallTally:
    """The increments a batch makes, given the chains of the orgs it names that were created before it.

    Calls of an org this projection never saw created are left out: ingest never accepts them, and
    skipping them keeps a replay deterministic anyway.
    """
    tally = CallTally()
    for event in events:
        match event:
            case OrgCreated(org_id=org_id, time_zone=zone, parent_id=parent_id):
                if org_id in known or org_id in tally.orgs:
                    continue
                parent = None if parent_id is None else tally.orgs.get(parent_id, known.get(parent_id))
                tally.orgs[org_id] = (
                    OrgChain((*parent.ancestors, org_id), (*parent.zones, zone))
                    if parent is not None
                    else OrgChain((org_id,), (zone,))
                )
            case ApiCallsCounted(counts=counts):
                for c in counts:
                    chain = tally.orgs.get(c.org_id, known.get(c.org_id))
                    if chain is None:
                        continue
                    bucket = quarter_start(c.at)
                    tally.counts[c.org_id, bucket, c.service] += c.count
                    for zone in dict.fromkeys(chain.zones):
                        tally.days[zone, c.org_id, local_day(bucket, zone), c.service] += c.count
                    for ancestor, zone in zip(chain.ancestors, chain.zones, strict=True):
                        tally.subtree_days[ancestor, local_day(bucket, zone), c.service] += c.count
    return tally


def _named_orgs(events: Iterable[AnyEvent]) -> list[str]:
    names: set[str] = set()
    for e in events:
        if isinstance(e, OrgCreated):
            names.add(e.org_id)
            if e.parent_id is not None:
                names.add(e.parent_id)
        elif isinstance(e, ApiCallsCounted):
            names.update(c.org_id for c in e.counts)
    return sorted(names)


async def apply_api_calls(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
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
        days = sorted(tally.days)
        await conn.execute(
            "INSERT INTO api_call_days (zone, org_id, day, service, calls)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::bigint[])"
            " ON CONFLICT (zone, org_id, day, service) DO UPDATE"
            " SET calls = api_call_days.calls + EXCLUDED.calls",
            [k[0] for k in days],
            [k[1] for k in days],
            [k[2] for k in days],
            [k[3] for k in days],
            [tally.days[k] for k in days],
        )
    if tally.subtree_days:
        subtree = sorted(tally.subtree_days)
        await conn.execute(
            "INSERT INTO api_call_subtree_days (org_id, day, service, calls)"
            " SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[])"
            " ON CONFLICT (org_id, day, service) DO UPDATE"
            " SET calls = api_call_subtree_days.calls + EXCLUDED.calls",
            [k[0] for k in subtree],
            [k[1] for k in subtree],
            [k[2] for k in subtree],
            [tally.subtree_days[k] for k in subtree],
        )
