"""The sums every contribution statistic is answered from: what a counted record adds where (pure),
and applying a batch's additions and removals to the stored rows.

Each (rollup, kind, key) has one row: the months it has records in and, aligned with them, running
totals; the keys of the day rollups (``DAY_ROLLUPS``) also have one row per month with records, by day. A
total over any span is then a difference of two running totals, whatever the span's length (see
``contributions_read``), and a row is as long as its key's active months, not its history. A row
holds only what its records add up to, so the rows are the same however the records arrived.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.projector.activity import RecordRow
from services.projector.contribution_copy import text_copy
from shared.contribution_sums import (
    ALL_ROLLUPS,
    BY_COMPANY,
    BY_MODULE,
    BY_MODULE_COMPANY_USER,
    BY_PROJECT_TYPE,
    BY_PROJECT_TYPE_COMPANY,
    BY_PROJECT_TYPE_USER,
    BY_USER,
    COLUMNS,
    DAY_ROLLUPS,
    KIND_COLUMNS,
    KIND_OF,
)
from shared.db import Conn

SumKey = tuple[int, int, str, str, str, str]  # rollup, kind, project type, module, company, user
DayKey = tuple[int, int, int, str, str, str, str]  # rollup, kind, month, project type, module, company, user
Values = dict[int, list[int]]  # period (month, or day of month) -> one value per column


@dataclass(frozen=True, slots=True)
class Counted:
    """What one counted record adds to the sums."""

    kind: int
    date: int
    module: str
    company: str
    user_id: str
    loc: int = 0
    value: int | None = None


def counted(row: RecordRow) -> Counted | None:
    if not row.counted:
        return None
    return Counted(
        KIND_OF[row.record_type], row.date, row.module, row.company_name, row.user_id, row.loc, row.value
    )


def vector(c: Counted) -> list[int]:
    v = [1, c.loc, 0, 0, 0, 0, 0]
    if c.value is not None:
        v[4 + c.value] = 1  # -2 is column 2 (m_neg2) ... 2 is column 6 (m_pos2)
    return v


def sum_keys(c: Counted, project_types: Sequence[str], rollups: frozenset[int] = ALL_ROLLUPS) -> list[SumKey]:
    keys: list[SumKey] = [
        (BY_MODULE_COMPANY_USER, c.kind, "", c.module, c.company, c.user_id),
        (BY_MODULE, c.kind, "", c.module, "", ""),
        (BY_COMPANY, c.kind, "", "", c.company, ""),
        (BY_USER, c.kind, "", "", "", c.user_id),
    ]
    for p in project_types:
        keys.append((BY_PROJECT_TYPE_USER, c.kind, p, "", "", c.user_id))
        keys.append((BY_PROJECT_TYPE_COMPANY, c.kind, p, "", c.company, ""))
        keys.append((BY_PROJECT_TYPE, c.kind, p, "", "", ""))
    return [k for k in keys if k[0] in rollups]


@dataclass
class Deltas:
    """What a batch changes: per row key, per month (and per day of a month), per column."""

    months: dict[SumKey, Values] = field(default_factory=dict)
    days: dict[DayKey, Values] = field(default_factory=dict)

    def add(
        self,
        c: Counted,
        sign: int,
        project_types: Sequence[str],
        rollups: frozenset[int] = ALL_ROLLUPS,
    ) -> None:
        v = [sign * x for x in vector(c)]
        tm = time.gmtime(c.date)
        month = tm.tm_year * 12 + tm.tm_mon - 1  # as month_of, without a second gmtime
        months, days = self.months, self.days
        for key in sum_keys(c, project_types, rollups):
            values = months.get(key)
            if values is None:
                months[key] = {month: list(v)}
            else:
                _add(values, month, v)
            if key[0] in DAY_ROLLUPS:
                rollup, kind, project_type, module, company, user_id = key
                day_key = (rollup, kind, month, project_type, module, company, user_id)
                in_month = days.get(day_key)
                if in_month is None:
                    days[day_key] = {tm.tm_mday: list(v)}
                else:
                    _add(in_month, tm.tm_mday, v)

    def __bool__(self) -> bool:
        return bool(self.months)


def _add(values: Values, period: int, v: Sequence[int]) -> None:
    current = values.get(period)
    if current is None:
        values[period] = list(v)
    else:
        for i, x in enumerate(v):
            current[i] += x


@dataclass(frozen=True, slots=True)
class Running:
    """A stored row: the periods with records, ascending, and per column the running totals aligned
    with them (None: a column the kind does not keep)."""

    periods: tuple[int, ...]
    columns: tuple[tuple[int, ...] | None, ...]


def values_of(row: Running) -> Values:
    """Back from running totals to what each period adds."""
    out: Values = {}
    for i, period in enumerate(row.periods):
        out[period] = [0 if col is None else col[i] - (col[i - 1] if i else 0) for col in row.columns]
    return out


def updated(kind: int, row: Running | None, deltas: Mapping[int, Sequence[int]]) -> Running | None:
    """``row`` with ``deltas`` added, in its canonical form: exactly the periods with records; None
    when no record is left."""
    kept = KIND_COLUMNS[kind]
    # What each period adds, per kept column: the stored row's differences plus the deltas.
    added: dict[int, list[int]] = {}
    if row is not None:
        previous = [0] * len(kept)
        for i, period in enumerate(row.periods):
            now = [row.columns[c][i] for c in kept]  # type: ignore[index]
            added[period] = [a - b for a, b in zip(now, previous, strict=True)]
            previous = now
    for period, v in deltas.items():
        current = added.get(period)
        if current is None:
            added[period] = [v[c] for c in kept]
        else:
            for j, c in enumerate(kept):
                current[j] += v[c]
    periods = sorted(p for p, v in added.items() if v[0])
    for period, v in added.items():
        if min(v) < 0 or (v[0] == 0 and any(v)):
            raise ValueError(f"sums of kind {kind} would go negative at period {period}: {v}")
    if not periods:
        return None
    columns: list[tuple[int, ...] | None] = [None] * len(COLUMNS)
    for j, c in enumerate(kept):
        columns[c] = tuple(itertools.accumulate(added[p][j] for p in periods))
    return Running(tuple(periods), tuple(columns))


# --- the stored rows ------------------------------------------------------------------------------

_MONTH_KEY = ("rollup", "kind", "project_type", "module", "company", "user_id")
_MONTH_TYPES = ("smallint", "smallint", "text", "text", "text", "text")
_DAY_KEY = ("rollup", "kind", "month", "project_type", "module", "company", "user_id")
_DAY_TYPES = ("smallint", "smallint", "integer", "text", "text", "text", "text")
# The binary COPY kinds of the key types, and of the periods and value columns after the key.
_COPY_KINDS = {"smallint": "int2", "integer": "int4", "text": "text"}
_VALUE_KINDS = ("int4[]", "int4[]", "int8[]", "int4[]", "int4[]", "int4[]", "int4[]", "int4[]")


def _key_arrays(keys: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*keys, strict=True)] if keys else [[] for _ in range(width)]


def _running_of(record: Any, periods: str) -> Running:
    return Running(
        tuple(record[periods]), tuple(None if record[c] is None else tuple(record[c]) for c in COLUMNS)
    )


async def _apply(
    conn: Conn,
    table: str,
    names: tuple[str, ...],
    types: tuple[str, ...],
    periods: str,
    changes: Mapping[tuple[Any, ...], Values],
    kind_at: int,
) -> None:
    """Read the rows ``changes`` touch, add the changes, and write back: the changed rows are
    deleted and their new versions copied in (one statement each, whatever the batch's size)."""
    keys = sorted(changes)
    if not keys:
        return
    unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    join = f"unnest({unnest}) AS k({', '.join(names)})"
    rows = await conn.fetch(
        f"SELECT {', '.join('s.' + k for k in names)}, {periods}, {', '.join(COLUMNS)}"
        f" FROM {table} s JOIN {join} USING ({', '.join(names)})",
        *_key_arrays(keys, len(names)),
    )
    stored = {tuple(r[k] for k in names): _running_of(r, periods) for r in rows}
    rewrite: list[tuple[Any, ...]] = []
    written: list[tuple[Any, ...]] = []
    for key in keys:
        before = stored.get(key)
        after = updated(key[kind_at], before, changes[key])
        if after == before:
            continue
        if before is not None:
            rewrite.append(key)
        if after is not None:
            written.append((*key, after.periods, *after.columns))
    if rewrite:
        await conn.execute(
            f"DELETE FROM {table} s USING {join} WHERE {' AND '.join(f's.{k} = k.{k}' for k in names)}",
            *_key_arrays(rewrite, len(names)),
        )
    if written:
        kinds = [*(_COPY_KINDS[t] for t in types), *_VALUE_KINDS]
        await conn.copy_to_table(
            table, source=text_copy(written, kinds), columns=[*names, periods, *COLUMNS], format="text"
        )


async def apply_deltas(conn: Conn, deltas: Deltas) -> None:
    await _apply(conn, "contribution_month_sums", _MONTH_KEY, _MONTH_TYPES, "months", deltas.months, 1)
    await _apply(conn, "contribution_day_sums", _DAY_KEY, _DAY_TYPES, "days", deltas.days, 1)


def deltas_of(
    changes: Iterable[tuple[int, Counted]],
    project_types_of: Mapping[str, Sequence[str]],
    rollups: frozenset[int] = ALL_ROLLUPS,
) -> Deltas:
    deltas = Deltas()
    for sign, c in changes:
        deltas.add(c, sign, project_types_of.get(c.module, ()), rollups)
    return deltas
