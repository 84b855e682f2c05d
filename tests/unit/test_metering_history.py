"""``usage.api.history`` as pure functions: parameters and their errors, buckets in a zone (DST days of
23 and 25 hours, half-hour zones), which counters answer, and the answer's shape."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.metering_history import (
    MAX_BUCKETS,
    Counters,
    HistoryError,
    HistoryQuery,
    OrgInfo,
    Plan,
    buckets_for,
    day_buckets,
    day_start,
    history_answer,
    hour_buckets,
    needs_scope,
    params_from_query,
    parse_history,
    plan_reads,
)
from services.projector.api_calls import by_month, local_day, quarter_start

NOW = datetime(2024, 3, 10, 15, 20, 5, tzinfo=UTC)
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Paris",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
    "America/St_Johns",
]


def error(params: dict[str, Any]) -> str:
    with pytest.raises(HistoryError) as exc:
        parse_history(params, NOW)
    assert exc.value.code == 400
    return exc.value.message


def test_the_seeds_two_requests() -> None:
    definite = parse_history(
        {
            "includeSubOrgs": False,
            "showAll": False,
            "start": "2014-03-27T00:00:00.000-00:00",
            "end": "2014-03-28T00:00:00.000-00:00",
            "series": "hour",
        },
        NOW,
    )
    assert definite == HistoryQuery(
        datetime(2014, 3, 27, tzinfo=UTC), datetime(2014, 3, 28, tzinfo=UTC), "hour"
    )
    last = parse_history({"includeSubOrgs": False, "showAll": False, "last": "24h", "series": "hour"}, NOW)
    assert (last.start, last.end) == (NOW - timedelta(hours=24), NOW)


@pytest.mark.parametrize(
    ("last", "seconds"), [("30s", 30), ("15m", 900), ("24h", 86_400), ("7d", 604_800), ("1d", 86_400)]
)
def test_last_takes_seconds_minutes_hours_and_days(last: str, seconds: int) -> None:
    query = parse_history({"last": last}, NOW)
    assert query.end == NOW and (query.end - query.start).total_seconds() == seconds
    assert (query.series, query.include_sub_orgs, query.show_all, query.by_org) == (
        "hour",
        False,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "give a time range"),
        ({"start": "2014-03-27T00:00:00Z"}, "start and end go together"),
        ({"end": "2014-03-27T00:00:00Z"}, "start and end go together"),
        ({"last": "24h", "start": "2014-03-27T00:00:00Z", "end": "2014-03-28T00:00:00Z"}, "not both"),
        ({"last": "24h", "end": "2014-03-28T00:00:00Z"}, "not both"),
        ({"start": "2014-03-28T00:00:00Z", "end": "2014-03-27T00:00:00Z"}, "is before start"),
        ({"start": "2014-03-28T00:00:00Z", "end": "2014-03-28T00:00:00Z"}, "empty"),
        ({"last": "24w"}, "s (seconds), m (minutes), h (hours) or d (days)"),
        ({"last": "h"}, "whole number"),
        ({"last": "-1h"}, "whole number"),
        ({"last": "0h"}, "whole number"),
        ({"last": "1.5h"}, "whole number"),
        ({"last": 24}, "whole number"),
        ({"last": "9999999999d"}, "whole number"),
        ({"last": "99999999d"}, "before 1970"),
        ({"last": "24h", "series": "week"}, "series must be hour or day"),
        ({"last": "24h", "series": 1}, "series must be hour or day"),
        ({"start": "yesterday", "end": "2014-03-28T00:00:00Z"}, "start must be an ISO 8601 timestamp"),
        ({"start": "2014-03-27", "end": "2014-03-28T00:00:00Z"}, "has no offset"),
        ({"start": "2014-03-27T00:00:00", "end": "2014-03-28T00:00:00Z"}, "has no offset"),
        ({"start": "2014-02-30T00:00:00Z", "end": "2014-03-28T00:00:00Z"}, "start must be"),
        ({"start": "2014-03-27T00:00:00Z", "end": 1395878400}, "end must be an ISO 8601 timestamp"),
        ({"start": "1969-12-31T00:00:00Z", "end": "2014-03-28T00:00:00Z"}, "between 1970"),
        ({"start": "2014-03-27T00:00:00Z", "end": "9999-12-31T00:00:00+00:00"}, "between 1970"),
        ({"last": "24h", "includeSubOrgs": "yes"}, "includeSubOrgs must be true or false"),
        ({"last": "24h", "showAll": 1}, "showAll must be true or false"),
        ({"last": "24h", "dimension": "service"}, "dimension must be org"),
        ({"last": "24h", "org": "acme"}, "unknown parameters ['org']"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(params: dict[str, Any], reason: str) -> None:
    assert reason in error(params)


def test_flags_and_dimension() -> None:
    query = parse_history({"last": "1h", "includeSubOrgs": True, "showAll": True, "dimension": "org"}, NOW)
    assert (query.include_sub_orgs, query.show_all, query.by_org) == (True, True, True)


def test_the_rest_query_string_maps_onto_the_same_parameters() -> None:
    pairs = [("last", "24h"), ("includeSubOrgs", "true"), ("showAll", "false"), ("series", "day")]
    assert params_from_query(pairs) == {
        "last": "24h",
        "includeSubOrgs": True,
        "showAll": False,
        "series": "day",
    }
    for bad, reason in (
        ([("showAll", "yes")], "true or false"),
        ([("series", "hour"), ("series", "day")], "more than once"),
    ):
        with pytest.raises(HistoryError, match=reason):
            params_from_query(bad)


# --- buckets ----------------------------------------------------------------------------------


def lengths(starts: tuple[datetime, ...], end: datetime) -> list[float]:
    bounds = [*starts, end]
    return [(bounds[i + 1] - bounds[i]).total_seconds() / 3600 for i in range(len(starts))]


def test_dst_days_are_23_and_25_hours_long() -> None:
    days = day_buckets(datetime(2024, 3, 9, 12, tzinfo=UTC), datetime(2024, 3, 11, 12, tzinfo=UTC), NEW_YORK)
    assert days.labels == (
        "2024-03-09T00:00:00-05:00",
        "2024-03-10T00:00:00-05:00",
        "2024-03-11T00:00:00-04:00",
    )
    assert lengths(days.starts, days.end) == [24, 23, 24]
    assert days.days == (date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11))
    autumn = day_buckets(datetime(2024, 11, 3, 4, tzinfo=UTC), datetime(2024, 11, 4, 5, tzinfo=UTC), NEW_YORK)
    assert autumn.labels == ("2024-11-03T00:00:00-04:00",)
    assert lengths(autumn.starts, autumn.end) == [25]


def test_hours_of_dst_days_skip_two_oclock_or_repeat_one_oclock() -> None:
    spring = hour_buckets(
        datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 3, 11, 4, tzinfo=UTC), NEW_YORK
    )
    assert len(spring.starts) == 23
    assert spring.labels[:4] == (
        "2024-03-10T00:00:00-05:00",
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T04:00:00-04:00",
    )
    autumn = hour_buckets(
        datetime(2024, 11, 3, 4, tzinfo=UTC), datetime(2024, 11, 4, 5, tzinfo=UTC), NEW_YORK
    )
    assert len(autumn.starts) == 25
    assert autumn.labels[1:4] == (
        "2024-11-03T01:00:00-04:00",
        "2024-11-03T01:00:00-05:00",
        "2024-11-03T02:00:00-05:00",
    )
    assert set(lengths(autumn.starts, autumn.end)) == {1.0}


def test_half_hour_zones_and_half_hour_shifts() -> None:
    kolkata = hour_buckets(
        datetime(2024, 1, 1, 0, 10, tzinfo=UTC),
        datetime(2024, 1, 1, 1, tzinfo=UTC),
        zoneinfo.ZoneInfo("Asia/Kolkata"),
    )
    # 00:10Z is 05:40 in India: its hour started at 23:30Z.
    assert kolkata.labels == ("2024-01-01T05:00:00+05:30", "2024-01-01T06:00:00+05:30")
    assert kolkata.starts[0] == datetime(2023, 12, 31, 23, 30, tzinfo=UTC)
    lord_howe = hour_buckets(
        datetime(2024, 10, 5, 14, tzinfo=UTC),
        datetime(2024, 10, 5, 17, tzinfo=UTC),
        zoneinfo.ZoneInfo("Australia/Lord_Howe"),
    )
    assert lord_howe.labels == (
        "2024-10-06T00:00:00+10:30",
        "2024-10-06T01:00:00+10:30",
        "2024-10-06T02:30:00+11:00",
        "2024-10-06T03:00:00+11:00",
    )
    assert lengths(lord_howe.starts, lord_howe.end) == [1, 1, 0.5, 1]


def test_a_day_that_starts_after_a_midnight_gap_and_a_skipped_date() -> None:
    santiago = day_buckets(
        datetime(2024, 9, 7, 12, tzinfo=UTC),
        datetime(2024, 9, 8, 12, tzinfo=UTC),
        zoneinfo.ZoneInfo("America/Santiago"),
    )
    assert santiago.labels == ("2024-09-07T00:00:00-04:00", "2024-09-08T01:00:00-03:00")
    apia = day_buckets(
        datetime(2011, 12, 29, 12, tzinfo=UTC),
        datetime(2011, 12, 31, 12, tzinfo=UTC),
        zoneinfo.ZoneInfo("Pacific/Apia"),
    )
    assert apia.days == (date(2011, 12, 29), date(2011, 12, 31), date(2012, 1, 1))


def test_a_range_over_the_cap_is_refused() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    assert (
        len(hour_buckets(start, start + timedelta(hours=MAX_BUCKETS), zoneinfo.ZoneInfo("UTC")).starts)
        == MAX_BUCKETS
    )
    with pytest.raises(HistoryError, match=f"more than {MAX_BUCKETS} buckets"):
        hour_buckets(start, start + timedelta(hours=MAX_BUCKETS, seconds=1), zoneinfo.ZoneInfo("UTC"))
    assert (
        len(day_buckets(start, start + timedelta(days=MAX_BUCKETS), zoneinfo.ZoneInfo("UTC")).starts)
        == MAX_BUCKETS
    )
    with pytest.raises(HistoryError, match="more than"):
        day_buckets(start, start + timedelta(days=MAX_BUCKETS + 1), zoneinfo.ZoneInfo("UTC"))


instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ZONES), instants, st.integers(min_value=1, max_value=6 * 86_400))
def test_hour_buckets_tile_the_range_and_start_each_local_hour(
    zone_name: str, start: datetime, span: int
) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    end = start + timedelta(seconds=span)
    b = hour_buckets(start, end, zone)
    assert b.starts[0] <= start < (b.starts[1] if len(b.starts) > 1 else b.end) and b.end >= end
    assert list(b.starts) == sorted(set(b.starts)) and b.starts[-1] < end
    for s, following, label in zip(b.starts, [*b.starts[1:], b.end], b.labels, strict=True):
        local = s.astimezone(zone)
        assert label == local.isoformat() and datetime.fromisoformat(label) == s
        assert timedelta(minutes=15) <= following - s <= timedelta(hours=2)
        # A bucket starts on the hour, or where the offset changed; it ends at the next hour.
        changed = (s - timedelta(minutes=15)).astimezone(zone).utcoffset() != local.utcoffset()
        assert local.minute == 0 or changed
        assert (
            following.astimezone(zone).minute == 0
            or following.astimezone(zone).utcoffset() != local.utcoffset()
        )


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ZONES), instants, st.integers(min_value=1, max_value=90 * 86_400))
def test_day_buckets_are_local_dates_and_counters_land_in_their_own_day(
    zone_name: str, start: datetime, span: int
) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    end = start + timedelta(seconds=span)
    b = day_buckets(start, end, zone)
    assert b.starts[0] <= start and b.end >= end and list(b.days) == sorted(set(b.days))
    for s, following, day in zip(b.starts, [*b.starts[1:], b.end], b.days, strict=True):
        assert s.astimezone(zone).date() == day and (s - timedelta(seconds=1)).astimezone(zone).date() < day
        assert timedelta(hours=22) <= following - s <= timedelta(hours=26)
        # The projector files a quarter hour under the local date it starts in: the same bucket.
        for q in (s, following - timedelta(minutes=15)):
            assert local_day(quarter_start(q), zone_name) == day


# --- plan and answer --------------------------------------------------------------------------

TREE = [
    OrgInfo("acme", "America/New_York", ("acme",)),
    OrgInfo("acme-eu", "Europe/Paris", ("acme", "acme-eu")),
    OrgInfo("acme-us", "America/New_York", ("acme", "acme-us")),
    OrgInfo("globex", "Europe/Paris", ("globex",)),
    OrgInfo("globex-ny", "America/New_York", ("globex", "globex-ny")),
]
DAY = HistoryQuery(NOW - timedelta(days=3), NOW, "day")


def test_plans_read_pre_summed_days_where_they_fit() -> None:
    subtree = [o for o in TREE if "acme" in o.ancestors]
    include = HistoryQuery(DAY.start, DAY.end, "day", include_sub_orgs=True)
    assert plan_reads(subtree, "America/New_York", include) == Plan(subtree_days=("acme",))
    assert plan_reads(TREE[:1], "America/New_York", DAY) == Plan(days=("acme",))
    everything = HistoryQuery(DAY.start, DAY.end, "day", show_all=True)
    assert plan_reads(TREE, "America/New_York", everything) == Plan(
        subtree_days=("acme",), days=("globex-ny",), quarters=("globex",)
    )
    by_org = HistoryQuery(DAY.start, DAY.end, "day", include_sub_orgs=True, by_org=True)
    assert plan_reads(subtree, "America/New_York", by_org) == Plan(days=("acme", "acme-eu", "acme-us"))
    hourly = HistoryQuery(DAY.start, DAY.end, "hour", include_sub_orgs=True)
    assert plan_reads(subtree, "America/New_York", hourly) == Plan(quarters=("acme", "acme-eu", "acme-us"))
    # Only these need the list of orgs: a day series of the caller's org or subtree reads its own rows.
    assert [needs_scope(q) for q in (DAY, include, everything, by_org, hourly)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert plan_reads(TREE[:1], "America/New_York", include) == Plan(subtree_days=("acme",))


def test_the_answer_is_zero_filled_and_total_is_the_sum() -> None:
    b = day_buckets(datetime(2024, 3, 9, 5, tzinfo=UTC), datetime(2024, 3, 13, 4, tzinfo=UTC), NEW_YORK)
    flat = Counters(len(b.starts), by_org=False)
    flat.add("acme", "tr50", 0, 2)
    flat.add("acme-eu", "tr50", 0, 3)
    flat.add("acme", "heartbeat", 2, 7)
    assert history_answer(b, flat) == {
        "counters": {"heartbeat": [0, 0, 7, 0], "tr50": [5, 0, 0, 0]},
        "total": 12,
        "ts": list(b.labels),
    }
    grouped = Counters(len(b.starts), by_org=True)
    grouped.add("acme-eu", "tr50", 1, 3)
    grouped.add("acme", "tr50", 3, 1)
    assert history_answer(b, grouped, ["acme", "acme-eu", "acme-us"]) == {
        "counters": {"acme": {"tr50": [0, 0, 0, 1]}, "acme-eu": {"tr50": [0, 3, 0, 0]}, "acme-us": {}},
        "total": 4,
        "ts": list(b.labels),
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["tr50", "heartbeat"]),
            st.integers(0, 4),
            st.integers(1, 10**6),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_total_is_always_the_sum_of_every_counter(
    cells: list[tuple[str, str, int, int]], by_org: bool
) -> None:
    b = day_buckets(datetime(2024, 3, 9, 5, tzinfo=UTC), datetime(2024, 3, 14, 4, tzinfo=UTC), NEW_YORK)
    counters = Counters(len(b.starts), by_org)
    for org, service, i, n in cells:
        counters.add(org, service, i, n)
    answer = history_answer(b, counters, ["a", "b", "c"])
    rows = (
        [r for org in answer["counters"].values() for r in org.values()]
        if by_org
        else list(answer["counters"].values())
    )
    assert answer["total"] == sum(map(sum, rows)) == sum(n for *_, n in cells)
    assert all(len(r) == len(answer["ts"]) == 5 for r in rows)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["UTC", "America/New_York", "Pacific/Apia", "Europe/Paris"]),
    st.dates(min_value=date(2011, 10, 1), max_value=date(2012, 3, 1)),
    st.integers(min_value=1, max_value=100),
    st.dictionaries(
        st.tuples(
            st.sampled_from(["acme", "acme-eu"]), st.sampled_from(["tr50", "heartbeat"]), st.integers(0, 160)
        ),
        st.integers(min_value=1, max_value=1000),
        max_size=40,
    ),
    st.booleans(),
)
def test_month_rows_land_in_the_day_buckets_their_days_would(
    zone_name: str, first: date, length: int, day_calls: dict[tuple[str, str, int], int], by_org: bool
) -> None:
    """The gateway reads day counters as month rows (a cell per day): whatever the range (within a
    month, over several, across Samoa's skipped 30 December 2011), each call lands in the bucket of
    its day, and a service with no call in the range has no row."""
    zone = zoneinfo.ZoneInfo(zone_name)
    start = day_start(first, zone)
    b = day_buckets(start, start + timedelta(days=length), zone)
    origin = date(2011, 9, 1)
    days = {(org, origin + timedelta(days=d), service): n for (org, service, d), n in day_calls.items()}
    expected = Counters(len(b.starts), by_org)
    for (org, day, service), n in days.items():
        if day in b.days:
            expected.add(org, service, b.days.index(day), n)
    position = {(day - b.days[0]).days: i for i, day in enumerate(b.days)}
    every_date = len(position) == (b.days[-1] - b.days[0]).days + 1
    got = Counters(len(b.starts), by_org)
    for (org, month, service), cells in by_month(days, 1).items():
        got.add_month(org, service, (month - b.days[0]).days, cells, None if every_date else position)
    assert got.cells == expected.cells


def test_month_rows_hold_each_day_in_its_own_cell() -> None:
    increments = {
        ("acme", date(2024, 2, 29), "tr50"): 3,
        ("acme", date(2024, 2, 1), "tr50"): 1,
        ("acme", date(2024, 3, 31), "tr50"): 5,
    }
    months = by_month(increments, 1)
    assert set(months) == {("acme", date(2024, 2, 1), "tr50"), ("acme", date(2024, 3, 1), "tr50")}
    assert months["acme", date(2024, 2, 1), "tr50"] == [1] + [0] * 27 + [3, 0, 0]
    assert months["acme", date(2024, 3, 1), "tr50"] == [0] * 30 + [5]


# Values a client might send for any parameter: well-formed ones, near misses and nonsense.
_VALUES = st.one_of(
    st.sampled_from(
        [
            "24h",
            "0s",
            "999999999d",
            "7d",
            "15m",
            "30s",
            "1w",
            "",
            "hour",
            "day",
            "minute",
            "org",
            "2014-03-27T00:00:00.000-05:00",
            "2014-03-28T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59+14:00",
            "0001-01-01T00:00:00-12:00",
            "2014-03-27",
            "2014-03-27T00:00:00",
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["start", "end", "last", "series", "includeSubOrgs", "showAll", "dimension", "limit"]
        ),
        _VALUES,
        max_size=7,
    ),
    st.sampled_from(ZONES),
)
def test_no_parameters_whatever_their_values_give_anything_but_an_answer_or_a_refusal(
    params: dict[str, Any], zone_name: str
) -> None:
    """Never a 5xx: every parameter set either is a query whose buckets can be made, or a 400."""
    try:
        query = parse_history(params, NOW)
        buckets_for(query, zoneinfo.ZoneInfo(zone_name))
    except HistoryError as refused:
        assert refused.code == 400 and refused.message
    try:  # the same through the REST twin's query string
        query = parse_history(params_from_query((k, str(v)) for k, v in params.items()), NOW)
        buckets_for(query, zoneinfo.ZoneInfo(zone_name))
    except HistoryError as refused:
        assert refused.code == 400 and refused.message
