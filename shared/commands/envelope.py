"""The envelope every command shares, and the one reply shape ingest answers with."""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, tag_field="command", kw_only=True, frozen=True):
    # The client's Idempotency-Key as given; ingest scopes it by command, caller and target.
    idempotency_key: str | None = None
    # For tracing only (clients may choose it): it never deduplicates anything.
    request_id: str | None = None


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ingest answers: ``status`` is the HTTP status the gateway should use."""

    status: int
    error: str | None = None
    # The stream sequence of the last event this command appended (read-your-writes waits on it).
    seq: int = 0
    result: dict[str, Any] = {}
