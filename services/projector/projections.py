"""Every projection: its name, the subjects it reads, the tables it owns and how it applies a batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext

from services.projector import api_calls, contributions, heartbeat, idempotency, links, media_usage, metering
from shared.db import Conn
from shared.events import AnyEvent

ApplyBatch = Callable[[Conn, list[tuple[int, AnyEvent]]], Awaitable[None]]
AfterCommit = Callable[[JetStreamContext, Conn], Awaitable[None]]

# Events per batch (a savepoint) while replaying: large, the replay being one transaction anyway.
REBUILD_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Projection:
    name: str
    filters: list[str]
    tables: tuple[str, ...]
    apply: ApplyBatch
    # What must follow a commit (publishing what the batch left to announce); also run when the
    # projection starts, for whatever a crash left between a commit and this.
    after_commit: AfterCommit | None = None
    # Events per batch of a rebuild: more where a batch's events share most of the rows they write.
    rebuild_batch: int = REBUILD_BATCH
    # Seconds a batch waits for more events after its first: for projections no write waits on, so
    # under load they commit (and fsync, and ack) a few times a second rather than once per handful.
    linger: float = 0.0


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection("heartbeat", heartbeat.FILTERS, heartbeat.TABLES, heartbeat.apply_heartbeat),
        Projection(
            "idempotency",
            idempotency.FILTERS,
            idempotency.TABLES,
            idempotency.apply_idempotency,
            # Ingest trusts JetStream's duplicate window for keys this projection has not recorded
            # yet (minutes), and no answer waits for it: a quarter of a second behind costs nothing.
            linger=idempotency.LINGER,
        ),
        Projection("links", links.FILTERS, links.TABLES, links.apply_links),
        Projection(
            "media_usage",
            media_usage.FILTERS,
            media_usage.TABLES,
            media_usage.apply_media_usage,
            media_usage.publish_notifications,
        ),
        Projection("metering", metering.FILTERS, metering.TABLES, metering.apply_metering),
        Projection(
            "api_calls",
            api_calls.FILTERS,
            api_calls.TABLES,
            api_calls.apply_api_calls,
            # Its many small events write few month rows, upserted once per batch.
            rebuild_batch=20_000,
        ),
        Projection(
            "contributions", contributions.FILTERS, contributions.TABLES, contributions.apply_contributions
        ),
    )
}
