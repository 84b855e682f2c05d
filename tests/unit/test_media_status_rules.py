"""The status rules as one pure function, against a brute-force reading of the three documented rules
(and the cases they leave open, as docs/api.md reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.media import STATUSES
from services.projector.media_usage import reported_usages

T0 = datetime(2015, 11, 27, 15, 56, 51, tzinfo=UTC)


@dataclass(frozen=True)
class U:
    usage_id: str
    media_id: str
    grouping: str
    status: str
    last_modified: datetime = T0


def matching(u: U, usages: list[U]) -> list[U]:
    """The seed's definition: same grouping and media id, but a different usage id."""
    return [
        v
        for v in usages
        if v.grouping == u.grouping and v.media_id == u.media_id and v.usage_id != u.usage_id
    ]


def brute_force(usages: list[U]) -> set[str]:
    """Each rule read literally, usage by usage, with no grouping tricks."""
    shown = set()
    for u in usages:
        matches = matching(u, usages)
        # "If there exists a pending usage but no matching published or removed usages, pending is
        # reported" -- and, by the second and third rules, not otherwise.
        if u.status == "pending" and any(v.status in {"published", "removed"} for v in matches):
            continue
        # "If there are matching removed usages only published usages are reported": a removed usage
        # that matches another one, among u and its matches.
        group = [u, *matches]
        removed_matches = any(r.status == "removed" and matching(r, usages) for r in group)
        if removed_matches and u.status != "published":
            continue
        shown.add(u.usage_id)
    return shown


usage_lists = st.lists(
    st.builds(
        U,
        usage_id=st.uuids().map(str),
        media_id=st.sampled_from(["m1", "m2"]),
        grouping=st.sampled_from(["composer/a", "composer/b", "print/c"]),
        status=st.sampled_from(STATUSES),
        last_modified=st.integers(0, 5).map(lambda s: T0 + timedelta(seconds=s)),
    ),
    max_size=12,
    unique_by=lambda u: u.usage_id,
)


@given(usage_lists)
def test_the_rules_match_a_brute_force_reading(usages: list[U]) -> None:
    assert {u.usage_id for u in reported_usages(usages)} == brute_force(usages)


@given(usage_lists)
def test_newest_change_first_then_by_id(usages: list[U]) -> None:
    shown = reported_usages(usages)
    assert shown == sorted(shown, key=lambda u: (-u.last_modified.timestamp(), u.usage_id))


@given(usage_lists)
def test_a_usage_is_reported_or_hidden_by_its_own_matches_only(usages: list[U]) -> None:
    # Reading a media's usages alone gives what reading them among other media's gives.
    for media in ("m1", "m2"):
        alone = reported_usages([u for u in usages if u.media_id == media])
        assert alone == [u for u in reported_usages(usages) if u.media_id == media]


def _statuses(*statuses: str, grouping: str = "composer/a") -> list[U]:
    return [U(f"{grouping}_{i}", "m1", grouping, s) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "shown"),
    [
        # The three documented rules.
        (("pending",), ["pending"]),
        (("pending", "published"), ["published"]),
        (("pending", "removed"), []),
        (("published", "removed"), ["published"]),
        (("pending", "published", "removed"), ["published"]),
        # Where the rules are silent (docs/api.md): a removed usage alone is reported; removed
        # usages that match each other hide each other; other statuses are not hidden by pending or
        # published ones, only by a matching removed one.
        (("removed",), ["removed"]),
        (("removed", "removed"), []),
        (("published", "published"), ["published", "published"]),
        (("pending", "syndicated"), ["pending", "syndicated"]),
        (("syndicated", "removed"), []),
        (("unknown", "published"), ["published", "unknown"]),
    ],
)
def test_examples(statuses: tuple[str, ...], shown: list[str]) -> None:
    assert sorted(u.status for u in reported_usages(_statuses(*statuses))) == sorted(shown)


def test_usages_of_other_groupings_or_media_never_match() -> None:
    usages = [
        U("a_1", "m1", "composer/a", "pending"),
        U("b_1", "m1", "composer/b", "published"),
        U("a_2", "m2", "composer/a", "removed"),
    ]
    assert {u.usage_id for u in reported_usages(usages)} == {"a_1", "b_1", "a_2"}
