"""The sums every contribution statistic is answered from: what a counted record adds where (pure),
and applying a batch's additions and removals to the stored rows.

Each (rollup, kind, key) has one row of running totals by month, from its first month with records to
its last, and one row of running totals by day for each month with records. A total over any span is
then a difference of two running totals, whatever the span's length (see ``contributions_read``).
A row holds only what its records add up to, so the rows are the same however the records arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.projector.activity import RecordRow
from shared.contribution_sums import (
    ALL_ROLLUPS,
    BY_COMPANY,
    BY_MODULE,
    BY_MODULE_COMPANY_USER,
    BY_PROJECT_TYPE_COMPANY,
    BY_PROJECT_TYPE_USER,
    BY_USER,
    COLUMNS,
    KIND_COLUMNS,
    KIND_OF,
    day_of_month,
    month_of,
)
from shared.db import Conn

SumKey = tuple[int, int, str, str, str, str]  # rollup, kind, project type, module, company, user
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
    return [k for k in keys if k[0] in rollups]


@dataclass
class Deltas:
    """What a batch changes: per row key, per month (and per day of a month), per column."""

    months: dict[SumKey, Values] = field(default_factory=dict)
    days: dict[tuple[SumKey, int], Values] = field(default_factory=dict)

    def add(
        self,
        c: Counted,
        sign: int,
        project_types: Sequence[str],
        rollups: frozenset[int] = ALL_ROLLUPS,
    ) -> None:
        v = [sign * x for x in vector(c)]
        month, day = month_of(c.date), day_of_month(c.date)
        for key in sum_keys(c, project_types, rollups):
            _add(self.months.setdefault(key, {}), month, v)
            _add(self.days.setdefault((key, month), {}), day, v)

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
    """A stored row: running totals from period ``first`` on, one array per column (None: not kept)."""

    first: int
    columns: tuple[tuple[int, ...] | None, ...]


def values_of(row: Running) -> Values:
    """Back from running totals to what each period adds."""
    n = row.columns[0]
    assert n is not None
    out: Values = {}
    for i in range(len(n)):
        v = []
        for col in row.columns:
            if col is None:
                v.append(0)
            else:
                v.append(col[i] - (col[i - 1] if i else 0))
        if any(v):
            out[row.first + i] = v
    return out


def running(kind: int, values: Mapping[int, Sequence[int]], first: int | None = None) -> Running | None:
    """The canonical row for ``values``: from ``first`` (else the first period with records) to the
    last period with records; None when nothing is left."""
    periods = sorted(p for p, v in values.items() if v[0] != 0)
    if not periods:
        return None
    for p, v in values.items():
        if any(x < 0 for x in v) or (v[0] == 0 and any(v)):
            raise ValueError(f"sums would go negative or orphan values at {p}: {v}")
    start = periods[0] if first is None else first
    kept = KIND_COLUMNS[kind]
    columns: list[tuple[int, ...] | None] = []
    for col in range(len(COLUMNS)):
        if col not in kept:
            columns.append(None)
            continue
        total, out = 0, []
        for p in range(start, periods[-1] + 1):
            added = values.get(p)
            total += added[col] if added else 0
            out.append(total)
        columns.append(tuple(out))
    return Running(start, tuple(columns))


def updated(
    kind: int, row: Running | None, deltas: Mapping[int, Sequence[int]], first: int | None
) -> Running | None:
    values = values_of(row) if row is not None else {}
    for period, v in deltas.items():
        _add(values, period, v)
    return running(kind, values, first)


# --- the stored rows ------------------------------------------------------------------------------

_KEY = ("rollup", "kind", "project_type", "module", "company", "user_id")
_KEY_TYPES = ("smallint", "smallint", "text", "text", "text", "text")
_VALUE_COLUMNS = ", ".join(COLUMNS)


def _key_arrays(keys: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(column) for column in zip(*keys, strict=True)] if keys else [[] for _ in _KEY]


def _running_of(first: int, record: Any) -> Running:
    return Running(first, tuple(None if record[c] is None else tuple(record[c]) for c in COLUMNS))


def _columns(row: Running) -> list[list[int] | None]:
    return [None if c is None else list(c) for c in row.columns]


async def _apply_months(conn: Conn, changes: Mapping[SumKey, Values]) -> None:
    keys = sorted(changes)
    if not keys:
        return
    unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_KEY_TYPES))
    rows = await conn.fetch(
        f"SELECT {', '.join('s.' + k for k in _KEY)}, s.first_month, {_VALUE_COLUMNS}"
        f" FROM contribution_month_sums s JOIN unnest({unnest}) AS k({', '.join(_KEY)})"
        f" USING ({', '.join(_KEY)})",
        *_key_arrays(keys),
    )
    stored = {tuple(r[k] for k in _KEY): _running_of(r["first_month"], r) for r in rows}
    gone, kept = [], []
    for key in keys:
        row = updated(key[1], stored.get(key), changes[key], None)
        if row is None:
            if key in stored:
                gone.append(key)
        elif row != stored.get(key):
            kept.append((*key, row.first, *_columns(row)))
    if gone:
        await conn.execute(
            f"DELETE FROM contribution_month_sums s USING unnest({unnest}) AS k({', '.join(_KEY)})"
            f" WHERE {' AND '.join(f's.{k} = k.{k}' for k in _KEY)}",
            *_key_arrays(gone),
        )
    if kept:
        await conn.executemany(
            f"INSERT INTO contribution_month_sums ({', '.join(_KEY)}, first_month, {_VALUE_COLUMNS})"
            f" VALUES ({', '.join(f'${i}' for i in range(1, len(_KEY) + len(COLUMNS) + 2))})"
            f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET first_month = EXCLUDED.first_month,"
            + ", ".join(f" {c} = EXCLUDED.{c}" for c in COLUMNS),
            kept,
        )


async def _apply_days(conn: Conn, changes: Mapping[tuple[SumKey, int], Values]) -> None:
    keys = sorted((*key, month) for key, month in changes)
    if not keys:
        return
    names = (*_KEY, "month")
    types = (*_KEY_TYPES, "integer")
    unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    rows = await conn.fetch(
        f"SELECT {', '.join('s.' + k for k in names)}, {_VALUE_COLUMNS}"
        f" FROM contribution_day_sums s JOIN unnest({unnest}) AS k({', '.join(names)})"
        f" USING ({', '.join(names)})",
        *_key_arrays(keys),
    )
    stored = {tuple(r[k] for k in names): _running_of(1, r) for r in rows}
    gone, kept = [], []
    for full in keys:
        key, month = full[:-1], full[-1]
        row = updated(full[1], stored.get(full), changes[(key, month)], 1)
        if row is None:
            if full in stored:
                gone.append(full)
        elif row != stored.get(full):
            kept.append((*full, *_columns(row)))
    if gone:
        await conn.execute(
            f"DELETE FROM contribution_day_sums s USING unnest({unnest}) AS k({', '.join(names)})"
            f" WHERE {' AND '.join(f's.{k} = k.{k}' for k in names)}",
            *_key_arrays(gone),
        )
    if kept:
        await conn.executemany(
            f"INSERT INTO contribution_day_sums ({', '.join(names)}, {_VALUE_COLUMNS})"
            f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + len(COLUMNS) + 1))})"
            f" ON CONFLICT ({', '.join(names)}) DO UPDATE SET"
            + ", ".join(f" {c} = EXCLUDED.{c}" for c in COLUMNS),
            kept,
        )


async def apply_deltas(conn: Conn, deltas: Deltas) -> None:
    await _apply_months(conn, deltas.months)
    await _apply_days(conn, deltas.days)


def deltas_of(
    changes: Iterable[tuple[int, Counted]],
    project_types_of: Mapping[str, Sequence[str]],
    rollups: frozenset[int] = ALL_ROLLUPS,
) -> Deltas:
    deltas = Deltas()
    for sign, c in changes:
        deltas.add(c, sign, project_types_of.get(c.module, ()), rollups)
    return deltas
