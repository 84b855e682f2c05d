"""The metering read models as pure folds: counters by quarter hour and local day (own and subtree),
and orgs, keys and sessions (expired ones pruned by event time only)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.projector.api_calls import OrgChain, quarter_start, tally_calls
from services.projector.metering import (
    SESSION_PRUNE_GRACE,
    MeteringRows,
    SessionRow,
    fold_metering_events,
)
from shared.events import AnyEvent
from shared.events.metering import (
    ApiCallCount,
    ApiCallsCounted,
    ApiKeyIssued,
    ApiKeyRevoked,
    OrgCreated,
    PrincipalAdded,
    SessionStarted,
)

T0 = datetime(2024, 3, 10, 4, 50, tzinfo=UTC)  # 23:50 on 9 March in New York
ORGS: list[AnyEvent] = [
    OrgCreated(event_id="o1", occurred_at=T0, org_id="acme", name="Acme", time_zone="America/New_York"),
    OrgCreated(
        event_id="o2", occurred_at=T0, org_id="acme-eu", name="EU", time_zone="Europe/Paris", parent_id="acme"
    ),
    OrgCreated(
        event_id="o3",
        occurred_at=T0,
        org_id="acme-fr",
        name="FR",
        time_zone="Europe/Paris",
        parent_id="acme-eu",
    ),
    OrgCreated(event_id="o4", occurred_at=T0, org_id="globex", name="Globex", time_zone="Asia/Kolkata"),
]


def counted(org_id: str, at: datetime, count: int = 1, service: str = "tr50") -> ApiCallsCounted:
    entry = ApiCallCount(org_id=org_id, service=service, at=at, count=count)
    return ApiCallsCounted(event_id=f"c-{org_id}-{at}-{count}", occurred_at=at, counts=(entry,))


def test_quarter_hours() -> None:
    assert quarter_start(datetime(2024, 3, 10, 4, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2024, 3, 10, 4, 45, tzinfo=UTC
    )
    assert quarter_start(datetime(2024, 3, 10, 5, 0, tzinfo=UTC)) == datetime(2024, 3, 10, 5, 0, tzinfo=UTC)


def test_a_call_counts_for_its_org_and_every_ancestor_in_their_own_zones() -> None:
    tally = tally_calls(
        {}, [*ORGS, counted("acme-fr", T0, 3), counted("acme", T0 + timedelta(minutes=20), 2)]
    )
    assert tally.orgs["acme-fr"] == OrgChain(
        ("acme", "acme-eu", "acme-fr"), ("America/New_York", "Europe/Paris", "Europe/Paris")
    )
    assert tally.counts == Counter(
        {
            ("acme-fr", datetime(2024, 3, 10, 4, 45, tzinfo=UTC), "tr50"): 3,
            ("acme", datetime(2024, 3, 10, 5, 0, tzinfo=UTC), "tr50"): 2,
        }
    )
    # 04:45Z is 23:45 on the 9th in New York and 05:45 on the 10th in Paris.
    assert tally.days == Counter(
        {
            ("America/New_York", "acme-fr", date(2024, 3, 9), "tr50"): 3,
            ("Europe/Paris", "acme-fr", date(2024, 3, 10), "tr50"): 3,
            ("America/New_York", "acme", date(2024, 3, 10), "tr50"): 2,
        }
    )
    assert tally.subtree_days == Counter(
        {
            ("acme", date(2024, 3, 9), "tr50"): 3,
            ("acme-eu", date(2024, 3, 10), "tr50"): 3,
            ("acme-fr", date(2024, 3, 10), "tr50"): 3,
            ("acme", date(2024, 3, 10), "tr50"): 2,
        }
    )


def test_calls_of_an_org_never_created_and_a_second_creation_are_ignored() -> None:
    twice = OrgCreated(event_id="again", occurred_at=T0, org_id="acme", name="X", time_zone="UTC")
    tally = tally_calls({}, [*ORGS, twice, counted("nobody", T0)])
    assert tally.orgs["acme"].zones == ("America/New_York",) and not tally.counts
    known = {"acme": OrgChain(("acme",), ("UTC",))}
    assert "acme" not in tally_calls(known, [twice]).orgs


calls = st.lists(
    st.tuples(
        st.sampled_from(["acme", "acme-eu", "acme-fr", "globex"]),
        st.integers(min_value=0, max_value=3 * 86_400),
        st.integers(min_value=1, max_value=1000),
        st.sampled_from(["tr50", "heartbeat", "lighthouse"]),
    ),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(calls, st.lists(st.integers(min_value=1, max_value=20), max_size=10))
def test_any_batching_gives_the_same_counters_and_every_rollup_adds_up(
    made: list[tuple[str, int, int, str]], sizes: list[int]
) -> None:
    events: list[AnyEvent] = [counted(o, T0 + timedelta(seconds=s), n, svc) for o, s, n, svc in made]
    whole = tally_calls({}, [*ORGS, *events])
    known = dict(whole.orgs)
    # The same calls in batches: the increments add up to the same counters.
    totals: tuple[Counter[object], Counter[object], Counter[object]] = (Counter(), Counter(), Counter())
    i = 0
    for size in [*sizes, len(events)]:
        part = tally_calls(known, events[i : i + size])
        totals[0].update(part.counts)
        totals[1].update(part.days)
        totals[2].update(part.subtree_days)
        i += size
    assert totals == (whole.counts, whole.days, whole.subtree_days)
    everything = sum(n for *_, n, _ in made)
    assert sum(whole.counts.values()) == everything
    # Each zone's days hold every call of the orgs that have that zone in their chain.
    paris = sum(n for o, _, n, _ in made if o in ("acme-eu", "acme-fr"))
    assert sum(v for (zone, *_), v in whole.days.items() if zone == "Europe/Paris") == paris
    roots = sum(v for (org, *_), v in whole.subtree_days.items() if org in ("acme", "globex"))
    assert roots == everything


def call_by_call(chains: dict[str, OrgChain], events: list[AnyEvent]) -> tuple[Counter[object], ...]:
    """The counters as the rules state them, one call at a time: the quarter hour, the org's own day in
    each zone of its chain, and each ancestor's subtree day in the ancestor's own zone."""
    counts: Counter[object] = Counter()
    days: Counter[object] = Counter()
    subtree: Counter[object] = Counter()
    for event in events:
        assert isinstance(event, ApiCallsCounted)
        for c in event.counts:
            chain = chains[c.org_id]
            counts[c.org_id, quarter_start(c.at), c.service] += c.count
            for zone in set(chain.zones):
                day = quarter_start(c.at).astimezone(ZoneInfo(zone)).date()
                days[zone, c.org_id, day, c.service] += c.count
            for ancestor, zone in zip(chain.ancestors, chain.zones, strict=True):
                day = quarter_start(c.at).astimezone(ZoneInfo(zone)).date()
                subtree[ancestor, day, c.service] += c.count
    return counts, days, subtree


@settings(max_examples=80, deadline=None)
@given(calls)
def test_fanning_out_from_quarter_hours_gives_what_counting_call_by_call_gives(
    made: list[tuple[str, int, int, str]],
) -> None:
    # Calls around midnight in every zone of the tree, several in one quarter hour and services.
    events: list[AnyEvent] = [counted(o, T0 + timedelta(seconds=s), n, svc) for o, s, n, svc in made]
    chains = tally_calls({}, ORGS).orgs
    tally = tally_calls(chains, events)
    assert (tally.counts, tally.days, tally.subtree_days) == call_by_call(dict(chains), events)


H = "0" * 64


def session(name: str, at: datetime, ttl: int) -> SessionStarted:
    return SessionStarted(
        event_id=name,
        occurred_at=at,
        session_hash=name,
        key_id="k",
        org_id="acme",
        expires_at=at + timedelta(seconds=ttl),
    )


def test_orgs_keys_and_principals() -> None:
    rows = fold_metering_events(
        MeteringRows(),
        [
            *ORGS,
            PrincipalAdded(event_id="p", occurred_at=T0, principal_id="ops", super_ops=True),
            PrincipalAdded(event_id="p2", occurred_at=T0, principal_id="ops", super_ops=False),
            ApiKeyIssued(
                event_id="k1", occurred_at=T0, key_id="k", org_id="acme-eu", key_hash=H, principal_id="ops"
            ),
            ApiKeyRevoked(event_id="r", occurred_at=T0 + timedelta(hours=1), key_id="k"),
            ApiKeyIssued(
                event_id="k2",
                occurred_at=T0 + timedelta(hours=2),
                key_id="k",
                org_id="acme-eu",
                key_hash="1" * 64,
            ),
            ApiKeyRevoked(event_id="r2", occurred_at=T0 + timedelta(hours=3), key_id="k"),
        ],
    )
    assert rows.orgs["acme-fr"].ancestors == ("acme", "acme-eu", "acme-fr")
    assert rows.principals["ops"].super_ops is True
    key = rows.keys["k"]
    assert (key.key_hash, key.created_at, key.revoked_at) == ("1" * 64, T0, T0 + timedelta(hours=1))


def test_a_session_from_an_ingest_whose_clock_runs_behind_is_kept_until_the_grace_has_passed() -> None:
    # Replica B's clock is 10 minutes behind A's: its one-minute session starts "expired" on A's clock.
    ahead = session("a", T0 + timedelta(minutes=10), 3600)
    behind = session("b", T0, 60)
    rows = fold_metering_events(MeteringRows(), [ahead, behind])
    assert set(rows.sessions) == {"a", "b"} and rows.clock == ahead.occurred_at
    # Pruned by event time only, once it expired SESSION_PRUNE_GRACE before the latest start.
    later = session("c", behind.expires_at + SESSION_PRUNE_GRACE, 60)
    assert set(fold_metering_events(rows, [later]).sessions) == {"a", "b", "c"}
    much_later = session("d", later.occurred_at + timedelta(seconds=1), 60)
    assert set(fold_metering_events(rows, [much_later]).sessions) == {"a", "d"}


@given(st.lists(st.tuples(st.integers(0, 4 * 3600), st.integers(1, 3600)), max_size=30), st.integers(1, 10))
def test_sessions_that_expired_before_the_latest_start_are_pruned_whatever_the_batching(
    starts: list[tuple[int, int]], size: int
) -> None:
    events = [session(f"s{i}", T0 + timedelta(seconds=at), ttl) for i, (at, ttl) in enumerate(starts)]
    whole = fold_metering_events(MeteringRows(), events)
    # In batches, as the projector applies them: the table keeps earlier sessions and prunes
    # those that expired before the new clock.
    kept: dict[str, SessionRow] = {}
    clock = None
    for i in range(0, len(events), size):
        rows = fold_metering_events(MeteringRows(clock=clock), events[i : i + size])
        clock = rows.clock
        horizon = rows.prune_before
        kept = {h: s for h, s in {**kept, **rows.sessions}.items() if horizon and s.expires_at >= horizon}
    horizon = whole.prune_before
    assert (
        set(kept)
        == set(whole.sessions)
        == {e.session_hash for e in events if horizon is not None and e.expires_at >= horizon}
    )
