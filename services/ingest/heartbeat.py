"""Heartbeat decisions: the device registry folded from device events, who may beat, and what a
beat or a page visit records. Pure functions, no I/O."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.ingest.rejected import Rejected
from shared.commands import RecordBeat, RecordPageVisit, RegenerateDeviceToken, RegisterDevice
from shared.events import BeatRecorded, DeviceRegistered, DeviceTokenRegenerated, Event, PageVisited

MAX_NAME_LENGTH = 200
DEVICE_SUBJECTS = "usagehub.events.devices.>"
MAX_PATH_LENGTH = 200


@dataclass(frozen=True, slots=True)
class DeviceRegistry:
    names: dict[int, str] = field(default_factory=dict)
    token_hashes: dict[int, str] = field(default_factory=dict)
    by_token_hash: dict[str, int] = field(default_factory=dict)
    # Sequence of the last device event folded in: appends expect the stream to agree.
    last_seq: int = 0

    @property
    def next_id(self) -> int:
        return len(self.names)


def fold_device_registry(registry: DeviceRegistry, event: Event, seq: int) -> DeviceRegistry:
    match event:
        case DeviceRegistered(device_id=device_id, name=name, token_hash=token_hash):
            return replace(
                registry,
                names={**registry.names, device_id: name},
                token_hashes={**registry.token_hashes, device_id: token_hash},
                by_token_hash={**registry.by_token_hash, token_hash: device_id},
                last_seq=seq,
            )
        case DeviceTokenRegenerated(device_id=device_id, token_hash=token_hash):
            by_hash = dict(registry.by_token_hash)
            by_hash.pop(registry.token_hashes.get(device_id, ""), None)
            by_hash[token_hash] = device_id
            return replace(
                registry,
                token_hashes={**registry.token_hashes, device_id: token_hash},
                by_token_hash=by_hash,
                last_seq=seq,
            )
    return registry


def skip_device_message(registry: DeviceRegistry, subject: str, seq: int) -> DeviceRegistry:
    """A message on a device subject that is no event: only its position counts."""
    return replace(registry, last_seq=seq)


def valid_device_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise Rejected(400, "name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(400, f"name must be at most {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 32 for c in name):
        raise Rejected(400, "name must not contain control characters")
    return name


def register_device(
    cmd: RegisterDevice, registry: DeviceRegistry, *, event_id: str, at: datetime
) -> DeviceRegistered:
    return DeviceRegistered(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        device_id=registry.next_id,
        name=valid_device_name(cmd.name),
        token_hash=valid_token_hash(cmd.token_hash),
    )


def regenerate_token(
    cmd: RegenerateDeviceToken, registry: DeviceRegistry, *, event_id: str, at: datetime
) -> DeviceTokenRegenerated:
    if cmd.device_id not in registry.names:
        raise Rejected(404, f"device {cmd.device_id} does not exist")
    return DeviceTokenRegenerated(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        device_id=cmd.device_id,
        token_hash=valid_token_hash(cmd.token_hash),
    )


def valid_token_hash(token_hash: str) -> str:
    if len(token_hash) != 64 or not all(c in "0123456789abcdef" for c in token_hash):
        raise Rejected(400, "token_hash must be the SHA-256 of the token as 64 lowercase hex digits")
    return token_hash


def device_for_token(registry: DeviceRegistry, token_hash: str) -> int:
    """The device whose current token hashes to ``token_hash``; 401 for anything else."""
    device_id = registry.by_token_hash.get(token_hash)
    # The dict lookup is on a hash of a 256-bit secret; the final comparison is constant-time anyway.
    if device_id is None or not hmac.compare_digest(registry.token_hashes[device_id], token_hash):
        raise Rejected(401, "invalid or missing device token")
    return device_id


def record_beat(cmd: RecordBeat, registry: DeviceRegistry, *, event_id: str, at: datetime) -> BeatRecorded:
    return BeatRecorded(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        device_id=device_for_token(registry, cmd.token_hash),
    )


def record_page_visit(cmd: RecordPageVisit, *, event_id: str, at: datetime) -> PageVisited:
    if not cmd.path.startswith("/") or len(cmd.path) > MAX_PATH_LENGTH:
        raise Rejected(400, "path must be an absolute path of at most 200 characters")
    return PageVisited(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        path=cmd.path,
    )
