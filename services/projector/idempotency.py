"""Idempotency keys kept past JetStream's 2-minute duplicate window, so late retries are still one write."""

from __future__ import annotations

from shared.db import Conn
from shared.events import AnyEvent

FILTERS = ["usagehub.events.>"]
TABLES = ("idempotency_keys",)
LINGER = 0.25


def keyed_events(events: list[tuple[int, AnyEvent]]) -> list[tuple[str, int, str]]:
    """(key, seq, type) for every event that carries a client key; the first event of a key wins."""
    seen: dict[str, tuple[str, int, str]] = {}
    for seq, event in events:
        if event.idempotency_key is not None and event.idempotency_key not in seen:
            seen[event.idempotency_key] = (event.idempotency_key, seq, type(event).__name__)
    return list(seen.values())


async def apply_idempotency(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    rows = keyed_events(events)
    if rows:
        # One statement for the batch (executemany is a round of work per row).
        await conn.execute(
            "INSERT INTO idempotency_keys (idempotency_key, stream_seq, event_type)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )
