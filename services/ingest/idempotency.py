"""Idempotency keys scoped to their caller and target, with the first request's fingerprint.

A client's key means "this request again" only for the same caller, the same target and the same
command: the scoped key is what JetStream deduplicates on and what the key projection records. The
fingerprint tells a true retry from a different request that reuses a key (answered 422).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from services.ingest.rejected import Rejected
from shared.commands import Command
from shared.events import Event

# Envelope fields that never make two requests different.
_NOT_THE_REQUEST = frozenset({"idempotency_key", "request_id", "origin"})
_encoder = msgspec.json.Encoder()
# The principal of every command the admin secret authorizes.
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    # "<origin>|<command>|<principal>|<target>|<client key>": the append's Nats-Msg-Id.
    scoped: str
    # SHA-256 of the request without its key, request id, origin and server-made fields.
    fingerprint: str


def fingerprint(cmd: Command) -> str:
    left_out = _NOT_THE_REQUEST | type(cmd).UNFINGERPRINTED
    fields = {k: v for k, v in msgspec.structs.asdict(cmd).items() if k not in left_out}
    return hashlib.sha256(_encoder.encode([type(cmd).__name__, fields])).hexdigest()


def idempotency_key(cmd: Command, principal: str, target: str) -> IdempotencyKey | None:
    """The key of ``cmd`` as ``principal`` acting on ``target``, or None when the client gave none.

    Call it only after the caller is authenticated and the target is known to exist: a replay must
    never answer a caller who could not have made the first request.
    """
    if cmd.idempotency_key is None:
        return None
    scoped = "|".join((cmd.origin, type(cmd).__name__, principal, target, cmd.idempotency_key))
    return IdempotencyKey(scoped, fingerprint(cmd))


def same_request(key: IdempotencyKey, earlier: Event) -> None:
    """Refuse (422) a key reused with a different request; events from before fingerprints pass."""
    if earlier.request_fingerprint is not None and earlier.request_fingerprint != key.fingerprint:
        raise Rejected(
            422,
            "this Idempotency-Key was already used with a different request; use a new key for a new request",
        )
