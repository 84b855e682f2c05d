"""Metering events: organisations, their API keys, principals and sessions, and counted API calls."""

from __future__ import annotations

from datetime import datetime

import msgspec

from shared.events.envelope import Event


class OrgCreated(Event, tag="OrgCreated", frozen=True):
    """An organisation, at the root of a tree or under ``parent_id``; its id and zone never change."""

    org_id: str
    name: str
    # IANA time zone: history buckets (hours, days) follow its local clock.
    time_zone: str
    parent_id: str | None = None


class ApiKeyIssued(Event, tag="ApiKeyIssued", frozen=True):
    """A key of ``org_id``; issued again under the same ``key_id`` when a retried issue replaces it."""

    key_id: str
    org_id: str
    # SHA-256 of the key: the plaintext never reaches the stream.
    key_hash: str
    principal_id: str | None = None
    name: str = ""


class ApiKeyRevoked(Event, tag="ApiKeyRevoked", frozen=True):
    key_id: str


class PrincipalAdded(Event, tag="PrincipalAdded", frozen=True):
    principal_id: str
    super_ops: bool = False


class SessionStarted(Event, tag="SessionStarted", frozen=True):
    """A session opened with a key; valid until ``expires_at`` (event time + its lifetime) or the key's
    revocation."""

    # SHA-256 of the session id: the plaintext exists only in the HTTP exchange.
    session_hash: str
    key_id: str
    org_id: str
    expires_at: datetime


class ApiCallCount(msgspec.Struct, frozen=True, kw_only=True):
    """``count`` calls of ``service`` by ``org_id`` in the quarter hour (UTC) that contains ``at``."""

    org_id: str
    service: str
    at: datetime
    count: int


class ApiCallsCounted(Event, tag="ApiCallsCounted", frozen=True):
    """API calls counted by a gateway (one flush of its tallies) or published by another service."""

    counts: tuple[ApiCallCount, ...]
    # "gateway", or the intake publisher that sent them.
    source: str = "gateway"


MeteringEvent = OrgCreated | ApiKeyIssued | ApiKeyRevoked | PrincipalAdded | SessionStarted | ApiCallsCounted

SUBJECTS: dict[type[Event], str] = {
    OrgCreated: "usagehub.events.metering.org_created",
    ApiKeyIssued: "usagehub.events.metering.key_issued",
    ApiKeyRevoked: "usagehub.events.metering.key_revoked",
    PrincipalAdded: "usagehub.events.metering.principal_added",
    SessionStarted: "usagehub.events.metering.session_started",
    ApiCallsCounted: "usagehub.events.metering.api_calls_counted",
}
