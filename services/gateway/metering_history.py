"""``usage.api.history`` as pure functions: its parameters, the buckets of a range in an org's zone, which
counters answer it, and the answer's shape. No I/O."""

from __future__ import annotations

import operator
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal

Series = Literal["hour", "day"]

# A range may cover at most this many buckets: about 83 days of hours, or 5 years of days.
MAX_BUCKETS = 2000
# dimension=org answers one array per org and service: at most this many (org, bucket) cells.
MAX_ORG_CELLS = 200_000
# Counters exist from 1970 on; years near 9999 would overflow while bucketing.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
PARAMS = ("start", "end", "last", "series", "includeSubOrgs", "showAll", "dimension")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_LAST = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
TIMESTAMP_EXAMPLE = "2014-03-27T00:00:00.000-05:00"


class HistoryError(Exception):
    """A refusal: ``code`` is the HTTP status the REST twin answers, and the TR50 error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    series: Series = "hour"
    include_sub_orgs: bool = False
    show_all: bool = False
    by_org: bool = False


def _timestamp(params: Mapping[str, Any], name: str) -> datetime:
    raw = params[name]
    problem = f"{name} must be an ISO 8601 timestamp with a UTC offset, e.g. {TIMESTAMP_EXAMPLE}"
    if not isinstance(raw, str) or len(raw) > 64:
        raise HistoryError(400, problem)
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise HistoryError(400, f"{problem}; got {raw!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise HistoryError(400, f"{problem}; {raw!r} has no offset")
    return at.astimezone(UTC)


def _flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise HistoryError(400, f"{name} must be true or false")
    return value


def last_duration(raw: object) -> timedelta:
    match = _LAST.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise HistoryError(
            400,
            f"last must be a whole number followed by a unit: s (seconds), m (minutes), h (hours)"
            f" or d (days), e.g. 24h; got {raw!r}",
        )
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


def parse_history(params: Mapping[str, Any], now: datetime) -> HistoryQuery:
    """The query the parameters ask for; the range is ``[start, end)``, ``last`` ending now."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise HistoryError(400, f"unknown parameters {unknown}; usage.api.history takes {list(PARAMS)}")
    has_start, has_end, has_last = "start" in params, "end" in params, "last" in params
    if has_last and (has_start or has_end):
        raise HistoryError(400, "give either start and end, or last, not both")
    if not has_last and not (has_start and has_end):
        if has_start or has_end:
            raise HistoryError(400, "start and end go together: give both, or last instead")
        raise HistoryError(400, "give a time range: start and end, or last (e.g. 24h)")
    series = params.get("series", "hour")
    if series not in ("hour", "day"):
        raise HistoryError(400, f"series must be hour or day; got {series!r}")
    dimension = params.get("dimension")
    if dimension is not None and dimension != "org":
        raise HistoryError(400, f"dimension must be org when given; got {dimension!r}")
    if has_last:
        end = now.astimezone(UTC)
        try:
            start = end - last_duration(params["last"])
        except OverflowError:
            start = EARLIEST - timedelta(days=1)
        if start < EARLIEST:
            raise HistoryError(400, f"last reaches back before {EARLIEST.date().isoformat()}")
    else:
        start, end = _timestamp(params, "start"), _timestamp(params, "end")
        for name, at in (("start", start), ("end", end)):
            if not EARLIEST <= at <= LATEST:
                raise HistoryError(
                    400,
                    f"{name} must be between {EARLIEST.date().isoformat()} and {LATEST.date().isoformat()}",
                )
        if end < start:
            raise HistoryError(400, f"end ({end.isoformat()}) is before start ({start.isoformat()})")
        if end == start:
            raise HistoryError(400, "end must be after start: the range is empty")
    return HistoryQuery(
        start=start,
        end=end,
        series=series,
        include_sub_orgs=_flag(params, "includeSubOrgs"),
        show_all=_flag(params, "showAll"),
        by_org=dimension == "org",
    )


def params_from_query(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The REST twin's query string as TR50 parameters: the same names, ``true``/``false`` flags."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name in params:
            raise HistoryError(400, f"{name} is given more than once")
        if name in ("includeSubOrgs", "showAll"):
            if value not in ("true", "false"):
                raise HistoryError(400, f"{name} must be true or false")
            params[name] = value == "true"
        else:
            params[name] = value
    return params


# --- buckets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Buckets:
    """Bucket starts (UTC) and the end of the last bucket; ``days`` are the local dates of a day series."""

    starts: tuple[datetime, ...]
    end: datetime
    labels: tuple[str, ...]
    days: tuple[date, ...] = ()

    @property
    def boundaries(self) -> list[datetime]:
        return [*self.starts, self.end]


def _too_many() -> HistoryError:
    return HistoryError(
        400, f"the range would give more than {MAX_BUCKETS} buckets; shorten it, or use series=day"
    )


def quarter_floor(at: datetime) -> datetime:
    return at - (at - EARLIEST) % QUARTER


def _hour_of(at: datetime, zone: zoneinfo.ZoneInfo) -> tuple[date, int, timedelta | None]:
    local = at.astimezone(zone)
    # The offset tells apart the two 01:00 hours of a night that falls back.
    return local.date(), local.hour, local.utcoffset()


def _next_hour(t: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The start of the bucket after the one starting at ``t``."""
    local = t.astimezone(zone)
    candidate = t + timedelta(minutes=60 - local.minute)
    if candidate.astimezone(zone).utcoffset() == local.utcoffset():
        return candidate  # no offset change within the hour (two never come within one hour)
    key = (local.date(), local.hour, local.utcoffset())
    q = t + QUARTER
    while _hour_of(q, zone) == key:
        q += QUARTER
    return q


def hour_buckets(start: datetime, end: datetime, zone: zoneinfo.ZoneInfo) -> Buckets:
    """Local clock hours of ``zone`` that overlap ``[start, end)``.

    A bucket is a run of quarter hours with the same local date, hour and offset: a night that
    springs forward has no 02:00 bucket, one that falls back has two 01:00 buckets (one per offset),
    and a 30-minute shift (Lord Howe) gives a half-hour bucket. Every zone in use since 1972 has an
    offset of whole quarter hours, so quarter hours are fine enough.
    """
    t = quarter_floor(start)
    key = _hour_of(t, zone)
    for _ in range(8):  # back to the first quarter of the hour holding ``start``
        if _hour_of(t - QUARTER, zone) != key:
            break
        t -= QUARTER
    starts = [t]
    following = _next_hour(t, zone)
    while following < end:
        if len(starts) == MAX_BUCKETS:
            raise _too_many()
        starts.append(following)
        following = _next_hour(following, zone)
    labels = tuple(s.astimezone(zone).isoformat() for s in starts)
    return Buckets(tuple(starts), following, labels)


def day_start(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant of a local date: midnight, or the first hour after a gap that swallows it."""
    # fold=0 reads a midnight that does not exist with the offset before the gap: that instant is
    # the first one of the day on the new offset (Santiago, Havana, Beirut shift at midnight).
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@lru_cache(maxsize=16_384)
def _day_bucket(day: date, zone: zoneinfo.ZoneInfo) -> tuple[datetime, str]:
    """A local date's first instant and its label; a year of days is asked for again and again."""
    start = day_start(day, zone)
    return start, start.astimezone(zone).isoformat()


def day_buckets(start: datetime, end: datetime, zone: zoneinfo.ZoneInfo) -> Buckets:
    """Local days of ``zone`` that overlap ``[start, end)``: 23 or 25 hours long on DST days, and none
    for a date the zone skipped (Samoa's 30 December 2011)."""
    day = start.astimezone(zone).date()
    current, label = _day_bucket(day, zone)
    days: list[date] = []
    starts: list[datetime] = []
    labels: list[str] = []
    while current < end:
        following = day + timedelta(days=1)
        next_start, next_label = _day_bucket(following, zone)
        if next_start > current:
            if len(days) == MAX_BUCKETS:
                raise _too_many()
            days.append(day)
            starts.append(current)
            labels.append(label)
            current, label = next_start, next_label
        day = following
    return Buckets(tuple(starts), current, tuple(labels), tuple(days))


def buckets_for(query: HistoryQuery, zone: zoneinfo.ZoneInfo) -> Buckets:
    if query.series == "day":
        return day_buckets(query.start, query.end, zone)
    return hour_buckets(query.start, query.end, zone)


# --- which counters answer --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrgInfo:
    org_id: str
    time_zone: str
    # Root first, the org itself last.
    ancestors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where each org's calls are read from.

    ``subtree_days``: whole subtrees, pre-summed per day in that org's zone (the zone asked for).
    ``days``: an org's own calls per day in the zone asked for (kept for its own and ancestors' zones).
    ``quarters``: an org's own calls per quarter hour, bucketed at read time (hour series, or a zone
    the org has no day counters in).
    """

    subtree_days: tuple[str, ...] = ()
    days: tuple[str, ...] = ()
    quarters: tuple[str, ...] = ()


def _roots(scope: Sequence[OrgInfo]) -> list[OrgInfo]:
    ids = {o.org_id for o in scope}
    return [o for o in scope if len(o.ancestors) < 2 or o.ancestors[-2] not in ids]


def needs_scope(query: HistoryQuery) -> bool:
    """Whether answering needs the list of orgs in scope. A day series of the caller's own org, or of
    its whole subtree, reads the caller's own pre-summed rows: no list needed."""
    return query.by_org or query.show_all or (query.include_sub_orgs and query.series == "hour")


def plan_reads(scope: Sequence[OrgInfo], zone: str, query: HistoryQuery) -> Plan:
    """Which counters give ``scope``'s calls in day or hour buckets of ``zone``, reading the fewest rows.

    ``scope`` holds whole subtrees when the query includes sub-orgs or all orgs; only then may a
    subtree's pre-summed days stand for its orgs.
    """
    if query.series == "hour":
        return Plan(quarters=tuple(o.org_id for o in scope))
    zones = {o.org_id: o.time_zone for o in scope}

    def has_days(org: OrgInfo) -> bool:
        # Day counters exist in the org's zone and in each of its ancestors' zones.
        return any(zones.get(a) == zone for a in org.ancestors)

    whole_subtrees = (query.include_sub_orgs or query.show_all) and not query.by_org
    whole = tuple(r.org_id for r in _roots(scope) if r.time_zone == zone) if whole_subtrees else ()
    rest = [o for o in scope if not any(a in whole for a in o.ancestors)]
    return Plan(
        subtree_days=whole,
        days=tuple(o.org_id for o in rest if has_days(o)),
        quarters=tuple(o.org_id for o in rest if not has_days(o)),
    )


# --- the answer -------------------------------------------------------------------------------


@dataclass(slots=True)
class Counters:
    """Calls per (org or None, service), one value per bucket."""

    size: int
    by_org: bool
    cells: dict[tuple[str | None, str], list[int]] = field(default_factory=dict)

    def add(self, org_id: str, service: str, index: int, calls: int) -> None:
        self.add_series(org_id, service, (index,), (calls,))

    def add_month(
        self,
        org_id: str,
        service: str,
        offset: int,
        calls: Sequence[int],
        position: Mapping[int, int] | None = None,
    ) -> None:
        """A month row of day counters: ``calls[d]`` are the calls of the day ``offset + d`` days after
        the series' first day (zero past the month's last day). ``position`` maps such a distance to
        its bucket when the series skips a date; ``None`` when every date is a bucket. A service gets
        its row only when a bucket gets a call (as from ``add_series``)."""
        if position is not None:
            found = [(position.get(offset + d), n) for d, n in enumerate(calls) if n]
            indexes = [i for i, _ in found if i is not None]
            if indexes:
                self.add_series(org_id, service, indexes, [n for i, n in found if i is not None])
            return
        low, high = max(0, -offset), min(len(calls), self.size - offset)
        if low >= high or not any(calls[low:high]):
            return
        key = (org_id if self.by_org else None, service)
        row = self.cells.get(key)
        if row is None:
            row = self.cells[key] = [0] * self.size
        start, end = offset + low, offset + high
        row[start:end] = map(operator.add, row[start:end], calls[low:high])

    def add_series(self, org_id: str, service: str, indexes: Sequence[int], calls: Sequence[int]) -> None:
        key = (org_id if self.by_org else None, service)
        row = self.cells.get(key)
        if row is None:
            row = self.cells[key] = [0] * self.size
        for i, n in zip(indexes, calls, strict=True):
            row[i] += n


def history_answer(buckets: Buckets, counters: Counters, orgs: Iterable[str] = ()) -> dict[str, Any]:
    """The ``params`` of the answer: ``counters`` per service (or per org, then service), ``total`` and
    ``ts``. With dimension=org every org in scope is a key, ``{}`` when it made no calls."""
    total = sum(sum(row) for row in counters.cells.values())
    if counters.by_org:
        grouped: dict[str, dict[str, list[int]]] = {org: {} for org in sorted(orgs)}
        for (org, service), row in sorted(counters.cells.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            grouped.setdefault(org or "", {})[service] = row
        body: dict[str, Any] = grouped
    else:
        body = {service: row for (_, service), row in sorted(counters.cells.items(), key=lambda kv: kv[0][1])}
    return {"counters": body, "total": total, "ts": list(buckets.labels)}
