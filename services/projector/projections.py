"""Every projection: its name, the subjects it reads, the tables it owns and how it applies a batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.projector import contributions, heartbeat, idempotency, links
from shared.db import Conn
from shared.events import AnyEvent

ApplyBatch = Callable[[Conn, list[tuple[int, AnyEvent]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Projection:
    name: str
    filters: list[str]
    tables: tuple[str, ...]
    apply: ApplyBatch


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection("heartbeat", heartbeat.FILTERS, heartbeat.TABLES, heartbeat.apply_heartbeat),
        Projection("idempotency", idempotency.FILTERS, idempotency.TABLES, idempotency.apply_idempotency),
        Projection("links", links.FILTERS, links.TABLES, links.apply_links),
        Projection(
            "contributions", contributions.FILTERS, contributions.TABLES, contributions.apply_contributions
        ),
    )
}
