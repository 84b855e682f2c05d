"""Commands: orders sent to the ingest service (by the gateway over NATS request/reply, or by
other services through the intake stream), and the one reply shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Command(msgspec.Struct, tag_field="command", kw_only=True, frozen=True):
    # The client's Idempotency-Key (ingest scopes it by command), or None: every command is a new write.
    idempotency_key: str | None = None
    # For tracing only (clients may choose it): it never deduplicates anything.
    request_id: str | None = None


class RegisterDevice(Command, tag="RegisterDevice", frozen=True):
    name: str


class RegenerateDeviceToken(Command, tag="RegenerateDeviceToken", frozen=True):
    device_id: int


class RecordBeat(Command, tag="RecordBeat", frozen=True):
    # Plaintext only in transit: ingest hashes it and never stores or logs it.
    token: str


class RecordPageVisit(Command, tag="RecordPageVisit", frozen=True):
    path: str


class CreateLink(Command, tag="CreateLink", frozen=True):
    name: str
    url: str
    description: str = ""


class UpdateLink(Command, tag="UpdateLink", frozen=True):
    link_id: int
    # None leaves a field as it is.
    name: str | None = None
    url: str | None = None
    description: str | None = None


class DeleteLink(Command, tag="DeleteLink", frozen=True):
    link_id: int


class RecordLinkUsage(Command, tag="RecordLinkUsage", frozen=True):
    link_id: int
    user: str
    # A client's own time of the use; ingest accepts it only within a bounded skew of its clock.
    used_at: datetime | None = None


AnyCommand = (
    RegisterDevice
    | RegenerateDeviceToken
    | RecordBeat
    | RecordPageVisit
    | CreateLink
    | UpdateLink
    | DeleteLink
    | RecordLinkUsage
)


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ingest answers: ``status`` is the HTTP status the gateway should use."""

    status: int
    error: str | None = None
    # The stream sequence of the last event this command appended (read-your-writes waits on it).
    seq: int = 0
    result: dict[str, Any] = {}


command_decoder = msgspec.json.Decoder(AnyCommand)
reply_decoder = msgspec.json.Decoder(Reply)
encoder = msgspec.json.Encoder()
