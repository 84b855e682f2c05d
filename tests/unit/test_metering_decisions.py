"""Ingest's metering decisions: the registry fold, validation, and what each command records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.metering import (
    MAX_CALL_AGE,
    MAX_CALL_AHEAD,
    MAX_DEPTH,
    MeteringRegistry,
    add_principal,
    count_api_calls,
    create_org,
    fold_metering_registry,
    issue_api_key,
    record_api_call,
    revoke_api_key,
    start_session,
    valid_call_time,
)
from services.ingest.rejected import Rejected
from shared.commands.metering import (
    AddPrincipal,
    ApiCalls,
    CountApiCalls,
    CreateOrg,
    IssueApiKey,
    RecordApiCall,
    RevokeApiKey,
    StartSession,
)
from shared.events import Event
from shared.events.metering import ApiKeyIssued, ApiKeyRevoked
from shared.secrets import hash_token

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
HASH = hash_token("a-key")


def fold(registry: MeteringRegistry, *events: Event) -> MeteringRegistry:
    for event in events:
        registry = fold_metering_registry(registry, event, registry.last_seq + 1)
    return registry


def org(
    registry: MeteringRegistry, org_id: str, parent: str | None = None, zone: str = "UTC"
) -> MeteringRegistry:
    cmd = CreateOrg(org_id=org_id, name=org_id.title(), time_zone=zone, parent_id=parent)
    return fold(registry, create_org(cmd, registry, event_id=f"o-{org_id}", at=NOW))


def key(registry: MeteringRegistry, org_id: str, key_id: str, key_hash: str = HASH) -> MeteringRegistry:
    cmd = IssueApiKey(org_id=org_id, key_hash=key_hash)
    return fold(registry, issue_api_key(cmd, registry, key_id=key_id, event_id=f"k-{key_id}", at=NOW))


def refused(status: int, what: str, decide: object) -> None:
    assert callable(decide)
    with pytest.raises(Rejected) as exc:
        decide()
    assert exc.value.status == status and what in exc.value.message, exc.value.message


def test_orgs_form_a_tree_and_keys_are_found_by_hash() -> None:
    registry = org(
        org(org(MeteringRegistry(), "acme"), "acme-eu", "acme", "Europe/Paris"), "acme-fr", "acme-eu"
    )
    assert [registry.orgs[o].depth for o in ("acme", "acme-eu", "acme-fr")] == [1, 2, 3]
    assert registry.orgs["acme-fr"].parent_id == "acme-eu"
    registry = key(registry, "acme-eu", "key_1")
    assert registry.by_key_hash[HASH] == "key_1" and registry.keys["key_1"].org_id == "acme-eu"
    assert (registry.last_seq, registry.last_org_seq) == (4, 3)


def test_an_org_needs_a_new_id_an_existing_parent_and_valid_fields() -> None:
    registry = org(MeteringRegistry(), "acme")
    decide = create_org  # every case below is refused, with the reason
    cases: list[tuple[int, str, CreateOrg]] = [
        (409, "already exists", CreateOrg(org_id="acme", name="A", time_zone="UTC")),
        (404, "org nope does not exist", CreateOrg(org_id="x", name="X", time_zone="UTC", parent_id="nope")),
        (400, "org id", CreateOrg(org_id="Acme", name="A", time_zone="UTC")),
        (400, "org id", CreateOrg(org_id="-acme", name="A", time_zone="UTC")),
        (400, "org id", CreateOrg(org_id="a" * 64, name="A", time_zone="UTC")),
        (400, "org id", CreateOrg(org_id="a b", name="A", time_zone="UTC")),
        (400, "name", CreateOrg(org_id="b", name=" ", time_zone="UTC")),
        (400, "name", CreateOrg(org_id="b", name="x" * 201, time_zone="UTC")),
        (400, "control", CreateOrg(org_id="b", name="a\nb", time_zone="UTC")),
        (400, "time_zone", CreateOrg(org_id="b", name="B", time_zone="Mars/Olympus")),
        (400, "time_zone", CreateOrg(org_id="b", name="B", time_zone="../etc/passwd")),
        (400, "time_zone", CreateOrg(org_id="b", name="B", time_zone="posix/Europe/Paris")),
        (400, "time_zone", CreateOrg(org_id="b", name="B", time_zone="utc")),
        (400, "time_zone", CreateOrg(org_id="b", name="B", time_zone="")),
    ]
    for status, what, cmd in cases:
        refused(status, what, lambda cmd=cmd: decide(cmd, registry, event_id="e", at=NOW))
    made = create_org(
        CreateOrg(org_id="b_2", name="B", time_zone="Asia/Kolkata", parent_id="acme"),
        registry,
        event_id="e",
        at=NOW,
    )
    assert (made.org_id, made.time_zone, made.parent_id, made.occurred_at) == (
        "b_2",
        "Asia/Kolkata",
        "acme",
        NOW,
    )


def test_trees_are_at_most_max_depth_deep() -> None:
    registry = org(MeteringRegistry(), "o1")
    for depth in range(2, MAX_DEPTH + 1):
        registry = org(registry, f"o{depth}", f"o{depth - 1}")
    cmd = CreateOrg(org_id="deeper", name="D", time_zone="UTC", parent_id=f"o{MAX_DEPTH}")
    refused(400, "levels deep", lambda: create_org(cmd, registry, event_id="e", at=NOW))


def test_keys_need_an_org_a_known_principal_and_a_hash() -> None:
    registry = fold(
        org(MeteringRegistry(), "acme"),
        add_principal(
            AddPrincipal(principal_id="ops", super_ops=True), MeteringRegistry(), event_id="p", at=NOW
        ),
    )
    issue = issue_api_key
    refused(
        404,
        "org nope",
        lambda: issue(IssueApiKey(org_id="nope", key_hash=HASH), registry, key_id="k", event_id="e", at=NOW),
    )
    refused(
        404,
        "principal bob",
        lambda: issue(
            IssueApiKey(org_id="acme", key_hash=HASH, principal_id="bob"),
            registry,
            key_id="k",
            event_id="e",
            at=NOW,
        ),
    )
    refused(
        400,
        "SHA-256",
        lambda: issue(
            IssueApiKey(org_id="acme", key_hash="a-key"), registry, key_id="k", event_id="e", at=NOW
        ),
    )
    refused(
        400,
        "key name",
        lambda: issue(
            IssueApiKey(org_id="acme", key_hash=HASH, name="a\x00"),
            registry,
            key_id="k",
            event_id="e",
            at=NOW,
        ),
    )
    made = issue(
        IssueApiKey(org_id="acme", key_hash=HASH, principal_id="ops", name="ci"),
        registry,
        key_id="k",
        event_id="e",
        at=NOW,
    )
    assert (made.key_id, made.principal_id, made.name, made.key_hash) == ("k", "ops", "ci", HASH)
    assert registry.principals == {"ops": True}


def test_a_key_issued_again_replaces_its_secret_and_a_revoked_one_stays_revoked() -> None:
    registry = key(org(MeteringRegistry(), "acme"), "acme", "key_1")
    other = hash_token("another")
    registry = key(registry, "acme", "key_1", other)
    assert registry.by_key_hash == {other: "key_1"} and registry.keys["key_1"].key_hash == other
    revoked = revoke_api_key(RevokeApiKey(key_id="key_1"), registry, event_id="r", at=NOW)
    assert isinstance(revoked, ApiKeyRevoked)
    registry = fold(registry, revoked)
    assert registry.keys["key_1"].revoked
    assert revoke_api_key(RevokeApiKey(key_id="key_1"), registry, event_id="r", at=NOW) is None
    refused(
        404, "key_2", lambda: revoke_api_key(RevokeApiKey(key_id="key_2"), registry, event_id="r", at=NOW)
    )
    refused(
        409,
        "revoked",
        lambda: issue_api_key(
            IssueApiKey(org_id="acme", key_hash=HASH), registry, key_id="key_1", event_id="e", at=NOW
        ),
    )
    refused(
        401,
        "revoked",
        lambda: start_session(
            StartSession(key_hash=other, session_hash=HASH), registry, event_id="s", at=NOW
        ),
    )


def test_principals_are_unique_and_named_sanely() -> None:
    registry = fold(
        MeteringRegistry(),
        add_principal(
            AddPrincipal(principal_id="alice@example.com"), MeteringRegistry(), event_id="p", at=NOW
        ),
    )
    assert registry.principals == {"alice@example.com": False}
    refused(
        409,
        "exists",
        lambda: add_principal(AddPrincipal(principal_id="alice@example.com"), registry, event_id="p", at=NOW),
    )
    for bad in ("", " x", "a b", "x" * 129, "é"):
        refused(
            400,
            "principal id",
            lambda bad=bad: add_principal(AddPrincipal(principal_id=bad), registry, event_id="p", at=NOW),
        )


def test_a_session_expires_ttl_seconds_after_the_event_and_needs_a_live_key() -> None:
    registry = key(org(MeteringRegistry(), "acme"), "acme", "key_1")
    session_hash = hash_token("session")
    started = start_session(
        StartSession(key_hash=HASH, session_hash=session_hash, ttl=90), registry, event_id="s", at=NOW
    )
    assert (started.key_id, started.org_id, started.expires_at) == (
        "key_1",
        "acme",
        NOW + timedelta(seconds=90),
    )
    assert started.session_hash == session_hash
    refused(
        401,
        "invalid",
        lambda: start_session(
            StartSession(key_hash=hash_token("x"), session_hash=session_hash), registry, event_id="s", at=NOW
        ),
    )
    for ttl in (0, -1, 86_401):
        refused(
            400,
            "ttl",
            lambda ttl=ttl: start_session(
                StartSession(key_hash=HASH, session_hash=session_hash, ttl=ttl),
                registry,
                event_id="s",
                at=NOW,
            ),
        )
    refused(
        400,
        "session_hash",
        lambda: start_session(
            StartSession(key_hash=HASH, session_hash="plain"), registry, event_id="s", at=NOW
        ),
    )


def calls(org_id: str = "acme", service: str = "tr50", at: datetime = NOW, count: int = 1) -> ApiCalls:
    return ApiCalls(org_id=org_id, service=service, at=at, count=count)


def test_counted_calls_are_checked_entry_by_entry() -> None:
    registry = org(MeteringRegistry(), "acme")

    def count(*entries: ApiCalls) -> object:
        return count_api_calls(CountApiCalls(counts=entries), registry, event_id="c", at=NOW)

    refused(400, "1 to 5000", lambda: count())
    refused(400, "1 to 5000", lambda: count(*[calls()] * 5001))
    refused(404, "org nope", lambda: count(calls(), calls("nope", service="BAD")))
    refused(400, "service", lambda: count(calls(service="Heartbeat")))
    refused(400, "service", lambda: count(calls(service="x" * 41)))
    refused(400, "count", lambda: count(calls(count=0)))
    refused(400, "count", lambda: count(calls(count=1_000_000_001)))
    refused(400, "days in the past", lambda: count(calls(at=NOW - MAX_CALL_AGE - timedelta(seconds=1))))
    refused(400, "in the future", lambda: count(calls(at=NOW + MAX_CALL_AHEAD + timedelta(seconds=1))))
    refused(400, "UTC offset", lambda: count(calls(at=NOW.replace(tzinfo=None))))
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    event = count_api_calls(
        CountApiCalls(counts=(calls(at=paris, count=7), calls(service="stackalytics"))),
        registry,
        event_id="c",
        at=NOW,
    )
    assert [(c.org_id, c.service, c.at, c.at.tzinfo, c.count) for c in event.counts] == [
        ("acme", "tr50", NOW, UTC, 7),
        ("acme", "stackalytics", NOW, UTC, 1),
    ]
    assert event.source == "gateway"


def test_a_published_call_is_checked_as_the_gateways_and_names_its_source() -> None:
    registry = org(MeteringRegistry(), "acme")

    def record(cmd: RecordApiCall) -> object:
        return record_api_call(cmd, registry, source="billing", event_id="c", at=NOW)

    refused(404, "org nope", lambda: record(RecordApiCall(org="nope", service="x", time=NOW, id="1")))
    refused(400, "id", lambda: record(RecordApiCall(org="acme", service="x", time=NOW, id="")))
    refused(400, "id", lambda: record(RecordApiCall(org="acme", service="x", time=NOW, id="a b")))
    refused(
        400,
        "past",
        lambda: record(RecordApiCall(org="acme", service="x", time=NOW - timedelta(days=31), id="1")),
    )
    event = record_api_call(
        RecordApiCall(org="acme", service="billing", time=NOW, id="evt-1", count=3),
        registry,
        source="billing",
        event_id="c",
        at=NOW,
    )
    assert event.source == "billing" and [(c.service, c.count) for c in event.counts] == [("billing", 3)]


@given(st.integers(min_value=-40 * 86_400, max_value=40 * 86_400))
def test_call_times_are_accepted_exactly_within_the_bounds(offset: int) -> None:
    at = NOW + timedelta(seconds=offset)
    inside = -MAX_CALL_AGE.total_seconds() <= offset <= MAX_CALL_AHEAD.total_seconds()
    try:
        assert valid_call_time(at, NOW) == at and inside
    except Rejected:
        assert not inside


def test_the_registry_ignores_what_it_does_not_hold() -> None:
    registry = MeteringRegistry()
    after = fold(registry, ApiKeyRevoked(event_id="r", occurred_at=NOW, key_id="nope"))
    assert after.keys == {} and after.last_seq == 1
    issued = ApiKeyIssued(event_id="k", occurred_at=NOW, key_id="k1", org_id="gone", key_hash=HASH)
    assert fold(after, issued).keys["k1"].org_id == "gone"
