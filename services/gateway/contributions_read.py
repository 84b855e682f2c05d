"""Reads of the contributions read model, shaped as the Stackalytics API answers them.

Every total comes from the sums (``contribution_month_sums``, ``contribution_day_sums``): the total
of a key up to a moment is its running total up to the month before, plus the running total of that
month's days, plus the records of the one part-day a moment in the middle of a day leaves. A span is
the difference of two such totals, so a query reads a handful of rows per key whatever the span; the
rollup is chosen so that the filters are a prefix of its key.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from services.gateway.contributions_contract import StatsRow
from shared.contribution_sums import (
    BY_COMPANY,
    BY_MODULE,
    BY_MODULE_COMPANY_USER,
    BY_PROJECT_TYPE,
    BY_PROJECT_TYPE_COMPANY,
    BY_PROJECT_TYPE_USER,
    BY_USER,
    COLUMNS,
    DAY_ROLLUPS,
    RECORD_TYPES,
    Through,
    through,
)
from shared.db import Conn

# Per metric: its kind and the columns a statistics row needs, the metric's own first (a marks row's
# comment needs the non-zero marks by value; the zeros are only in ``n``).
METRICS: dict[str, tuple[int, tuple[str, ...]]] = {
    "commits": (1, ("n",)),
    "loc": (1, ("loc",)),
    "marks": (2, ("n", "m_neg2", "m_neg1", "m_pos1", "m_pos2")),
    "emails": (3, ("n",)),
    "bpd": (4, ("n",)),
    "bpc": (5, ("n",)),
}
ALL_KINDS = (1, 2, 3, 4, 5)
# A month after every record (months are year * 12 + month - 1).
NO_END = 10_000_000
# Group by: the column of the sums and of the records.
GROUPS = {
    "module": ("module", "module"),
    "company": ("company", "company_name"),
    "user_id": ("user_id", "user_id"),
}
# Integers, as the sums' own columns are: Postgres adds up integers without going through numeric.
_RAW = {
    "n": "count(*)::integer",
    "loc": "sum(loc)::bigint",
    "m_neg2": "(count(*) FILTER (WHERE value = -2))::integer",
    "m_neg1": "(count(*) FILTER (WHERE value = -1))::integer",
    "m_zero": "(count(*) FILTER (WHERE value = 0))::integer",
    "m_pos1": "(count(*) FILTER (WHERE value = 1))::integer",
    "m_pos2": "(count(*) FILTER (WHERE value = 2))::integer",
}


@dataclass(frozen=True, slots=True)
class Selection:
    """What the common parameters select: records dated in [lo, hi] (None: unbounded), of the modules
    of a project type, one module, one company, one user."""

    lo: int | None = None
    hi: int | None = None
    project_type: str | None = None
    modules: frozenset[str] | None = None
    module: str | None = None
    company: str | None = None
    user_id: str | None = None

    @property
    def empty(self) -> bool:
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            return True
        return self.modules is not None and (
            not self.modules or (self.module is not None and self.module not in self.modules)
        )


class _Sql:
    """Collects parameters as an SQL text is built."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def arg(self, value: Any, cast: str = "") -> str:
        self.args.append(value)
        return f"${len(self.args)}{cast}"


# The columns each rollup is keyed by.
ROLLUP_KEYS: dict[int, set[str]] = {
    BY_MODULE_COMPANY_USER: {"module", "company", "user_id"},
    BY_MODULE: {"module"},
    BY_COMPANY: {"company"},
    BY_USER: {"user_id"},
    BY_PROJECT_TYPE_USER: {"project_type", "user_id"},
    BY_PROJECT_TYPE_COMPANY: {"project_type", "company"},
    BY_PROJECT_TYPE: {"project_type"},
}


@dataclass(frozen=True, slots=True)
class _Plan:
    rollup: int
    # Equality filters on columns of the sums, and whether ``module`` must be in the project type's set.
    equal: tuple[tuple[str, str], ...]
    module_in_set: bool


def plan(sel: Selection, group: str | None) -> _Plan:
    """The rollup whose key starts with the filters, so the rows read are those of the answer."""
    equal = tuple(
        (column, value)
        for column, value in (("module", sel.module), ("company", sel.company), ("user_id", sel.user_id))
        if value is not None
    )
    dims = {c for c, _ in equal} | ({group} if group else set())
    if sel.modules is None or sel.module is not None:
        if not dims:
            return _Plan(BY_COMPANY, equal, False)
        if len(dims) == 1:
            rollup = {"module": BY_MODULE, "company": BY_COMPANY, "user_id": BY_USER}[next(iter(dims))]
            return _Plan(rollup, equal, False)
        return _Plan(BY_MODULE_COMPANY_USER, equal, False)
    # A project type: its own rollups when the answer is one row, or by user or by company alone.
    if not dims:
        return _Plan(BY_PROJECT_TYPE, (("project_type", sel.project_type or ""),), False)
    if dims <= {"user_id"}:
        return _Plan(BY_PROJECT_TYPE_USER, (("project_type", sel.project_type or ""), *equal), False)
    if dims <= {"company"}:
        return _Plan(BY_PROJECT_TYPE_COMPANY, (("project_type", sel.project_type or ""), *equal), False)
    if dims == {"module"}:
        return _Plan(BY_MODULE, equal, True)
    return _Plan(BY_MODULE_COMPANY_USER, equal, True)


def _rollup_filters(sql: _Sql, p: _Plan, sel: Selection) -> list[str]:
    out = [f"{column} = {sql.arg(value)}" for column, value in p.equal]
    if sel.modules is not None and p.module_in_set:
        out.append(f"module = ANY({sql.arg(sorted(sel.modules), '::text[]')})")
    return out


def _finest_filters(sql: _Sql, sel: Selection, company: str) -> list[str]:
    """The selection on rows keyed by module, company and user (the day sums and the records)."""
    out = []
    for column, value in (("module", sel.module), (company, sel.company), ("user_id", sel.user_id)):
        if value is not None:
            out.append(f"{column} = {sql.arg(value)}")
    if sel.modules is not None and sel.module is None:
        out.append(f"module = ANY({sql.arg(sorted(sel.modules), '::text[]')})")
    return out


def _kinds(sql: _Sql, kinds: Sequence[int]) -> str:
    return f"kind = {kinds[0]}" if len(kinds) == 1 else f"kind = ANY({sql.arg(list(kinds), '::smallint[]')})"


def _raw(
    sql: _Sql,
    sel: Selection,
    part: tuple[int, int],
    group: str | None,
    kinds: Sequence[int],
    columns: Sequence[str],
    sign: str,
) -> str:
    g = GROUPS[group][1] if group else "''"
    types = [RECORD_TYPES[k] for k in kinds]
    kind = "CASE record_type " + " ".join(f"WHEN '{t}' THEN {k}" for k, t in RECORD_TYPES.items()) + " END"
    where = [
        "counted",
        f"record_type = ANY({sql.arg(types, '::text[]')})",
        f"date BETWEEN {sql.arg(part[0])} AND {sql.arg(part[1])}",
        *_finest_filters(sql, sel, "company_name"),
    ]
    values = ", ".join(f"{sign}{_RAW[c]}" for c in columns)
    return (
        f"SELECT {g} AS g, {kind} AS kind, {values} FROM contribution_records"
        f" WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )


def _month_part(
    sql: _Sql,
    p: _Plan,
    sel: Selection,
    g: str,
    kinds: Sequence[int],
    columns: Sequence[str],
    hi: Through | None,
    lo: Through | None,
) -> str:
    """Whole months: the running total at the last month before the end, less the one before the
    start; one binary search per bound and row, shared by every column."""
    where = " AND ".join([f"rollup = {p.rollup}", _kinds(sql, kinds), *_rollup_filters(sql, p, sel)])
    bounds = []
    if hi is not None:
        bounds.append(f"width_bucket({sql.arg(hi.whole_month - 1)}::integer, months) AS hi")
    if lo is not None:
        bounds.append(f"width_bucket({sql.arg(lo.whole_month - 1)}::integer, months) AS lo")
    values = []
    for c in columns:
        upper = f"coalesce({c}[hi], 0)" if hi is not None else f"coalesce({c}[cardinality({c})], 0)"
        values.append(upper + (f" - coalesce({c}[lo], 0)" if lo is not None else ""))
    # Keys without a month in the span add nothing: leave them out of the answer.
    active = {
        (True, True): " WHERE hi > lo",
        (True, False): " WHERE hi > 0",
        (False, True): " WHERE lo < cardinality(months)",
        (False, False): "",
    }[(hi is not None, lo is not None)]
    return (
        f"SELECT g, kind, {', '.join(values)} FROM (SELECT {g} AS g, kind, months, {', '.join(columns)}"
        f"{''.join(', ' + b for b in bounds)} FROM contribution_month_sums WHERE {where}) AS m{active}"
    )


def _totals_sql(
    sql: _Sql, sel: Selection, kinds: Sequence[int], columns: Sequence[str], group: str | None
) -> str:
    """``SELECT g, kind, <one total per column>`` over the selection, zero totals included.

    Whole months come from the rollup whose key starts with the filters; the days of the months the
    span ends in from the day sums of that rollup when it keeps days, else of the finest key; a part
    of a day from the records."""
    p = plan(sel, group)
    hi: Through | None = None if sel.hi is None else through(sel.hi)
    lo: Through | None = None if sel.lo is None else through(sel.lo - 1)
    g = GROUPS[group][0] if group else "''"
    parts = [_month_part(sql, p, sel, g, kinds, columns, hi, lo)]
    for end, sign in ((hi, ""), (lo, "-")):
        if end is None:
            continue
        if end.whole_day > 0:
            day = sql.arg(end.whole_day)
            where = [f"month = {sql.arg(end.whole_month)}", _kinds(sql, kinds)]
            if p.rollup in DAY_ROLLUPS:  # the days at the grain of the months
                where += [f"rollup = {p.rollup}", *_rollup_filters(sql, p, sel)]
            else:
                where += ["rollup = 0", *_finest_filters(sql, sel, "company")]
            # contribution_through, with the day's binary search done once per row for every column.
            parts.append(
                "SELECT g, kind, "
                + ", ".join(f"{sign}coalesce({c}[d], 0)" for c in columns)
                + f" FROM (SELECT {g} AS g, kind, {', '.join(columns)},"
                f" width_bucket({day}::integer, days) AS d"
                f" FROM contribution_day_sums WHERE {' AND '.join(where)} OFFSET 0) AS days"
            )
        if end.part is not None:
            parts.append(_raw(sql, sel, end.part, group, kinds, columns, sign))
    values = [f"v{i}" for i in range(len(columns))]
    names = ", ".join(values)
    free = ROLLUP_KEYS[p.rollup] - {column for column, _ in p.equal}
    if free != ({group} if group else set()):  # several rows may share a group value: add them up
        return (
            f"SELECT g, kind, {', '.join(f'sum({v})::bigint' for v in values)}"
            f" FROM ({' UNION ALL '.join(parts)}) AS s (g, kind, {names}) GROUP BY g, kind"
        )
    # OFFSET 0 fences: each row's totals are worked out once, where the planner would otherwise
    # work them out again in every later step that reads them (the filter, the join, the sort).
    if len(parts) == 1:
        return parts[0] + " OFFSET 0"
    # One month row per group value: only the few rows of the span's ends need adding up, then
    # joining (cheaper than aggregating every row).
    ends = (
        f"SELECT g, kind, {', '.join(f'sum({v})::bigint' for v in values)}"
        f" FROM ({' UNION ALL '.join(parts[1:])}) AS s (g, kind, {names}) GROUP BY g, kind"
    )
    return (
        "SELECT coalesce(m.g, e.g), coalesce(m.kind, e.kind), "
        + ", ".join(f"coalesce(m.{v}, 0) + coalesce(e.{v}, 0)" for v in values)
        + f" FROM ({parts[0]} OFFSET 0) AS m (g, kind, {names}) FULL JOIN ({ends}) AS e (g, kind, {names})"
        " ON e.g = m.g AND e.kind = m.kind OFFSET 0"
    )


async def sums(
    conn: Conn, sel: Selection, kinds: Sequence[int], columns: Sequence[str], group: str | None
) -> dict[tuple[str, int], list[int]]:
    """Per (group value, kind): the selected records' totals of ``columns`` (in their order)."""
    if sel.empty:
        return {}
    sql = _Sql()
    rows = await conn.fetch(_totals_sql(sql, sel, kinds, columns, group), *sql.args)
    width = len(columns)
    return {(r[0], r[1]): [int(v or 0) for v in tuple(r)[2 : 2 + width]] for r in rows}


# --- the statistics ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16_384)
def marks_comment(neg2: int, neg1: int, pos1: int, pos2: int) -> str:
    """``-2|-1|+1|+2 (positive%)``: the share of +1 and +2 among the non-zero marks, one decimal (as
    Stackalytics prints it); 0.0% when there is no non-zero mark. Kept: an answer may name every
    engineer, and most of them share a handful of small counts (455 distinct comments in one
    release's 6,568 rows in the bench)."""
    numeric = neg2 + neg1 + pos1 + pos2
    share = ((pos1 + pos2) * 100.0) / numeric if numeric else 0.0
    return f"{neg2}|{neg1}|{pos1}|{pos2} ({share:.1f}%)"


async def stats(conn: Conn, sel: Selection, metric: str, group: str) -> list[StatsRow]:
    """``{"metric", "id", "name"}`` (and ``comment`` for marks by engineer), highest first (ties by
    id), zeros left out: filtered, ordered and named in Postgres, so Python only shapes the rows."""
    if sel.empty:
        return []
    kind, columns = METRICS[metric]
    sql = _Sql()
    totals = _totals_sql(sql, sel, [kind], columns, group)
    values = ", ".join(f"t.v{i}" for i in range(len(columns)))
    named = group == "user_id"
    text = (
        f"SELECT t.g, {values}{', u.user_name' if named else ''}"
        f" FROM ({totals}) AS t (g, kind, {', '.join(f'v{i}' for i in range(len(columns)))})"
        + (" LEFT JOIN contribution_users u ON u.user_id = t.g" if named else "")
        + ' WHERE t.v0 <> 0 ORDER BY t.v0 DESC, t.g COLLATE "C"'
    )
    rows = await conn.fetch(text, *sql.args)
    if metric == "marks" and named:
        return [
            StatsRow(n, g, name or g, marks_comment(neg2, neg1, pos1, pos2))
            for g, n, neg2, neg1, pos1, pos2, name in rows
        ]
    if named:
        return [StatsRow(r[1], r[0], r[-1] or r[0]) for r in rows]
    return [StatsRow(r[1], r[0], r[0]) for r in rows]


async def contribution(conn: Conn, sel: Selection) -> dict[str, Any]:
    totals = await sums(conn, sel, ALL_KINDS, COLUMNS, None)
    by_kind = {kind: dict(zip(COLUMNS, values, strict=True)) for (_, kind), values in totals.items()}
    zero = dict.fromkeys(COLUMNS, 0)
    commits, marks = by_kind.get(1, zero), by_kind.get(2, zero)
    return {
        "loc": commits["loc"],
        "new_blueprint_count": by_kind.get(4, zero)["n"],
        "email_count": by_kind.get(3, zero)["n"],
        "commit_count": commits["n"],
        # Stackalytics' own spelling, kept for its clients.
        "competed_blueprint_count": by_kind.get(5, zero)["n"],
        "marks": {
            "-2": marks["m_neg2"],
            "-1": marks["m_neg1"],
            "0": marks["m_zero"],
            "1": marks["m_pos1"],
            "2": marks["m_pos2"],
        },
    }


async def keys_with(conn: Conn, sel: Selection, metric: str, group: str) -> list[tuple[str, str]]:
    """(id, name) of the modules, companies or users with a non-zero ``metric`` in the selection."""
    return [(row.id, row.name) for row in await stats(conn, sel, metric, group)]


# --- the activity log ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    name: str
    end_date: int


async def releases(conn: Conn) -> list[Release]:
    """By end date: a record belongs to the first release ending after its date, else the last."""
    rows = await conn.fetch(
        "SELECT release_name, end_date FROM contribution_releases ORDER BY end_date, release_name"
    )
    return [Release(r["release_name"], int(r["end_date"])) for r in rows]


def release_of(all_releases: Sequence[Release], date: int) -> str | None:
    """Stackalytics' ``_get_release``: bisect on the end dates, the last release beyond them."""
    if not all_releases:
        return None
    i = bisect.bisect([r.end_date for r in all_releases], date)
    return all_releases[min(i, len(all_releases) - 1)].name


def release_span(all_releases: Sequence[Release], name: str) -> tuple[int | None, int | None]:
    """[lo, hi] of the dates that belong to release ``name`` (None: unbounded)."""
    i = next(i for i, r in enumerate(all_releases) if r.name == name)
    lo = all_releases[i - 1].end_date if i > 0 else None
    hi = all_releases[i].end_date - 1 if i < len(all_releases) - 1 else None
    return lo, hi


_decoder = msgspec.json.Decoder(dict[str, Any])


def activity_record(r: Any, all_releases: Sequence[Release]) -> dict[str, Any]:
    """A record as the activity log shows it: Stackalytics' fields for its type."""
    details = _decoder.decode(r["details"])
    common = {
        "record_type": r["record_type"],
        "primary_key": r["primary_key"],
        "user_id": r["user_id"],
        "launchpad_id": r["user_launchpad_id"] or r["launchpad_id"],
        "author_name": r["author_name"] or r["user_name"] or r["user_id"],
        "module": r["module"],
        "release": release_of(all_releases, int(r["date"])),
        "date": int(r["date"]),
        "company_name": r["company_name"],
    }
    match r["record_type"]:
        case "commit":
            return {
                **common,
                "commit_id": details["commit_id"],
                "author_email": r["author_email"],
                "blueprint_id": details["blueprint_id"],
                "bug_id": details["bug_id"],
                "branches": details["branch"],
                "message": details["message"],
                "subject": details["subject"],
                "change_id": details["change_id"],
                "loc": int(r["loc"]),
                "files_changed": details["files_changed"],
                "lines_added": details["lines_added"],
                "lines_deleted": details["lines_deleted"],
            }
        case "mark":
            return {
                **common,
                "author_email": r["author_email"],
                "review_id": details["review_id"],
                "type": details["mark_type"],
                "value": details["value"],
                "branch": details["branch"],
                "patch": details["patch"],
            }
        case "email":
            return {
                **common,
                "author_email": r["author_email"],
                "message_id": details["message_id"],
                "subject": details["subject"],
                "blueprint_id": details["blueprint_id"],
                "bug_id": details["bug_id"],
            }
        case _:
            return {
                **common,
                "id": details["blueprint_id"],
                "name": details["name"],
                "title": details["title"],
                "lifecycle_status": details["lifecycle_status"],
                "implementation_status": details["implementation_status"],
                "web_link": details["web_link"],
            }


async def activity(
    conn: Conn, sel: Selection, metric: str, start_record: int, page_size: int
) -> list[dict[str, Any]]:
    """The selected records of the metric's kind, newest first (ties by primary key, so walking the
    pages gives every record once)."""
    if sel.empty:
        return []
    kind, _ = METRICS[metric]
    sql = _Sql()
    where = ["r.counted", f"r.record_type = {sql.arg(RECORD_TYPES[kind])}"]
    if sel.lo is not None:
        where.append(f"r.date >= {sql.arg(sel.lo)}")
    if sel.hi is not None:
        where.append(f"r.date <= {sql.arg(sel.hi)}")
    for column, value in (("module", sel.module), ("company_name", sel.company), ("user_id", sel.user_id)):
        if value is not None:
            where.append(f"r.{column} = {sql.arg(value)}")
    if sel.modules is not None and sel.module is None:
        where.append(f"r.module = ANY({sql.arg(sorted(sel.modules), '::text[]')})")
    rows = await conn.fetch(
        "SELECT r.primary_key, r.record_type, r.date, r.module, r.author_email, r.launchpad_id,"
        " r.author_name, r.user_id, r.company_name, r.loc, r.details, u.user_name,"
        " u.launchpad_id AS user_launchpad_id"
        " FROM contribution_records r LEFT JOIN contribution_users u ON u.user_id = r.user_id"
        f" WHERE {' AND '.join(where)} ORDER BY r.date DESC, r.primary_key"
        f" LIMIT {sql.arg(page_size)} OFFSET {sql.arg(start_record)}",
        *sql.args,
    )
    all_releases = await releases(conn)
    return [activity_record(r, all_releases) for r in rows]
