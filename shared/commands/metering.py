"""Metering commands: organisations, API keys, principals and sessions, and counting API calls."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from shared.commands.envelope import Command


class CreateOrg(Command, tag="CreateOrg", frozen=True):
    org_id: str
    name: str
    time_zone: str
    parent_id: str | None = None


class IssueApiKey(Command, tag="IssueApiKey", frozen=True):
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"key_hash"})

    org_id: str
    # The key is made by the gateway (or the CLI), which sends only its hash.
    key_hash: str
    principal_id: str | None = None
    name: str = ""


class RevokeApiKey(Command, tag="RevokeApiKey", frozen=True):
    key_id: str


class AddPrincipal(Command, tag="AddPrincipal", frozen=True):
    principal_id: str
    super_ops: bool = False


class StartSession(Command, tag="StartSession", frozen=True):
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"key_hash", "session_hash"})

    # Hashes only: the key was hashed at the edge, and the session id is made there.
    key_hash: str
    session_hash: str
    # Seconds the session lasts from the moment ingest accepts it.
    ttl: int = 3600


class ApiCalls(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    service: str
    at: datetime
    count: int


class CountApiCalls(Command, tag="CountApiCalls", frozen=True):
    """One flush of a gateway's tallies: calls per org, service and quarter hour."""

    counts: tuple[ApiCalls, ...]


class RecordApiCall(Command, tag="RecordApiCall", frozen=True):
    """What another service publishes on ``usagehub.ingest.metering[.<publisher>]``: ``id`` is the
    publisher's own, and a repeat of it (by the same publisher) is the same calls."""

    org: str
    service: str
    time: datetime
    id: str
    count: int = 1


MeteringCommand = (
    CreateOrg | IssueApiKey | RevokeApiKey | AddPrincipal | StartSession | CountApiCalls | RecordApiCall
)
