"""The metering read model: orgs (with their chain of ancestors), principals, API keys and sessions.

``fold_metering`` is pure and uses only event time; ``apply_metering`` loads the rows a batch touches,
folds the batch and writes back what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.db import Conn
from shared.events import AnyEvent
from shared.events.metering import ApiKeyIssued, ApiKeyRevoked, OrgCreated, PrincipalAdded, SessionStarted

FILTERS = [
    "usagehub.events.metering.org_created",
    "usagehub.events.metering.key_issued",
    "usagehub.events.metering.key_revoked",
    "usagehub.events.metering.principal_added",
    "usagehub.events.metering.session_started",
]
TABLES = (
    "metering_orgs",
    "metering_principals",
    "metering_keys",
    "metering_sessions",
    "metering_session_clock",
)
# Sessions are pruned only once they expired this long before the latest session start. Starts come
# from every ingest replica's clock: a replica running behind the others must not see its fresh
# sessions pruned (or never stored) before the gateway could check them.
SESSION_PRUNE_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class OrgRow:
    org_id: str
    name: str
    time_zone: str
    parent_id: str | None
    ancestors: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    principal_id: str
    super_ops: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    org_id: str
    principal_id: str | None
    name: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_hash: str
    key_id: str
    org_id: str
    started_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MeteringRows:
    orgs: Mapping[str, OrgRow] = field(default_factory=dict)
    principals: Mapping[str, PrincipalRow] = field(default_factory=dict)
    keys: Mapping[str, KeyRow] = field(default_factory=dict)
    sessions: Mapping[str, SessionRow] = field(default_factory=dict)
    # The latest session start so far: sessions that expired SESSION_PRUNE_GRACE before it are gone.
    clock: datetime | None = None

    @property
    def prune_before(self) -> datetime | None:
        return None if self.clock is None else self.clock - SESSION_PRUNE_GRACE


def fold_metering(rows: MeteringRows, event: AnyEvent) -> MeteringRows:
    match event:
        case OrgCreated(org_id=org_id, name=name, time_zone=zone, parent_id=parent_id, occurred_at=at):
            if org_id in rows.orgs:  # ingest never creates an id twice; if it did, the first would stand
                return rows
            parent = rows.orgs.get(parent_id) if parent_id is not None else None
            chain = (*parent.ancestors, org_id) if parent is not None else (org_id,)
            org = OrgRow(org_id, name, zone, parent_id, chain, at)
            return replace(rows, orgs={**rows.orgs, org_id: org})
        case PrincipalAdded(principal_id=principal_id, super_ops=super_ops, occurred_at=at):
            if principal_id in rows.principals:
                return rows
            principal = PrincipalRow(principal_id, super_ops, at)
            return replace(rows, principals={**rows.principals, principal_id: principal})
        case ApiKeyIssued(key_id=key_id, occurred_at=at):
            earlier = rows.keys.get(key_id)
            key = KeyRow(
                key_id,
                event.org_id,
                event.principal_id,
                event.name,
                event.key_hash,
                # Issued again (a retried issue): the same key with a new secret, created when first issued.
                created_at=at if earlier is None else earlier.created_at,
                revoked_at=None if earlier is None else earlier.revoked_at,
            )
            return replace(rows, keys={**rows.keys, key_id: key})
        case ApiKeyRevoked(key_id=key_id, occurred_at=at):
            live = rows.keys.get(key_id)
            if live is None or live.revoked_at is not None:
                return rows
            return replace(rows, keys={**rows.keys, key_id: replace(live, revoked_at=at)})
        case SessionStarted(occurred_at=at):
            clock = at if rows.clock is None else max(rows.clock, at)
            horizon = clock - SESSION_PRUNE_GRACE
            sessions = {h: s for h, s in rows.sessions.items() if s.expires_at >= horizon}
            if event.expires_at >= horizon:
                sessions[event.session_hash] = SessionRow(
                    event.session_hash, event.key_id, event.org_id, at, event.expires_at
                )
            return replace(rows, sessions=sessions, clock=clock)
    return rows


def fold_metering_events(rows: MeteringRows, events: Iterable[AnyEvent]) -> MeteringRows:
    for event in events:
        rows = fold_metering(rows, event)
    return rows


async def _load(conn: Conn, events: list[AnyEvent]) -> MeteringRows:
    org_ids = sorted(
        {e.org_id for e in events if isinstance(e, OrgCreated)}
        | {e.parent_id for e in events if isinstance(e, OrgCreated) and e.parent_id is not None}
    )
    principal_ids = sorted({e.principal_id for e in events if isinstance(e, PrincipalAdded)})
    key_ids = sorted({e.key_id for e in events if isinstance(e, ApiKeyIssued | ApiKeyRevoked)})
    orgs = await conn.fetch(
        "SELECT org_id, name, time_zone, parent_id, ancestors, created_at FROM metering_orgs"
        " WHERE org_id = ANY($1::text[])",
        org_ids,
    )
    principals = await conn.fetch(
        "SELECT principal_id, super_ops, created_at FROM metering_principals"
        " WHERE principal_id = ANY($1::text[])",
        principal_ids,
    )
    keys = await conn.fetch(
        "SELECT key_id, org_id, principal_id, name, key_hash, created_at, revoked_at FROM metering_keys"
        " WHERE key_id = ANY($1::text[])",
        key_ids,
    )
    return MeteringRows(
        orgs={r["org_id"]: OrgRow(**{**dict(r), "ancestors": tuple(r["ancestors"])}) for r in orgs},
        principals={r["principal_id"]: PrincipalRow(**dict(r)) for r in principals},
        keys={r["key_id"]: KeyRow(**dict(r)) for r in keys},
        # Sessions are only ever added (or pruned by expiry below), so none need loading.
        clock=await conn.fetchval("SELECT latest FROM metering_session_clock"),
    )


async def apply_metering(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    batch = [e for _, e in events]
    before = await _load(conn, batch)
    after = fold_metering_events(before, batch)

    orgs = [o for i, o in after.orgs.items() if i not in before.orgs]
    if orgs:
        await conn.executemany(
            "INSERT INTO metering_orgs (org_id, name, time_zone, parent_id, ancestors, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(o.org_id, o.name, o.time_zone, o.parent_id, list(o.ancestors), o.created_at) for o in orgs],
        )
    principals = [p for i, p in after.principals.items() if i not in before.principals]
    if principals:
        await conn.executemany(
            "INSERT INTO metering_principals (principal_id, super_ops, created_at) VALUES ($1, $2, $3)",
            [(p.principal_id, p.super_ops, p.created_at) for p in principals],
        )
    keys = [k for i, k in after.keys.items() if before.keys.get(i) != k]
    if keys:
        await conn.executemany(
            "INSERT INTO metering_keys (key_id, org_id, principal_id, name, key_hash, created_at, revoked_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO UPDATE SET"
            " key_hash = EXCLUDED.key_hash, principal_id = EXCLUDED.principal_id, name = EXCLUDED.name,"
            " revoked_at = EXCLUDED.revoked_at",
            [
                (k.key_id, k.org_id, k.principal_id, k.name, k.key_hash, k.created_at, k.revoked_at)
                for k in keys
            ],
        )
    if after.clock is not None and after.clock != before.clock:
        await conn.execute("DELETE FROM metering_sessions WHERE expires_at < $1", after.prune_before)
        await conn.execute(
            "INSERT INTO metering_session_clock (id, latest) VALUES (true, $1)"
            " ON CONFLICT (id) DO UPDATE SET latest = EXCLUDED.latest",
            after.clock,
        )
    if after.sessions:
        await conn.executemany(
            "INSERT INTO metering_sessions (session_hash, key_id, org_id, started_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_hash) DO NOTHING",
            [
                (s.session_hash, s.key_id, s.org_id, s.started_at, s.expires_at)
                for s in after.sessions.values()
            ],
        )
