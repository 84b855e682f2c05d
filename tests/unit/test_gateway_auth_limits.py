"""The failure budget and proven credentials: bounded, and never more work than the budget allows."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.auth_limits import (
    Admission,
    FailureBudget,
    RecentCredentials,
    client_address,
    client_key,
    credential_digest,
)

MEMORY = 60.0
# A run of operations on a few clients: (seconds since the previous one, client, operation).
ops = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=5, allow_nan=False),
        st.integers(0, 5),
        st.sampled_from(["admit", "charge", "paid_failure", "refund"]),
    ),
    max_size=200,
)


@given(ops, st.integers(1, 10), st.floats(min_value=0.01, max_value=10), st.integers(1, 4))
def test_paid_admissions_never_exceed_the_burst_plus_the_refill(
    run: list[tuple[float, int, str]], burst: int, per_second: float, max_clients: int
) -> None:
    budget = FailureBudget(burst, per_second, max_clients, MEMORY)
    now = 0.0
    paid = {c: 0 for c in range(6)}
    refunded = {c: 0 for c in range(6)}
    failed_at: dict[int, float] = {}
    for dt, client, op in run:
        now += dt
        if op == "admit":
            admission = budget.admit(str(client), now)
            if admission.paid:
                paid[client] += 1
            elif admission.refused:
                assert admission.retry_after <= 1 / per_second + 1e-9  # the promised wait is enough
                later = budget.admit(str(client), now + admission.retry_after + 1e-6)
                # Admitted then: paying, or free when a wait longer than the memory forgot the failures.
                assert not later.refused
                paid[client] += later.paid
            elif max_clients >= 6:  # free: only a client with no failure remembered
                assert client not in failed_at or now - failed_at[client] >= MEMORY
        elif op == "charge":
            budget.charge(str(client), now)
            failed_at[client] = now
        elif op == "paid_failure":
            budget.paid_failure(str(client), now)
        else:
            budget.refund(str(client), now)
            refunded[client] += 1
        assert len(budget) <= max_clients
        assert 0 <= budget.tokens(str(client), now) <= burst
    if max_clients >= 6:  # nobody was forgotten early, so nobody got a fresh budget
        for client in range(6):
            # (+1: a look-ahead above may have taken a token from up to 1/per_second later)
            assert paid[client] - refunded[client] <= burst + now * per_second + 1 + 1e-6


@given(st.integers(1, 50), st.floats(min_value=0.01, max_value=10))
def test_an_exhausted_budget_answers_when_to_come_back(burst: int, per_second: float) -> None:
    budget = FailureBudget(burst, per_second, 10, memory=10**9)
    assert budget.admit("a", 0.0) == Admission()  # no failure yet: nothing to pay
    for _ in range(burst):
        budget.charge("a", 100.0)
    wait = budget.admit("a", 100.0).retry_after
    assert wait == pytest.approx(1 / per_second)
    assert budget.admit("a", 100.0 + wait * 0.99).refused
    assert budget.admit("a", 100.0 + wait * 1.01).paid
    assert budget.admit("b", 100.0) == Admission()  # another client is not affected


def test_refunds_restore_the_budget_and_failures_are_forgotten_after_the_memory() -> None:
    budget = FailureBudget(2, 1.0, 10, memory=30.0)
    budget.charge("a", 0.0)
    assert budget.admit("a", 0.0).paid and budget.tokens("a", 0.0) == 0.0
    budget.refund("a", 0.0)
    assert budget.tokens("a", 0.0) == 1.0
    budget.charge("a", 0.0)
    budget.charge("a", 0.0)  # charges stop at empty: no debt
    assert budget.tokens("a", 0.0) == 0.0 and budget.tokens("a", 1.0) == 1.0
    assert budget.admit("a", 29.0).paid  # still remembered: pays
    assert budget.admit("a", 30.0) == Admission() and len(budget) == 0


sightings = st.lists(st.tuples(st.floats(min_value=0, max_value=100), st.binary(min_size=1, max_size=2)))


@given(sightings)
def test_recent_credentials_are_bounded_and_expire(seen: list[tuple[float, bytes]]) -> None:
    recent = RecentCredentials(max_size=20, ttl=50.0)
    now = 0.0
    last: dict[bytes, float] = {}
    for dt, digest in seen:
        now += dt
        recent.remember(digest, now)
        last[digest] = now
        assert len(recent) <= 20
    for digest, at in last.items():
        if now - at >= 50.0:
            assert not recent.proven(digest, now)
    recent.forget(seen[-1][1] if seen else b"x")
    assert not seen or not recent.proven(seen[-1][1], now)


def test_credential_digests() -> None:
    assert credential_digest([None, ""]) is None
    assert credential_digest(["token", None]) == credential_digest(["token"])
    assert credential_digest(["token"]) != credential_digest(["token", "key"])
    assert credential_digest(["caf\udce9"]) is not None  # undecodable bytes hash, never fail


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # an untrusted peer cannot name its client
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client wrote is on the left
        ("10.1.2.3", "198.51.100.1, 10.9.9.9", "198.51.100.1"),  # through two trusted proxies
        ("10.1.2.3", "garbage, 10.9.9.9", "10.9.9.9"),
        ("10.1.2.3", "", "10.1.2.3"),
        ("::1", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
        (None, None, "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, client: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


@given(st.ip_addresses(v=6))
def test_one_ipv6_network_is_one_client(address: ipaddress.IPv6Address) -> None:
    key = client_key(str(address))
    if address.ipv4_mapped is None:
        assert ipaddress.ip_address(str(address)) in ipaddress.ip_network(key)
        neighbour = ipaddress.IPv6Address(int(address) ^ 0xFFFF)  # same /64
        assert client_key(str(neighbour)) == key
