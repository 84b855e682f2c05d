"""Failed authentications, limited per client: pure, bounded bookkeeping (no I/O, time passed in).

A client (an address) that has failed to authenticate has a budget of failures, a token bucket:
``burst`` tokens refilled at ``per_second``. From its first failure until it has failed no more for
``memory`` seconds, each of its requests that presents a credential the gateway has not seen
succeed lately pays a token before it is handled, and gets it back unless it is answered 401 or
403; with no token left it is answered 429 at once, before any work. Paying up front is what bounds
the work a flood can cause however many requests it keeps in flight: after the first failures
come back, at most ``burst`` plus the refill reach a route. A client that has not failed lately
pays nothing (so a fleet behind one address may start up all at once), and a credential that
succeeded lately (``RecentCredentials``) never pays, so a device behind the same address as an
attacker keeps working.

Both structures are bounded: the least recently used entries are forgotten first. Forgetting a
client gives it a fresh start, the worst an attacker with more addresses than that can achieve.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from shared.settings import IPNetwork, Settings

# The headers that carry a credential, in every API (admin key, device token, org key, session id).
CREDENTIAL_HEADERS = ("Authorization", "X-Api-Key", "X-Session-Id")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last computed
    failed_at: float


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request with an unproven credential may do: go ahead (having ``paid`` a token or,
    for a client with no recent failure, not), or wait ``retry_after`` seconds (refused)."""

    paid: bool = False
    retry_after: float = 0.0

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


class FailureBudget:
    """A token bucket per client that failed lately, for at most ``max_clients`` clients."""

    def __init__(self, burst: int, per_second: float, max_clients: int, memory: float) -> None:
        self.burst = float(burst)
        self.per_second = per_second
        self.max_clients = max_clients
        self.memory = memory
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, client: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is not None and now - bucket.failed_at >= self.memory:
            del self._buckets[client]
            return None
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.per_second)
            bucket.at = max(bucket.at, now)
        return bucket

    def tokens(self, client: str, now: float) -> float:
        bucket = self._bucket(client, now)
        return self.burst if bucket is None else bucket.tokens

    def admit(self, client: str, now: float) -> Admission:
        bucket = self._bucket(client, now)
        if bucket is None:
            return Admission()
        if bucket.tokens < 1.0:
            return Admission(retry_after=(1.0 - bucket.tokens) / self.per_second)
        bucket.tokens -= 1.0
        return Admission(paid=True)

    def charge(self, client: str, now: float) -> None:
        """A failure that did not pay up front."""
        bucket = self._bucket(client, now)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self.burst, now, now)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        bucket.failed_at = now
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def paid_failure(self, client: str, now: float) -> None:
        """A request that paid was a failure: the token stays spent."""
        bucket = self._bucket(client, now)
        if bucket is not None:
            bucket.failed_at = now
            self._buckets.move_to_end(client)

    def refund(self, client: str, now: float) -> None:
        """A request that paid was not a failed authentication."""
        bucket = self._bucket(client, now)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)


class RecentCredentials:
    """SHA-256 digests of credentials that were answered 2xx, each remembered for ``ttl`` seconds."""

    def __init__(self, max_size: int, ttl: float) -> None:
        self.max_size = max_size
        self.ttl = ttl
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def proven(self, digest: bytes, now: float) -> bool:
        expiry = self._expiry.get(digest)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[digest]
            return False
        return True

    def remember(self, digest: bytes, now: float) -> None:
        self._expiry[digest] = now + self.ttl
        self._expiry.move_to_end(digest)
        while len(self._expiry) > self.max_size:
            self._expiry.popitem(last=False)

    def forget(self, digest: bytes) -> None:
        self._expiry.pop(digest, None)


def credential_digest(values: Iterable[str | None]) -> bytes | None:
    """One digest of the credential headers' values, or None when none is present.

    Header values are kept as received (undecodable bytes included), so hashing never fails.
    """
    present = [v.encode("utf-8", "surrogateescape") for v in values if v]
    if not present:
        return None
    return hashlib.sha256(b"\0".join(present)).digest()


# Every request asks, and a gateway sees the same few addresses (its clients, its proxies) again and
# again: parsing each anew was a twentieth of the gateway's CPU on a beat.
@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The budget's key for an address: itself for IPv4, its /64 for IPv6 (one subscriber's
    network, which a single host can fill with addresses)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, proxies: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[IPNetwork, ...]) -> str:
    """Who the client is: the peer, unless the peer is a trusted proxy; then the nearest address in
    ``X-Forwarded-For`` (read from the right, where each proxy appends) that is not a trusted proxy.
    A client cannot choose its key: what it writes into the header sits left of what proxies add.
    """
    address = peer or "unknown"
    if not forwarded_for or not _trusted(address, proxies):
        return client_key(address)
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: stop at the last proxy that we trust
        address = hop
        if not _trusted(hop, proxies):
            break
    return client_key(address)


# How many proven credentials a gateway remembers, and for how long after their last success.
REMEMBERED_CREDENTIALS = 10_000
REMEMBER_FOR = 3600.0
# How long a client's failures are remembered after its last one (its requests pay meanwhile).
FAILURE_MEMORY = 600.0


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """One gateway process's failure budgets and proven credentials (shared by all its requests)."""

    budget: FailureBudget
    recent: RecentCredentials
    proxies: tuple[IPNetwork, ...]

    @classmethod
    def of(cls, settings: Settings) -> AuthLimits:
        burst, per_second = settings.auth_failure_burst, settings.auth_failures_per_minute / 60
        return cls(
            FailureBudget(burst, per_second, settings.auth_tracked_clients, FAILURE_MEMORY),
            RecentCredentials(REMEMBERED_CREDENTIALS, REMEMBER_FOR),
            settings.trusted_proxy_networks,
        )
