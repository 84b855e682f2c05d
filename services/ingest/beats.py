"""Beats and page visits: who may beat, and what a beat or a visit records."""

from __future__ import annotations

import hmac
from datetime import datetime

from services.ingest.devices import DeviceRegistry
from services.ingest.rejected import Rejected
from shared.commands import RecordBeat, RecordPageVisit
from shared.events import BeatRecorded, PageVisited
from shared.secrets import hash_token

MAX_PATH_LENGTH = 200


def device_for_token(registry: DeviceRegistry, token: str) -> int:
    token_hash = hash_token(token)
    device_id = registry.by_token_hash.get(token_hash)
    # The dict lookup is on a hash of a 256-bit secret; the final comparison is constant-time anyway.
    if device_id is None or not hmac.compare_digest(registry.token_hashes[device_id], token_hash):
        raise Rejected(401, "invalid or missing device token")
    return device_id


def record_beat(cmd: RecordBeat, registry: DeviceRegistry, *, event_id: str, at: datetime) -> BeatRecorded:
    return BeatRecorded(
        event_id=event_id,
        occurred_at=at,
        idempotency_key=cmd.idempotency_key,
        request_id=cmd.request_id,
        device_id=device_for_token(registry, cmd.token),
    )


def record_page_visit(cmd: RecordPageVisit, *, event_id: str, at: datetime) -> PageVisited:
    if not cmd.path.startswith("/") or len(cmd.path) > MAX_PATH_LENGTH:
        raise Rejected(400, "path must be an absolute path of at most 200 characters")
    return PageVisited(
        event_id=event_id,
        occurred_at=at,
        idempotency_key=cmd.idempotency_key,
        request_id=cmd.request_id,
        path=cmd.path,
    )
