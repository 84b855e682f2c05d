"""Both metering projections against Postgres with constructed events: any batching gives the same
tables byte for byte, and a redelivered batch changes nothing."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.projector.api_calls import by_month, tally_calls
from services.projector.consumer import apply_batch, decode_deliveries
from services.projector.projections import PROJECTIONS
from shared.bus import Delivery
from shared.db import migrate, migrations
from shared.events import AnyEvent, encode_event, subject_of
from shared.events.metering import (
    ApiCallCount,
    ApiCallsCounted,
    ApiKeyIssued,
    ApiKeyRevoked,
    OrgCreated,
    PrincipalAdded,
    SessionStarted,
)
from tests.integration.helpers import dump_tables

T0 = datetime(2024, 3, 9, 12, 0, tzinfo=UTC)
# Each table of the two projections, ordered by its primary key.
METERING_TABLES = {
    "metering_orgs": "org_id",
    "metering_principals": "principal_id",
    "metering_keys": "key_id",
    "metering_sessions": "session_hash",
    "metering_session_clock": "id",
}
API_CALL_TABLES = {
    "api_call_orgs": "org_id",
    "api_call_counts": "org_id, bucket, service",
    "api_call_months": "zone, org_id, month, service",
    "api_call_subtree_months": "org_id, month, service",
}


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await migrate(c)
    yield c
    await c.close()


def history(seed: int) -> list[AnyEvent]:
    """Orgs in three zones, keys issued, replaced and revoked, sessions, and calls over DST."""
    rnd = random.Random(seed)
    events: list[AnyEvent] = [
        OrgCreated(event_id="o1", occurred_at=T0, org_id="acme", name="Acme", time_zone="America/New_York"),
        OrgCreated(
            event_id="o2", occurred_at=T0, org_id="eu", name="EU", time_zone="Europe/Paris", parent_id="acme"
        ),
        OrgCreated(
            event_id="o3", occurred_at=T0, org_id="in", name="IN", time_zone="Asia/Kolkata", parent_id="eu"
        ),
        OrgCreated(event_id="o4", occurred_at=T0, org_id="solo", name="Solo", time_zone="UTC"),
        PrincipalAdded(event_id="p1", occurred_at=T0, principal_id="ops", super_ops=True),
        ApiKeyIssued(
            event_id="k1", occurred_at=T0, key_id="k1", org_id="acme", key_hash="a" * 64, principal_id="ops"
        ),
        ApiKeyIssued(event_id="k2", occurred_at=T0, key_id="k2", org_id="in", key_hash="b" * 64),
        ApiKeyIssued(event_id="k3", occurred_at=T0, key_id="k2", org_id="in", key_hash="c" * 64),
        ApiKeyRevoked(event_id="r1", occurred_at=T0 + timedelta(hours=1), key_id="k1"),
    ]
    for i in range(400):
        # From February (month rows of two months), over New York's spring-forward night.
        at = T0 + timedelta(minutes=rnd.randint(-10 * 24 * 60, 3 * 24 * 60))
        if i % 40 == 0:
            events.append(
                SessionStarted(
                    event_id=f"s{i}",
                    occurred_at=at,
                    session_hash=f"{i:064d}",
                    key_id="k2",
                    org_id="in",
                    expires_at=at + timedelta(seconds=rnd.choice([60, 3600, 86_400])),
                )
            )
        counts = tuple(
            ApiCallCount(
                org_id=rnd.choice(["acme", "eu", "in", "solo", "gone"]),
                service=rnd.choice(["tr50", "heartbeat", "lighthouse"]),
                at=at + timedelta(seconds=rnd.randint(0, 900)),
                count=rnd.randint(1, 50),
            )
            for _ in range(rnd.randint(1, 4))
        )
        events.append(ApiCallsCounted(event_id=f"c{i}", occurred_at=at, counts=counts))
    return events


def deliveries(events: Sequence[AnyEvent], first_seq: int = 1) -> list[Delivery]:
    return [
        Delivery(first_seq + i, encode_event(e), subject_of(e), 1, None)  # type: ignore[arg-type]
        for i, e in enumerate(events)
    ]


async def project(
    conn: asyncpg.Connection, name: str, events: Sequence[AnyEvent], sizes: Sequence[int]
) -> None:
    """Apply ``events`` (numbered from 1) in batches of the given sizes, as the consumer does."""
    projection = PROJECTIONS[name]
    mine = [
        (seq, e)
        for seq, e in enumerate(events, start=1)
        if any(subject_of(e).startswith(f.rstrip(">")) for f in projection.filters)
    ]
    i = 0
    for size in [*sizes, len(mine)]:
        part = mine[i : i + size]
        if part:
            batch = [Delivery(seq, encode_event(e), subject_of(e), 1, None) for seq, e in part]  # type: ignore[arg-type]
            await apply_batch(conn, projection, batch)
        i += size


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE " + ", ".join([*METERING_TABLES, *API_CALL_TABLES]))
    await conn.execute("DELETE FROM projection_checkpoints")


async def test_any_batching_gives_identical_tables(conn: asyncpg.Connection) -> None:
    events = history(7)
    rnd = random.Random(3)
    expected: dict[str, bytes] = {}
    for attempt in range(4):
        sizes = [] if attempt == 0 else [rnd.randint(1, 60) for _ in range(30)]
        await reset(conn)
        await project(conn, "metering", events, sizes)
        await project(conn, "api_calls", events, sizes)
        tables = await dump_tables(conn, {**METERING_TABLES, **API_CALL_TABLES})
        if attempt == 0:
            expected = tables
        assert tables == expected, f"batch sizes {sizes}"
    assert expected["api_call_counts"].count(b"\n") > 100
    assert b"gone" not in expected["api_call_counts"]  # calls of an org never created are left out
    # Every call counted: by quarter hour, and again by day at every ancestor of its org.
    total = sum(
        c.count for e in events if isinstance(e, ApiCallsCounted) for c in e.counts if c.org_id != "gone"
    )
    assert await conn.fetchval("SELECT sum(calls) FROM api_call_counts") == total
    roots = await conn.fetchval(
        "SELECT sum(c) FROM api_call_subtree_months, unnest(calls) c WHERE org_id IN ('acme', 'solo')"
    )
    assert roots == total
    ny_days = await conn.fetchval(
        "SELECT sum(c) FROM api_call_months, unnest(calls) c WHERE zone = 'America/New_York'"
    )
    acme_tree = await conn.fetchval(
        "SELECT sum(calls) FROM api_call_counts WHERE org_id IN ('acme', 'eu', 'in')"
    )
    assert ny_days == acme_tree
    keys = await conn.fetch(
        "SELECT key_id, key_hash, revoked_at IS NOT NULL AS revoked FROM metering_keys ORDER BY 1"
    )
    assert [tuple(k) for k in keys] == [("k1", "a" * 64, True), ("k2", "c" * 64, False)]
    ancestors = await conn.fetchval("SELECT ancestors FROM metering_orgs WHERE org_id = 'in'")
    assert ancestors == ["acme", "eu", "in"]


@pytest.mark.parametrize("ahead", [False, True], ids=["decoded-in-the-batch", "decoded-ahead"])
async def test_a_redelivered_batch_changes_nothing(conn: asyncpg.Connection, ahead: bool) -> None:
    """Also when the batch comes decoded (a rebuild's read ahead): what is at or below the checkpoint
    is left out all the same."""
    events = history(11)
    calls = [e for e in events if isinstance(e, OrgCreated | ApiCallsCounted)]
    batch = deliveries(calls)

    async def apply(part: list[Delivery]) -> None:
        await apply_batch(conn, PROJECTIONS["api_calls"], part, decode_deliveries(part) if ahead else None)

    await apply(batch[:150])
    before = await dump_tables(conn, API_CALL_TABLES)
    await apply(batch[:150])  # all at or below the checkpoint
    await apply(batch[100:150])
    assert await dump_tables(conn, API_CALL_TABLES) == before
    await apply(batch[100:])  # half old, half new
    once = await dump_tables(conn, API_CALL_TABLES)
    await reset(conn)
    await apply(batch)
    assert await dump_tables(conn, API_CALL_TABLES) == once


async def test_an_existing_databases_day_rows_become_month_rows(database_url: str) -> None:
    """Migration 0008 on a database that kept day rows: the month rows it writes are those the
    projector would have written, so no rebuild is needed."""
    c = await asyncpg.connect(database_url)
    try:
        for version, _, sql in migrations():
            if version < 8:
                await c.execute(sql)
        tally = tally_calls({}, history(5))
        await c.executemany(
            "INSERT INTO api_call_days (zone, org_id, day, service, calls) VALUES ($1, $2, $3, $4, $5)",
            [(*k, n) for k, n in tally.days.items()],
        )
        await c.executemany(
            "INSERT INTO api_call_subtree_days (org_id, day, service, calls) VALUES ($1, $2, $3, $4)",
            [(*k, n) for k, n in tally.subtree_days.items()],
        )
        [(_, _, upgrade)] = [m for m in migrations() if m[0] == 8]
        await c.execute(upgrade)
        months = await c.fetch("SELECT zone, org_id, month, service, calls FROM api_call_months")
        assert {(r[0], r[1], r[2], r[3]): r[4] for r in months} == by_month(tally.days, 2)
        subtree = await c.fetch("SELECT org_id, month, service, calls FROM api_call_subtree_months")
        assert {(r[0], r[1], r[2]): r[3] for r in subtree} == by_month(tally.subtree_days, 1)
        assert len({r["month"] for r in subtree}) == 2  # February and March
        assert await c.fetchval("SELECT to_regclass('api_call_days')") is None
    finally:
        await c.close()
