"""The media panel's counts: a batch's change to usages per (status, platform)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from services.projector.media_counts import count_change


@dataclass(frozen=True)
class U:
    status: str
    platform: str


usages = st.dictionaries(
    st.integers(0, 20),
    st.builds(U, st.sampled_from(["pending", "published", "removed"]), st.sampled_from(["print", "front"])),
)


@given(st.lists(usages, min_size=1, max_size=8))
def test_changes_added_up_are_the_count_of_the_last_rows(states: list[dict[int, U]]) -> None:
    # Each state is the rows after a batch; adding each batch's change gives a count of the last.
    counts: Counter[tuple[str, str]] = Counter()
    before: dict[int, U] = {}
    for after in states:
        counts.update(count_change(before.values(), after.values()))
        before = after
    assert +counts == Counter((u.status, u.platform) for u in states[-1].values())
    assert all(n >= 0 for n in counts.values())


def test_a_status_change_moves_one_usage_and_nothing_unchanged_is_named() -> None:
    before = [U("pending", "print"), U("published", "front")]
    after = [U("published", "print"), U("published", "front")]
    assert count_change(before, after) == {("pending", "print"): -1, ("published", "print"): 1}
    assert count_change(after, after) == {}
