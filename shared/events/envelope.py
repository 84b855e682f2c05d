"""The envelope every event shares: one tagged base struct, so one decoder reads every domain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Common envelope: who accepted it, when, and which command produced it."""

    event_id: str
    version: int = 1
    # The time the ingest service accepted the command; projections read time only from here.
    occurred_at: datetime
    # The client's idempotency key, scoped by command, caller and target, when it gave one.
    idempotency_key: str | None = None
    # SHA-256 of the request that key first made: reusing the key for another request is refused.
    request_fingerprint: str | None = None
    request_id: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex
