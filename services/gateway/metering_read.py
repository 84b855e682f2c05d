"""Reads of the metering read models: who a key or session is, the orgs a query covers, the counters
that answer it, and the admin listings. Callers hold one snapshot per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.gateway.metering_history import Buckets, Counters, OrgInfo, Plan
from services.gateway.pages import page
from shared.db import Conn


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom an org key or a session speaks for."""

    org_id: str
    time_zone: str
    key_id: str
    super_ops: bool


_CALLER = (
    "SELECT k.key_id, k.org_id, k.revoked_at, o.time_zone, coalesce(p.super_ops, false) AS super_ops"
    " FROM metering_keys k JOIN metering_orgs o ON o.org_id = k.org_id"
    " LEFT JOIN metering_principals p ON p.principal_id = k.principal_id"
)


def _caller(row: Any) -> Caller:
    return Caller(row["org_id"], row["time_zone"], row["key_id"], row["super_ops"])


async def caller_by_key(conn: Conn, key_hash: str) -> Caller | None:
    """The key's org, or ``None`` for an unknown or revoked key."""
    row = await conn.fetchrow(_CALLER + " WHERE k.key_hash = $1", key_hash)
    return None if row is None or row["revoked_at"] is not None else _caller(row)


async def caller_by_session(conn: Conn, session_hash: str) -> Caller | str:
    """The session's caller, or why it cannot be used.

    Expiry is decided on the database's clock, one clock for every gateway replica: a session
    ends at the same instant whichever replica is asked (``expires_at`` is the event's time plus
    the session's lifetime).
    """
    row = await conn.fetchrow(
        "SELECT s.expires_at, s.expires_at <= statement_timestamp() AS expired, c.* FROM metering_sessions s"
        f" JOIN ({_CALLER}) c ON c.key_id = s.key_id WHERE s.session_hash = $1",
        session_hash,
    )
    if row is None:
        return "unknown session: authenticate again with api.authenticate"
    if row["revoked_at"] is not None:
        return "the session's API key was revoked"
    if row["expired"]:
        return f"the session expired at {row['expires_at'].isoformat()}: authenticate again"
    return _caller(row)


async def scope(conn: Conn, caller: Caller, *, include_sub_orgs: bool, show_all: bool) -> list[OrgInfo]:
    """The orgs a query covers: the caller's, its whole subtree, or every org."""
    columns = "SELECT org_id, time_zone, ancestors FROM metering_orgs"
    if show_all:
        rows = await conn.fetch(columns + " ORDER BY org_id")
    elif include_sub_orgs:
        rows = await conn.fetch(columns + " WHERE ancestors @> ARRAY[$1] ORDER BY org_id", caller.org_id)
    else:
        rows = await conn.fetch(columns + " WHERE org_id = $1", caller.org_id)
    return [OrgInfo(r["org_id"], r["time_zone"], tuple(r["ancestors"])) for r in rows]


async def counters(conn: Conn, plan: Plan, zone: str, buckets: Buckets, *, by_org: bool) -> Counters:
    """Calls per (org or all, service) in each bucket, from the counters ``plan`` names.

    Hours: one row per (org or all, service) with its bucket positions and calls as two arrays. Days:
    one row per org, service and local month, a cell per day: a year of days for twenty orgs is
    about 1,300 rows to decode, not tens of thousands.
    """
    out = Counters(len(buckets.starts), by_org)
    org = "org_id" if by_org else "NULL::text"
    if buckets.days and (plan.subtree_days or plan.days):
        first, last = buckets.days[0], buckets.days[-1]
        # A day's bucket from its distance to the first day (a date the zone skipped has none).
        position: dict[int, int] | None = {(day - first).days: i for i, day in enumerate(buckets.days)}
        if position is not None and len(position) == (last - first).days + 1:
            position = None  # every date is a bucket: a month's cells land as one run
        sources: list[tuple[str, list[Any]]] = []
        if plan.subtree_days:
            sources.append(
                ("api_call_subtree_months WHERE org_id = ANY($3::text[])", [list(plan.subtree_days)])
            )
        if plan.days:
            sources.append(
                ("api_call_months WHERE org_id = ANY($3::text[]) AND zone = $4", [list(plan.days), zone])
            )
        for source, args in sources:
            rows = await conn.fetch(
                f"SELECT {org} AS org_id, service, month, calls FROM {source} AND month BETWEEN $1 AND $2",
                first.replace(day=1),
                last.replace(day=1),
                *args,
            )
            for r in rows:
                offset = (r["month"] - first).days
                out.add_month(r["org_id"] or "", r["service"], offset, r["calls"], position)
    if plan.quarters:
        rows = await conn.fetch(
            f"SELECT {org} AS org_id, service, array_agg(i) AS offsets, array_agg(calls) AS calls FROM ("
            " SELECT org_id, service, width_bucket(bucket, $2::timestamptz[]) - 1 AS i,"
            " sum(calls)::bigint AS calls FROM api_call_counts"
            " WHERE org_id = ANY($1::text[]) AND bucket >= $3 AND bucket < $4"
            " GROUP BY org_id, service, i) s GROUP BY 1, 2",
            list(plan.quarters),
            buckets.boundaries,
            buckets.starts[0],
            buckets.end,
        )
        for r in rows:
            out.add_series(r["org_id"] or "", r["service"], r["offsets"], r["calls"])
    return out


# --- admin ------------------------------------------------------------------------------------


def org_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["org_id"],
        "name": row["name"],
        "time_zone": row["time_zone"],
        "parent": row["parent_id"],
        "created_at": row["created_at"].isoformat(),
    }


async def org(conn: Conn, org_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT org_id, name, time_zone, parent_id, created_at FROM metering_orgs WHERE org_id = $1", org_id
    )
    return None if row is None else org_json(row)


async def orgs_page(conn: Conn, limit: int, offset: int) -> dict[str, Any]:
    total = int(await conn.fetchval("SELECT count(*) FROM metering_orgs"))
    rows = await conn.fetch(
        "SELECT org_id, name, time_zone, parent_id, created_at FROM metering_orgs"
        " ORDER BY org_id LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    return page([org_json(r) for r in rows], total, limit, offset)


async def keys_page(conn: Conn, org_id: str, limit: int, offset: int) -> dict[str, Any]:
    """An org's keys (never their secrets), revoked ones included, oldest first."""
    total = int(await conn.fetchval("SELECT count(*) FROM metering_keys WHERE org_id = $1", org_id))
    rows = await conn.fetch(
        "SELECT key_id, principal_id, name, created_at, revoked_at FROM metering_keys"
        " WHERE org_id = $1 ORDER BY created_at, key_id LIMIT $2 OFFSET $3",
        org_id,
        limit,
        offset,
    )
    items = [
        {
            "id": r["key_id"],
            "principal": r["principal_id"],
            "name": r["name"],
            "created_at": r["created_at"].isoformat(),
            "revoked_at": None if r["revoked_at"] is None else r["revoked_at"].isoformat(),
        }
        for r in rows
    ]
    return page(items, total, limit, offset)
