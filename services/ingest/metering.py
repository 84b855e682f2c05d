"""Metering decisions: the registry of orgs, keys and principals folded from the stream, and what each
command records. Pure functions, no I/O."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

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
from shared.events.metering import (
    ApiCallCount,
    ApiCallsCounted,
    ApiKeyIssued,
    ApiKeyRevoked,
    OrgCreated,
    PrincipalAdded,
    SessionStarted,
)

# The registry reads only these: sessions and counted calls would make every catch-up read them all.
REGISTRY_SUBJECTS = [
    "usagehub.events.metering.org_created",
    "usagehub.events.metering.key_issued",
    "usagehub.events.metering.key_revoked",
    "usagehub.events.metering.principal_added",
]
ORG_CREATED_SUBJECT = "usagehub.events.metering.org_created"
PRINCIPAL_ADDED_SUBJECT = "usagehub.events.metering.principal_added"

MAX_NAME_LENGTH = 200
# Every org in a tree adds its calls to each of its ancestors' totals: the depth bounds that work.
MAX_DEPTH = 8
MAX_COUNT = 1_000_000_000
# A gateway flush carries at most this many (org, service, quarter hour) counts.
MAX_COUNTS_PER_COMMAND = 5000
MIN_SESSION_TTL = 1
MAX_SESSION_TTL = 86_400
# How far from the ingest's clock a counted call's time may be.
MAX_CALL_AGE = timedelta(days=30)
MAX_CALL_AHEAD = timedelta(minutes=5)

_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_CALLER_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$")


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    time_zone: str
    parent_id: str | None
    depth: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    org_id: str
    key_hash: str
    principal_id: str | None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class MeteringRegistry:
    orgs: Mapping[str, Org] = field(default_factory=dict)
    keys: Mapping[str, ApiKey] = field(default_factory=dict)
    by_key_hash: Mapping[str, str] = field(default_factory=dict)
    # principal id -> holds the super-ops role
    principals: Mapping[str, bool] = field(default_factory=dict)
    # Sequences of the last registry event, and of the last one on each subject an append expects on.
    last_seq: int = 0
    last_org_seq: int = 0
    last_principal_seq: int = 0


def fold_metering_registry(registry: MeteringRegistry, event: Event, seq: int) -> MeteringRegistry:
    match event:
        case OrgCreated(org_id=org_id, name=name, time_zone=zone, parent_id=parent_id):
            parent = registry.orgs.get(parent_id) if parent_id is not None else None
            org = Org(org_id, name, zone, parent_id, 1 if parent is None else parent.depth + 1)
            return replace(registry, orgs={**registry.orgs, org_id: org}, last_seq=seq, last_org_seq=seq)
        case ApiKeyIssued(key_id=key_id, org_id=org_id, key_hash=key_hash, principal_id=principal_id):
            by_hash = dict(registry.by_key_hash)
            earlier = registry.keys.get(key_id)
            if earlier is not None:  # issued again: the earlier secret stops working
                by_hash.pop(earlier.key_hash, None)
            by_hash[key_hash] = key_id
            key = ApiKey(key_id, org_id, key_hash, principal_id, earlier.revoked if earlier else False)
            return replace(registry, keys={**registry.keys, key_id: key}, by_key_hash=by_hash, last_seq=seq)
        case ApiKeyRevoked(key_id=key_id):
            revoked = registry.keys.get(key_id)
            if revoked is None:
                return replace(registry, last_seq=seq)
            keys = {**registry.keys, key_id: replace(revoked, revoked=True)}
            return replace(registry, keys=keys, last_seq=seq)
        case PrincipalAdded(principal_id=principal_id, super_ops=super_ops):
            return replace(
                registry,
                principals={**registry.principals, principal_id: super_ops},
                last_seq=seq,
                last_principal_seq=seq,
            )
    return registry


def skip_metering_message(registry: MeteringRegistry, subject: str, seq: int) -> MeteringRegistry:
    """A message on a registry subject that is no event: only its position counts."""
    return replace(
        registry,
        last_seq=seq,
        last_org_seq=seq if subject == ORG_CREATED_SUBJECT else registry.last_org_seq,
        last_principal_seq=seq if subject == PRINCIPAL_ADDED_SUBJECT else registry.last_principal_seq,
    )


# --- validation -------------------------------------------------------------------------------


def _no_control_characters(value: str, what: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Rejected(400, f"{what} must not contain control characters")


def valid_org_id(org_id: str, what: str = "org id") -> str:
    if not _ORG_ID.match(org_id):
        raise Rejected(
            400,
            f"{what} must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        )
    return org_id


def valid_principal_id(principal_id: str) -> str:
    if not _PRINCIPAL_ID.match(principal_id):
        raise Rejected(
            400,
            "principal id must be 1 to 128 letters, digits or . _ @ + -, starting with a letter or digit",
        )
    return principal_id


def valid_name(name: str, what: str = "name", *, required: bool = True) -> str:
    if required and not name.strip():
        raise Rejected(400, f"{what} must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(400, f"{what} must be at most {MAX_NAME_LENGTH} characters")
    _no_control_characters(name, what)
    return name


def valid_time_zone(name: str) -> str:
    """An IANA zone name every usagehub process can load (so not the system-only posix/ or right/)."""
    problem = f"time_zone {name!r} is not an IANA time zone name (e.g. Europe/Paris, America/New_York, UTC)"
    system_only = name.startswith(("posix/", "right/")) or name == "localtime"
    if len(name) > 64 or not _ZONE.match(name) or system_only:
        raise Rejected(400, problem)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise Rejected(400, problem) from None
    return name


def valid_hash(value: str, what: str) -> str:
    if not _HASH.match(value):
        raise Rejected(400, f"{what} must be a SHA-256 in lowercase hex")
    return value


def valid_service(service: str) -> str:
    if not _SERVICE.match(service):
        raise Rejected(
            400, "service must be 1 to 40 lowercase letters, digits or '-', starting with a letter"
        )
    return service


def valid_count(count: int) -> int:
    if not 1 <= count <= MAX_COUNT:
        raise Rejected(400, f"count must be an integer from 1 to {MAX_COUNT}")
    return count


def valid_call_time(at: datetime, now: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise Rejected(400, "time must carry a UTC offset (e.g. 2024-03-10T06:30:00Z)")
    at = at.astimezone(UTC)
    if at < now - MAX_CALL_AGE:
        raise Rejected(
            400, f"time {at.isoformat()} is more than {MAX_CALL_AGE.days} days in the past; not accepted"
        )
    if at > now + MAX_CALL_AHEAD:
        raise Rejected(
            400,
            f"time {at.isoformat()} is more than {MAX_CALL_AHEAD.total_seconds():.0f} s in the future;"
            " not accepted",
        )
    return at


def existing_org(registry: MeteringRegistry, org_id: str) -> Org:
    org = registry.orgs.get(org_id)
    if org is None:
        raise Rejected(404, f"org {org_id} does not exist")
    return org


def live_key(registry: MeteringRegistry, key_hash: str) -> ApiKey:
    key_id = registry.by_key_hash.get(key_hash)
    key = registry.keys.get(key_id) if key_id is not None else None
    if key is None or key.revoked:
        raise Rejected(401, "invalid or revoked API key")
    return key


# --- decisions --------------------------------------------------------------------------------


def create_org(cmd: CreateOrg, registry: MeteringRegistry, *, event_id: str, at: datetime) -> OrgCreated:
    org_id = valid_org_id(cmd.org_id)
    if cmd.parent_id is not None:
        parent = existing_org(registry, valid_org_id(cmd.parent_id, "parent"))
        if parent.depth >= MAX_DEPTH:
            raise Rejected(400, f"org {parent.org_id} is {MAX_DEPTH} levels deep: it cannot have sub-orgs")
    if org_id in registry.orgs:
        raise Rejected(409, f"org {org_id} already exists")
    return OrgCreated(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        org_id=org_id,
        name=valid_name(cmd.name),
        time_zone=valid_time_zone(cmd.time_zone),
        parent_id=cmd.parent_id,
    )


def issue_api_key(
    cmd: IssueApiKey, registry: MeteringRegistry, *, key_id: str, event_id: str, at: datetime
) -> ApiKeyIssued:
    existing_org(registry, cmd.org_id)
    earlier = registry.keys.get(key_id)
    if earlier is not None and earlier.revoked:
        raise Rejected(409, f"API key {key_id} was revoked")
    if cmd.principal_id is not None and cmd.principal_id not in registry.principals:
        raise Rejected(404, f"principal {cmd.principal_id} does not exist")
    return ApiKeyIssued(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        key_id=key_id,
        org_id=cmd.org_id,
        key_hash=valid_hash(cmd.key_hash, "key_hash"),
        principal_id=cmd.principal_id,
        name=valid_name(cmd.name, "key name", required=False),
    )


def revoke_api_key(
    cmd: RevokeApiKey, registry: MeteringRegistry, *, event_id: str, at: datetime
) -> ApiKeyRevoked | None:
    """The revocation, or ``None`` when the key is revoked already (revoking is safe to retry)."""
    key = registry.keys.get(cmd.key_id)
    if key is None:
        raise Rejected(404, f"API key {cmd.key_id} does not exist")
    if key.revoked:
        return None
    return ApiKeyRevoked(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        key_id=cmd.key_id,
    )


def add_principal(
    cmd: AddPrincipal, registry: MeteringRegistry, *, event_id: str, at: datetime
) -> PrincipalAdded:
    principal_id = valid_principal_id(cmd.principal_id)
    if principal_id in registry.principals:
        raise Rejected(409, f"principal {principal_id} already exists")
    return PrincipalAdded(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        principal_id=principal_id,
        super_ops=cmd.super_ops,
    )


def start_session(
    cmd: StartSession, registry: MeteringRegistry, *, event_id: str, at: datetime
) -> SessionStarted:
    key = live_key(registry, cmd.key_hash)
    if not MIN_SESSION_TTL <= cmd.ttl <= MAX_SESSION_TTL:
        raise Rejected(400, f"ttl must be from {MIN_SESSION_TTL} to {MAX_SESSION_TTL} seconds")
    return SessionStarted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        session_hash=valid_hash(cmd.session_hash, "session_hash"),
        key_id=key.key_id,
        org_id=key.org_id,
        # From the event's own time, so every reader agrees when the session ends.
        expires_at=at + timedelta(seconds=cmd.ttl),
    )


def _counted(registry: MeteringRegistry, calls: Iterable[ApiCalls], at: datetime) -> tuple[ApiCallCount, ...]:
    calls = list(calls)
    for c in calls:  # every org first: an unknown org is 404 whatever else is wrong
        existing_org(registry, c.org_id)
    return tuple(
        ApiCallCount(
            org_id=c.org_id,
            service=valid_service(c.service),
            at=valid_call_time(c.at, at),
            count=valid_count(c.count),
        )
        for c in calls
    )


def count_api_calls(
    cmd: CountApiCalls, registry: MeteringRegistry, *, event_id: str, at: datetime
) -> ApiCallsCounted:
    if not 1 <= len(cmd.counts) <= MAX_COUNTS_PER_COMMAND:
        raise Rejected(400, f"counts must hold 1 to {MAX_COUNTS_PER_COMMAND} entries")
    return ApiCallsCounted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        counts=_counted(registry, cmd.counts, at),
        source="gateway",
    )


def valid_caller_id(caller_id: str) -> str:
    if not _CALLER_ID.match(caller_id):
        raise Rejected(400, "id must be 1 to 200 printable ASCII characters")
    return caller_id


def record_api_call(
    cmd: RecordApiCall, registry: MeteringRegistry, *, source: str, event_id: str, at: datetime
) -> ApiCallsCounted:
    """Calls another service published; ``id`` (checked here) is what makes a repeat the same calls."""
    calls = ApiCalls(org_id=cmd.org, service=cmd.service, at=cmd.time, count=cmd.count)
    counts = _counted(registry, [calls], at)
    valid_caller_id(cmd.id)
    return ApiCallsCounted(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        counts=counts,
        source=source,
    )
