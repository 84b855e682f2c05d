"""The contribution sums (pure): rows are the same however records are added and removed, and a span's
total read the way the gateway reads it (running totals by month and day, plus a part-day of records)
equals counting the records. Plus who a record counts for, releases and the marks comment."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.contributions_read import Release, marks_comment, release_of, release_span
from services.projector.activity import (
    INDEPENDENT,
    DirectoryUser,
    Identities,
    attribute,
    company_by_domain,
    company_for_date,
    domain_owners,
    email_domains,
    is_counted,
)
from services.projector.contribution_stats import Counted, DayKey, Deltas, Running, SumKey, updated, vector
from shared.contribution_sums import (
    BY_MODULE_COMPANY_USER,
    BY_PROJECT_TYPE,
    BY_PROJECT_TYPE_USER,
    BY_USER,
    COLUMNS,
    DAY,
    DAY_ROLLUPS,
    day_of_month,
    day_start,
    month_of,
    through,
)

START = 1_577_836_800  # 2020-01-01
SPAN = 200 * DAY  # into July: several month boundaries, a leap day

dates = st.integers(min_value=START - 5, max_value=START + SPAN)
records = st.builds(
    Counted,
    kind=st.sampled_from([1, 2]),
    date=dates,
    module=st.sampled_from(["nova", "swift"]),
    company=st.sampled_from(["A", "B"]),
    user_id=st.sampled_from(["u1", "u2", "u3"]),
    loc=st.integers(min_value=0, max_value=50),
    value=st.none(),
).map(lambda c: c if c.kind == 1 else Counted(2, c.date, c.module, c.company, c.user_id, 0, c.date % 5 - 2))

Rows = tuple[dict[SumKey, Running], dict[DayKey, Running]]


def store(rows: Rows, deltas: Deltas) -> Rows:
    """What the projector writes for ``deltas``, without Postgres."""
    months, days = dict(rows[0]), dict(rows[1])
    for key, values in deltas.months.items():
        row = updated(key[1], months.get(key), values)
        if row is None:
            months.pop(key, None)
        else:
            months[key] = row
    for day_key, values in deltas.days.items():
        row = updated(day_key[1], days.get(day_key), values)
        if row is None:
            days.pop(day_key, None)
        else:
            days[day_key] = row
    return months, days


def build(changes: Sequence[tuple[int, Counted]], batch_sizes: Sequence[int]) -> Rows:
    rows: Rows = ({}, {})
    i = 0
    sizes = list(batch_sizes) or [len(changes)]
    while i < len(changes):
        size = max(1, sizes[i % len(sizes)])
        deltas = Deltas()
        for sign, c in changes[i : i + size]:
            deltas.add(c, sign, ["all-modules"] if c.module == "nova" else [])
        rows = store(rows, deltas)
        i += size
    return rows


@settings(max_examples=60, deadline=None)
@given(st.lists(records, max_size=40), st.lists(st.integers(1, 7), max_size=4), st.data())
def test_rows_depend_only_on_the_records_left(
    kept: list[Counted], sizes: list[int], data: st.DataObject
) -> None:
    """Records added in any batches, some removed again later (re-attribution), give the rows of the
    records left built in one go."""
    removed = data.draw(st.lists(records, max_size=10))
    changes = [(1, c) for c in kept + removed] + [(-1, c) for c in removed]
    assert build(changes, sizes) == build([(1, c) for c in kept], [len(kept) or 1])
    assert build([(1, c) for c in removed] + [(-1, c) for c in removed], sizes) == ({}, {})


def read_total(rows: Rows, kept: list[Counted], key: SumKey, column: int, t: int | None) -> int:
    """Everything up to and including ``t`` the way the gateway's SQL reads it."""
    months, days = rows
    row = months.get(key)
    if t is None:
        return 0 if row is None else _at(row, column, 10**9)
    end = through(t)
    total = 0 if row is None else _at(row, column, end.whole_month - 1)
    if end.whole_day > 0:
        # A month's days come from the key's own day rows when its rollup keeps days, else from the
        # finest key's rows (as the gateway reads them).
        own = key[0] in DAY_ROLLUPS
        for day_key, day_row in days.items():
            rollup, kind, month, *rest = day_key
            if month != end.whole_month:
                continue
            if own:
                found = (rollup, kind, *rest) == key
            else:
                _, module, company, user = rest
                found = rollup == BY_MODULE_COMPANY_USER and _key_of(
                    Counted(kind, 0, module, company, user), key
                )
            if found:
                total += _at(day_row, column, end.whole_day)
    if end.part is not None:
        lo, hi = end.part
        total += sum(vector(c)[column] for c in kept if _key_of(c, key) and lo <= c.date <= hi)
    return total


def _at(row: Running, column: int, upto: int) -> int:
    """As contribution_through: the total of the last period at or before ``upto``."""
    values = row.columns[column]
    i = bisect.bisect_right(row.periods, upto)
    return 0 if values is None or i == 0 else values[i - 1]


def _key_of(c: Counted, key: SumKey) -> bool:
    rollup, kind, _, module, company, user = key
    if c.kind != kind:
        return False
    if rollup == BY_MODULE_COMPANY_USER:
        return (c.module, c.company, c.user_id) == (module, company, user)
    if rollup == BY_PROJECT_TYPE_USER:
        return c.module == "nova" and c.user_id == user
    if rollup == BY_PROJECT_TYPE:
        return c.module == "nova"
    return rollup == BY_USER and c.user_id == user


@settings(max_examples=80, deadline=None)
@given(st.lists(records, min_size=1, max_size=40), dates, dates, st.booleans(), st.booleans())
def test_a_span_read_from_running_totals_equals_counting(
    kept: list[Counted], a: int, b: int, open_lo: bool, open_hi: bool
) -> None:
    rows = build([(1, c) for c in kept], [5])
    lo, hi = min(a, b), max(a, b)
    keys = [
        k for k in rows[0] if k[0] in (BY_MODULE_COMPANY_USER, BY_USER, BY_PROJECT_TYPE_USER, BY_PROJECT_TYPE)
    ]
    for key in keys:
        for column in range(len(COLUMNS)):
            expected = sum(
                vector(c)[column]
                for c in kept
                if _key_of(c, key) and (open_lo or lo <= c.date) and (open_hi or c.date <= hi)
            )
            upper = read_total(rows, kept, key, column, None if open_hi else hi)
            lower = 0 if open_lo else read_total(rows, kept, key, column, lo - 1)
            assert upper - lower == expected, (key, COLUMNS[column], lo, hi)


@given(st.integers(min_value=-2_208_988_800, max_value=7_258_118_399))
def test_through_splits_a_moment_into_whole_days_and_a_part(t: int) -> None:
    end = through(t)
    if end.part is None:
        assert (t + 1) % DAY == 0 and (end.whole_month, end.whole_day) == (month_of(t), day_of_month(t))
    else:
        assert end.part == (day_start(t), t)
        before = day_start(t) - 1
        if end.whole_day:
            assert (end.whole_month, end.whole_day) == (month_of(before), day_of_month(before))
        else:
            assert end.whole_month == month_of(t) and day_of_month(t) == 1


def test_company_for_date_is_the_first_affiliation_ending_after_it() -> None:
    companies = (("A", 1000), ("B", 2000), ("C", 0))
    assert [company_for_date(companies, d) for d in (0, 999, 1000, 1999, 2000, 10**9)] == [
        "A",
        "A",
        "B",
        "B",
        "C",
        "C",
    ]


def test_the_longest_claimed_domain_names_the_company() -> None:
    domains = {"hp.com": "HP", "labs.hp.com": "HP Labs", "x.org": "X"}
    assert email_domains("a@eng.labs.hp.com") == ["eng.labs.hp.com", "labs.hp.com", "hp.com"]
    assert company_by_domain(domains, "a@eng.labs.hp.com") == "HP Labs"
    assert company_by_domain(domains, "a@hp.com") == "HP"
    assert company_by_domain(domains, "a@nothp.com") is None
    assert domain_owners([("Old", ["x.org"], 1), ("New", ["x.org"], 2)]) == {"x.org": "New"}


def test_a_directory_user_owns_their_emails_and_anyone_else_is_their_own_user() -> None:
    user = DirectoryUser("jdoe", "J Doe", "jdoe", ("j@a.org", "j@b.org"), (("A", 1000), ("B", 0)))
    who = Identities({"j@a.org": user, "j@b.org": user}, {"jdoe": user}, {"corp.com": "Corp"})
    assert attribute("j@b.org", None, 500, who) == attribute(None, "jdoe", 500, who)
    assert attribute("j@b.org", None, 500, who).company_name == "A"
    assert attribute("j@a.org", None, 1000, who).company_name == "B"
    assert (
        attribute("x@corp.com", None, 1, who).user_id,
        attribute("x@corp.com", None, 1, who).company_name,
    ) == (
        "x@corp.com",
        "Corp",
    )
    assert attribute("x@home.net", None, 1, who).company_name == INDEPENDENT
    assert attribute(None, "someone", 1, who).user_id == "someone"


def test_robots_commits_and_other_marks_are_not_counted() -> None:
    assert not is_counted("commit", "*robots", None) and is_counted("commit", "A", None)
    assert is_counted("mark", "*robots", "Code-Review") and not is_counted("mark", "A", "Workflow")
    assert is_counted("email", "A", None) and is_counted("bpd", "A", None)


def test_the_marks_comment_is_stackalyticss() -> None:
    assert marks_comment(1, 3, 55, 45) == "1|3|55|45 (96.2%)"
    assert marks_comment(0, 13, 18, 51) == "0|13|18|51 (84.1%)"
    assert marks_comment(0, 13, 11, 36) == "0|13|11|36 (78.3%)"
    assert marks_comment(0, 0, 0, 0) == "0|0|0|0 (0.0%)"


RELEASES = [Release("austin", 1000), Release("bexar", 2000), Release("cactus", 3000)]


@given(st.integers(min_value=-10_000, max_value=10_000))
def test_a_date_is_in_the_span_of_its_release(date: int) -> None:
    name = release_of(RELEASES, date)
    assert name is not None
    lo, hi = release_span(RELEASES, name)
    assert (lo is None or lo <= date) and (hi is None or date <= hi)


def test_releases_end_before_their_end_date_and_the_last_goes_on() -> None:
    assert [release_of(RELEASES, d) for d in (-5, 999, 1000, 2999, 3000, 10**9)] == [
        "austin",
        "austin",
        "bexar",
        "cactus",
        "cactus",
        "cactus",
    ]
    assert release_span(RELEASES, "austin") == (None, 999)
    assert release_span(RELEASES, "bexar") == (1000, 1999)
    assert release_span(RELEASES, "cactus") == (2000, None)
    assert release_of([], 5) is None
