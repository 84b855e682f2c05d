"""Reads of the links read model, shaped as the Lighthouse API answers them.

Callers hold one snapshot per request, so a link and its usage are read as of the same moment.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.gateway.pages import page
from shared.db import Conn


def iso_ms(at: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2016-03-04T14:53:25.740Z``."""
    at = at.astimezone(UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def link_json(link_id: int, name: str, url: str, description: str, created_at: datetime) -> dict[str, Any]:
    return {
        "id": link_id,
        "name": name,
        "url": url,
        "description": description,
        "created_at": iso_ms(created_at),
    }


def _link(row: asyncpg.Record) -> dict[str, Any]:
    return link_json(row["link_id"], row["name"], row["url"], row["description"], row["created_at"])


async def link(conn: Conn, link_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT link_id, name, url, description, created_at FROM links WHERE link_id = $1", link_id
    )
    return None if row is None else _link(row)


async def links_page(conn: Conn, limit: int, offset: int) -> dict[str, Any]:
    total = int(await conn.fetchval("SELECT count(*) FROM links"))
    rows = await conn.fetch(
        "SELECT link_id, name, url, description, created_at FROM links ORDER BY link_id LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    return page([_link(r) for r in rows], total, limit, offset)


@dataclass(frozen=True, slots=True)
class UsageFilter:
    user: str | None = None
    since: datetime | None = None  # usages that started at or after
    until: datetime | None = None  # usages that started before
    limit: int | None = None
    offset: int = 0


# $1 is the link; $2..$4 the filter (NULL: no filter).
_WHERE = (
    " WHERE link_id = $1 AND ($2::text IS NULL OR user_name = $2)"
    " AND ($3::timestamptz IS NULL OR started_at >= $3) AND ($4::timestamptz IS NULL OR started_at < $4)"
)


async def usage(conn: Conn, link_id: int, f: UsageFilter) -> tuple[list[dict[str, Any]], bool]:
    """One page of the link's usages, and whether more follow it."""
    rows = await conn.fetch(
        "SELECT user_name, started_at, duration FROM link_usage_sessions"
        + _WHERE
        # (started_at, user_name) is unique within a link: pages never overlap or skip.
        + " ORDER BY started_at, user_name LIMIT $5 OFFSET $6",
        link_id,
        f.user,
        f.since,
        f.until,
        None if f.limit is None else f.limit + 1,  # one more, to tell whether another page follows
        f.offset,
    )
    more = f.limit is not None and len(rows) > f.limit
    items = [
        {"user": r["user_name"], "date": iso_ms(r["started_at"]), "duration": r["duration"]}
        for r in rows[: f.limit]
    ]
    return items, more


# One usage as JSON text, written by Postgres exactly as ``json.dumps`` writes the dict ``usage``
# makes (same keys, order, separators and escapes; only a non-ASCII character stays as itself rather
# than a \u escape), and the date as ``iso_ms`` writes it (MS truncates to the millisecond).
_USAGE_ITEM_JSON = (
    """'{"user": ' || to_json(user_name)::text"""
    """ || ', "date": "' || to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
    """ || '", "duration": ' || duration || '}'"""
)


async def usage_json(conn: Conn, link_id: int, f: UsageFilter) -> tuple[bytes, bool]:
    """The page ``usage`` reads, as the JSON array text built by Postgres (a Python dict per row cost
    the gateway 4 to 10 ms of CPU per 1,000 usages, on its one thread), and whether more follow it."""
    row = await conn.fetchrow(
        # row_number() counts from the first match, before OFFSET; the one row past the page (read
        # to tell whether another page follows) is counted but left out of the array.
        "SELECT count(*) > $5 AS more, '[' || coalesce(string_agg("
        + _USAGE_ITEM_JSON
        + ", ', ' ORDER BY started_at, user_name) FILTER (WHERE $5::bigint IS NULL OR n <= $6 + $5), '')"
        " || ']' AS body FROM (SELECT user_name, started_at, duration,"
        " row_number() OVER (ORDER BY started_at, user_name) AS n FROM link_usage_sessions"
        + _WHERE
        + " ORDER BY started_at, user_name LIMIT $5 + 1 OFFSET $6) AS page",
        link_id,
        f.user,
        f.since,
        f.until,
        f.limit,
        f.offset,
    )
    assert row is not None  # an aggregate without GROUP BY answers one row
    return row["body"].encode(), bool(row["more"])


async def version(conn: Conn) -> tuple[int, int] | None:
    """The read model's version: its stream position and the transaction that last wrote it.

    Every commit of the links projection (a batch, or a rebuild, which replays into the same
    position) rewrites its checkpoint row, so within a snapshot equal versions mean equal rows.
    """
    row = await conn.fetchrow(
        "SELECT position, xmin::text::bigint AS written_by FROM projection_checkpoints"
        " WHERE projection = 'links'"
    )
    return None if row is None else (int(row["position"]), int(row["written_by"]))


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ``'`` before what could start a formula
    (``=HYPERLINK(...)`` as a user name would otherwise be a live link in the export)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def usage_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["user", "date", "duration"])
    # Only the user is anyone's text: the date and the duration are written by usagehub.
    writer.writerows([neutralize_cell(i["user"]), i["date"], i["duration"]] for i in items)
    return out.getvalue()


def _median(value: float | None) -> float | int | None:
    # percentile_cont interpolates: a whole number unless the count is even and the middle two differ.
    if value is None:
        return None
    return int(value) if value.is_integer() else value


_AGGREGATES = (
    "count(DISTINCT user_name) AS users, count(*) AS sessions,"
    " coalesce(sum(duration), 0) AS total_duration,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) AS median_duration"
)


def _aggregates(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "users": int(row["users"]),
        "sessions": int(row["sessions"]),
        "total_duration": int(row["total_duration"]),
        "median_duration": _median(row["median_duration"]),
    }


async def stats(conn: Conn, link_id: int, f: UsageFilter) -> dict[str, Any]:
    args = (link_id, f.user, f.since, f.until)
    overall = await conn.fetchrow(f"SELECT {_AGGREGATES} FROM link_usage_sessions{_WHERE}", *args)
    days = await conn.fetch(
        f"SELECT (started_at AT TIME ZONE 'UTC')::date AS day, {_AGGREGATES}"
        f" FROM link_usage_sessions{_WHERE} GROUP BY day ORDER BY day",
        *args,
    )
    assert overall is not None
    return {
        "link_id": link_id,
        **_aggregates(overall),
        "by_day": [{"date": d["day"].isoformat(), **_aggregates(d)} for d in days],
    }
