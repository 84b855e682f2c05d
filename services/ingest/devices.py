"""Devices: the registry ingest decides against, folded from device events, and the decisions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from services.ingest.rejected import Rejected
from shared.commands import RegenerateDeviceToken, RegisterDevice
from shared.events import DeviceRegistered, DeviceTokenRegenerated, Event

MAX_NAME_LENGTH = 200
DEVICE_SUBJECTS = "usagehub.events.devices.>"


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


def valid_device_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise Rejected(400, "name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(400, f"name must be at most {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 32 for c in name):
        raise Rejected(400, "name must not contain control characters")
    return name


def register_device(
    cmd: RegisterDevice, registry: DeviceRegistry, token_hash: str, *, event_id: str, at: datetime
) -> DeviceRegistered:
    return DeviceRegistered(
        event_id=event_id,
        occurred_at=at,
        idempotency_key=cmd.idempotency_key,
        request_id=cmd.request_id,
        device_id=registry.next_id,
        name=valid_device_name(cmd.name),
        token_hash=token_hash,
    )


def regenerate_token(
    cmd: RegenerateDeviceToken, registry: DeviceRegistry, token_hash: str, *, event_id: str, at: datetime
) -> DeviceTokenRegenerated:
    if cmd.device_id not in registry.names:
        raise Rejected(404, f"device {cmd.device_id} does not exist")
    return DeviceTokenRegenerated(
        event_id=event_id,
        occurred_at=at,
        idempotency_key=cmd.idempotency_key,
        request_id=cmd.request_id,
        device_id=cmd.device_id,
        token_hash=token_hash,
    )
