"""The Lighthouse merge as a pure fold: the hour boundary, and properties against a naive model."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.projector.link_usage import (
    LinkRow,
    LinksState,
    Session,
    add_use,
    fold_usage_events,
    fold_usage_sessions,
)
from services.projector.links import usage_windows
from shared.events import AnyEvent, LinkCreated, LinkDeleted, LinkUpdated, LinkUsed, PageVisited

T0 = datetime(2016, 3, 4, 14, 53, 25, 740000, tzinfo=UTC)
_n = 0


def _id() -> str:
    global _n
    _n += 1
    return f"e{_n}"


def created(link_id: int) -> LinkCreated:
    return LinkCreated(
        event_id=_id(),
        occurred_at=T0 - timedelta(days=1),
        link_id=link_id,
        name=f"L{link_id}",
        url="http://x/",
    )


def used(link_id: int, user: str, at: datetime) -> LinkUsed:
    return LinkUsed(event_id=_id(), occurred_at=at, link_id=link_id, user=user, used_at=at)


def usages(state: LinksState) -> dict[tuple[int, str], list[tuple[datetime, int]]]:
    """What GET shows per (link, user): (date, duration) of each usage."""
    return {k: [(s.start, s.duration) for s in v] for k, v in state.sessions.items()}


def fold(events: Sequence[AnyEvent]) -> LinksState:
    return fold_usage_events(LinksState(), events)


# --- the boundary: a post at most 3600 s after the last one extends the usage ------------------


def test_a_post_3599_seconds_after_the_last_extends_the_usage() -> None:
    state = fold([created(1), used(1, "bob", T0), used(1, "bob", T0 + timedelta(seconds=3599))])
    assert usages(state) == {(1, "bob"): [(T0, 3599)]}


def test_a_post_exactly_3600_seconds_after_the_last_still_extends_the_usage() -> None:
    state = fold([created(1), used(1, "bob", T0), used(1, "bob", T0 + timedelta(seconds=3600))])
    assert usages(state) == {(1, "bob"): [(T0, 3600)]}


def test_a_post_3601_seconds_after_the_last_starts_a_new_usage() -> None:
    later = T0 + timedelta(seconds=3601)
    state = fold([created(1), used(1, "bob", T0), used(1, "bob", later)])
    assert usages(state) == {(1, "bob"): [(T0, 0), (later, 0)]}


def test_a_microsecond_past_the_hour_starts_a_new_usage() -> None:
    later = T0 + timedelta(seconds=3600, microseconds=1)
    state = fold([created(1), used(1, "bob", T0), used(1, "bob", later)])
    assert len(state.sessions[(1, "bob")]) == 2


def test_the_window_runs_from_the_last_post_not_from_the_start() -> None:
    posts = [T0 + timedelta(minutes=50 * i) for i in range(6)]  # every 50 minutes: one long usage
    state = fold([created(1), *(used(1, "bob", at) for at in posts)])
    assert usages(state) == {(1, "bob"): [(T0, 250 * 60)]}


def test_duration_is_whole_seconds_rounded_down() -> None:
    state = fold(
        [created(1), used(1, "bob", T0), used(1, "bob", T0 + timedelta(seconds=41, microseconds=999_999))]
    )
    assert usages(state) == {(1, "bob"): [(T0, 41)]}


def test_the_documents_example() -> None:
    bob = datetime(2016, 3, 4, 14, 53, 35, 143000, tzinfo=UTC)
    state = fold(
        [created(2), used(2, "bob", bob), used(2, "bob", bob + timedelta(seconds=3420, microseconds=5))]
    )
    assert usages(state) == {(2, "bob"): [(bob, 3420)]}


def test_users_and_links_are_merged_separately() -> None:
    soon = T0 + timedelta(minutes=1)
    state = fold(
        [created(1), created(2), used(1, "a", T0), used(1, "b", soon), used(2, "a", soon), used(1, "a", soon)]
    )
    assert usages(state) == {(1, "a"): [(T0, 60)], (1, "b"): [(soon, 0)], (2, "a"): [(soon, 0)]}


# --- out of order: a late use lands where its time says ------------------------------------------


def test_a_late_use_inside_a_usage_changes_nothing() -> None:
    end = T0 + timedelta(minutes=30)
    state = fold([created(1), used(1, "u", T0), used(1, "u", end), used(1, "u", T0 + timedelta(minutes=10))])
    assert usages(state) == {(1, "u"): [(T0, 1800)]}


def test_a_late_use_can_bridge_two_usages() -> None:
    later = T0 + timedelta(hours=1, minutes=40)
    events = [created(1), used(1, "u", T0), used(1, "u", later)]
    assert len(fold(events).sessions[(1, "u")]) == 2
    bridged = fold([*events, used(1, "u", T0 + timedelta(minutes=50))])
    assert usages(bridged) == {(1, "u"): [(T0, 100 * 60)]}


def test_a_late_use_exactly_an_hour_before_a_usage_joins_it() -> None:
    start = T0 + timedelta(hours=1)
    joined = fold([created(1), used(1, "u", start), used(1, "u", T0)])
    assert usages(joined) == {(1, "u"): [(T0, 3600)]}
    apart = fold([created(1), used(1, "u", start), used(1, "u", T0 - timedelta(seconds=1))])
    assert usages(apart) == {(1, "u"): [(T0 - timedelta(seconds=1), 0), (start, 0)]}


def test_a_late_use_before_a_usage_moves_its_start() -> None:
    early = T0 - timedelta(minutes=59)
    state = fold([created(1), used(1, "u", T0), used(1, "u", early)])
    assert usages(state) == {(1, "u"): [(early, 59 * 60)]}


# --- the link's life ---------------------------------------------------------------------------


def test_uses_of_a_missing_or_deleted_link_are_ignored() -> None:
    deleted = LinkDeleted(event_id=_id(), occurred_at=T0, link_id=1)
    state = fold([used(7, "u", T0), created(1), used(1, "u", T0), deleted, used(1, "u", T0)])
    assert state.sessions == {} and state.links == {1: None}


def test_an_update_changes_only_the_fields_it_names() -> None:
    update = LinkUpdated(event_id=_id(), occurred_at=T0, link_id=1, url="https://y/")
    state = fold([created(1), update])
    assert state.links[1] == LinkRow(1, "L1", "https://y/", "", T0 - timedelta(days=1))


def test_add_use_keeps_sessions_sorted_and_apart() -> None:
    sessions = add_use(add_use((), T0 + timedelta(hours=3)), T0)
    assert sessions == (Session(T0, T0), Session(T0 + timedelta(hours=3), T0 + timedelta(hours=3)))


# --- properties against a naive model ------------------------------------------------------------


def naive(uses: Sequence[tuple[int, str, datetime]]) -> dict[tuple[int, str], list[tuple[datetime, int]]]:
    """The document's rule, literally, over each (link, user)'s uses in time order."""
    times: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for link_id, user, at in uses:
        times[(link_id, user)].append(at)
    out: dict[tuple[int, str], list[tuple[datetime, int]]] = {}
    for key, ats in times.items():
        found: list[tuple[datetime, int]] = []
        last: datetime | None = None
        for at in sorted(ats):
            if last is not None and at - last <= timedelta(seconds=3600):
                start = found[-1][0]
                gap = at - start
                found[-1] = (start, gap.days * 86_400 + gap.seconds)
            else:
                found.append((at, 0))
            last = at
        out[key] = found
    return out


# Offsets cluster around multiples of the hour, so the boundary comes up often.
offsets = st.one_of(
    st.integers(0, 5 * 3600).map(lambda s: timedelta(seconds=s)),
    st.builds(
        lambda h, d, us: timedelta(hours=h, seconds=d, microseconds=us),
        st.integers(0, 5),
        st.sampled_from([-1, 0, 1]),
        st.sampled_from([0, 0, 1, 999_999]),
    ),
)
uses_strategy = st.lists(
    st.tuples(st.sampled_from([1, 2]), st.sampled_from(["alice", "bob"]), offsets.map(lambda d: T0 + d)),
    max_size=40,
)


def _events(uses: Sequence[tuple[int, str, datetime]]) -> list[AnyEvent]:
    return [created(1), created(2), *(used(link_id, user, at) for link_id, user, at in uses)]


@settings(max_examples=500)
@given(uses_strategy)
def test_the_fold_agrees_with_the_naive_model(uses: list[tuple[int, str, datetime]]) -> None:
    assert usages(fold(_events(uses))) == naive(uses)


@settings(max_examples=300)
@given(uses_strategy, st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_the_result(
    uses: list[tuple[int, str, datetime]], rnd: random.Random
) -> None:
    shuffled = list(uses)
    rnd.shuffle(shuffled)
    assert fold(_events(shuffled)) == fold(_events(uses))


@given(uses_strategy, st.data())
def test_duplicate_uses_do_not_change_the_result(
    uses: list[tuple[int, str, datetime]], data: st.DataObject
) -> None:
    again = data.draw(st.lists(st.sampled_from(uses), max_size=10)) if uses else []
    assert fold(_events([*uses, *again])) == fold(_events(uses))


@given(uses_strategy, uses_strategy)
def test_a_batch_needs_only_the_sessions_within_its_windows(
    history: list[tuple[int, str, datetime]], batch_uses: list[tuple[int, str, datetime]]
) -> None:
    """What ``apply_links`` does: load only the sessions a batch can reach, fold, write those back."""
    state = fold(_events(history))
    batch: list[AnyEvent] = [used(link_id, user, at) for link_id, user, at in batch_uses]
    windows = usage_windows(batch)
    loaded = {
        k: tuple(s for s in v if s.last >= windows[k][0] and s.start <= windows[k][1])
        for k, v in state.sessions.items()
        if k in windows
    }
    after = fold_usage_events(LinksState(links=state.links, sessions=loaded), batch)
    written = {}
    for k in state.sessions.keys() | after.sessions.keys():
        kept = [s for s in state.sessions.get(k, ()) if s not in loaded.get(k, ())]
        written[k] = tuple(sorted([*kept, *after.sessions.get(k, ())], key=lambda s: s.start))
    assert written == fold_usage_events(state, batch).sessions


@given(uses_strategy)
def test_every_fold_is_sessions_apart_by_more_than_the_window(uses: list[tuple[int, str, datetime]]) -> None:
    for sessions in fold(_events(uses)).sessions.values():
        for a, b in itertools.pairwise(sessions):
            assert a.start <= a.last and b.start - a.last > timedelta(hours=1)


def test_fold_usage_sessions_ignores_other_events() -> None:
    state = fold([created(1), used(1, "u", T0)])
    assert fold_usage_sessions(state, PageVisited(event_id=_id(), occurred_at=T0, path="/")) is state
