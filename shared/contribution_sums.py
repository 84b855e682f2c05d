"""The layout of the contribution sums, shared by the projector that writes them and the gateway that
reads them: their rollups, kinds and columns, and the calendar they are filed by (UTC months and days
of Unix times, and how a moment splits into whole days plus a part of one)."""

from __future__ import annotations

import time
from dataclasses import dataclass

COLUMNS = ("n", "loc", "m_neg2", "m_neg1", "m_zero", "m_pos1", "m_pos2")
KIND_OF = {"commit": 1, "mark": 2, "email": 3, "bpd": 4, "bpc": 5}
RECORD_TYPES = {kind: name for name, kind in KIND_OF.items()}
# The columns each kind has (indexes into COLUMNS); the others stay NULL.
KIND_COLUMNS: dict[int, tuple[int, ...]] = {1: (0, 1), 2: (0, 2, 3, 4, 5, 6), 3: (0,), 4: (0,), 5: (0,)}

# Rollups: which parts of (project type, module, company, user) a row is keyed by.
(
    BY_MODULE_COMPANY_USER,
    BY_MODULE,
    BY_COMPANY,
    BY_USER,
    BY_PROJECT_TYPE_USER,
    BY_PROJECT_TYPE_COMPANY,
    BY_PROJECT_TYPE,
) = range(7)
ALL_ROLLUPS = frozenset(range(7))
PROJECT_TYPE_ROLLUPS = frozenset({BY_PROJECT_TYPE_USER, BY_PROJECT_TYPE_COMPANY, BY_PROJECT_TYPE})
# The rollups that also keep day rows, so that the days a span ends in are read at the grain of the
# answer: the finest key (any filter), and those of the answers with a row per engineer, or one row,
# whose day rows would otherwise be thousands of finest rows added up per request. Modules and
# companies are few enough to add up from the finest days.
DAY_ROLLUPS = frozenset({BY_MODULE_COMPANY_USER, BY_USER, BY_PROJECT_TYPE_USER, BY_PROJECT_TYPE})

DAY = 86_400
# Records must fall in [1900-01-01, 2200-01-01): wide enough for any real history, and it keeps the
# per-key month arrays short.
MIN_DATE = -2_208_988_800
MAX_DATE = 7_258_118_400


def month_of(t: int) -> int:
    """Months since year 0 (``year * 12 + month - 1``) of a Unix time, in UTC."""
    tm = time.gmtime(t)
    return tm.tm_year * 12 + tm.tm_mon - 1


def day_of_month(t: int) -> int:
    return time.gmtime(t).tm_mday


def day_start(t: int) -> int:
    return t - t % DAY


@dataclass(frozen=True, slots=True)
class Through:
    """Everything up to and including the moment ``t``: whole days up to ``whole_month`` /
    ``whole_day`` (day of month; 0 = none of that month), then the seconds ``part`` of the next day."""

    whole_month: int
    whole_day: int
    # [start, end] (inclusive) of the part of a day that the whole days do not cover, if any.
    part: tuple[int, int] | None


def through(t: int) -> Through:
    """How the aggregates answer "everything dated at or before ``t``"."""
    if (t + 1) % DAY == 0:  # the last second of its day: that day is whole
        return Through(month_of(t), day_of_month(t), None)
    start = day_start(t)
    # The whole days are those before ``start``; ``start - 1`` is the last second of the day before.
    before = start - 1
    if month_of(before) != month_of(start):
        # ``start`` opens a month: no whole day of its month precedes it.
        return Through(month_of(start), 0, (start, t))
    return Through(month_of(before), day_of_month(before), (start, t))
