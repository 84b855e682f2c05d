"""The envelope every command shares, and the one reply shape ingest answers with."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Command(msgspec.Struct, tag_field="command", kw_only=True, frozen=True):
    # Fields the server makes (a new token's hash), left out of a request's fingerprint: a retry
    # carries a different one each time and is still the same request.
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset()

    # The client's Idempotency-Key as given; ingest scopes it by origin, command, caller and target.
    idempotency_key: str | None = None
    # For tracing only (clients may choose it): it never deduplicates anything.
    request_id: str | None = None
    # Where the command came from: "http" (the gateway), or "intake:<publisher>" set by ingest for
    # messages other services publish; intake payloads can never set it.
    origin: str = "http"


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ingest answers: ``status`` is the HTTP status the gateway should use."""

    status: int
    error: str | None = None
    # The stream sequence of the last event this command appended (read-your-writes waits on it).
    seq: int = 0
    result: dict[str, Any] = {}
