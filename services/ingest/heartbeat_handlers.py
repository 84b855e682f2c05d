"""Heartbeat command handlers: devices and their tokens, beats and page visits; listed in ``HANDLERS``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest.context import Ingest, msg_id_for
from services.ingest.heartbeat import (
    DEVICE_SUBJECTS,
    DeviceRegistry,
    device_for_token,
    record_beat,
    record_page_visit,
    regenerate_token,
    register_device,
    valid_token_hash,
)
from services.ingest.idempotency import ADMIN, IdempotencyKey, idempotency_key
from services.ingest.rejected import Rejected
from shared.bus import DuplicateInFlight, Expectation, ExpectationFailed, ExpectationInFlight
from shared.commands import (
    Command,
    RecordBeat,
    RecordPageVisit,
    RegenerateDeviceToken,
    RegisterDevice,
    Reply,
)
from shared.events import (
    BeatRecorded,
    DeviceRegistered,
    DeviceTokenRegenerated,
    Event,
    InstallationSetUp,
    new_event_id,
    now,
)

INSTALLATION_SUBJECTS = "usagehub.events.installation.>"
DeviceEvent = DeviceRegistered | DeviceTokenRegenerated


def _devices_expectation(registry: DeviceRegistry) -> Expectation:
    return Expectation(DEVICE_SUBJECTS, registry.last_seq)


async def _append_device_event(
    ingest: Ingest,
    decide: Callable[[DeviceRegistry], DeviceEvent],
    msg_id: str,
    key: IdempotencyKey | None = None,
) -> tuple[DeviceEvent | Event, int]:
    event, appended = await ingest.change_registry(ingest.devices, decide, _devices_expectation, msg_id, key)
    return event, appended.seq


async def _new_token(ingest: Ingest, device_id: int, token_hash: str, request_id: str | None) -> Reply:
    """Give ``device_id`` the token the gateway made (only its hash is here); the old one stops working.

    Every regeneration is a new token: a retried one must never be collapsed into a lost one, so it
    gets a fresh message id, never the client's key.
    """
    cmd = RegenerateDeviceToken(device_id=device_id, token_hash=token_hash, request_id=request_id)
    event, seq = await _append_device_event(
        ingest,
        lambda registry: regenerate_token(cmd, registry, event_id=new_event_id(), at=now()),
        f"RegenerateDeviceToken:{new_event_id()}",
    )
    return _device_reply(ingest, event, seq)


def _device_reply(ingest: Ingest, event: Event, seq: int) -> Reply:
    assert isinstance(event, DeviceRegistered | DeviceTokenRegenerated)
    name = ingest.devices.state.names[event.device_id]
    # The gateway adds the plaintext token it made: it never crossed the bus.
    return Reply(status=200, seq=seq, result={"id": event.device_id, "name": name})


async def handle_register_device(ingest: Ingest, cmd: RegisterDevice) -> Reply:
    key = idempotency_key(cmd, ADMIN, "devices")
    earlier = await ingest.earlier_outcome(key)
    if isinstance(earlier, DeviceRegistered):
        # A retried registration: the first answer, and its token, may be lost. Same device, and the
        # token this retry brought replaces the first one.
        return await _new_token(ingest, earlier.device_id, cmd.token_hash, cmd.request_id)
    event, seq = await _append_device_event(
        ingest,
        lambda registry: register_device(cmd, registry, event_id=new_event_id(), at=now()),
        msg_id_for(cmd, key),
        key,
    )
    assert isinstance(event, DeviceRegistered)
    if event.token_hash != cmd.token_hash:  # a retry inside JetStream's duplicate window
        return await _new_token(ingest, event.device_id, cmd.token_hash, cmd.request_id)
    return _device_reply(ingest, event, seq)


async def handle_regenerate_token(ingest: Ingest, cmd: RegenerateDeviceToken) -> Reply:
    return await _new_token(ingest, cmd.device_id, cmd.token_hash, cmd.request_id)


async def _authenticated_device(ingest: Ingest, token_hash: str) -> int:
    """The device a token belongs to, looking at the stream once more before refusing (401): another
    replica may have issued the token a moment ago."""
    valid_token_hash(token_hash)
    try:
        return device_for_token(ingest.devices.state, token_hash)
    except Rejected:
        await ingest.devices.catch_up(ingest.js)
        return device_for_token(ingest.devices.state, token_hash)


async def handle_record_beat(ingest: Ingest, cmd: RecordBeat) -> Reply:
    device_id = await _authenticated_device(ingest, cmd.token_hash)
    key = idempotency_key(cmd, f"device:{device_id}", "beats")
    event: Event | None = await ingest.earlier_outcome(key)
    seq = 0
    if not isinstance(event, BeatRecorded):
        # The expectation on device events means a just-revoked token can never slip through.
        decided, appended = await ingest.decide_and_append(
            ingest.devices,
            lambda registry: record_beat(cmd, registry, event_id=new_event_id(), at=now()),
            _devices_expectation,
            msg_id_for(cmd, key),
            key=key,
            maybe_news=[401],
        )
        event, seq = await ingest.original(appended, decided, key), appended.seq
    assert isinstance(event, BeatRecorded)
    return Reply(status=200, seq=seq, result={"timestamp": int(event.occurred_at.timestamp())})


async def handle_record_page_visit(ingest: Ingest, cmd: RecordPageVisit) -> Reply:
    event = record_page_visit(cmd, event_id=new_event_id(), at=now())
    appended = await ingest.append(event, msg_id_for(cmd, None))
    return Reply(status=200, seq=appended.seq)


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    RegisterDevice: handle_register_device,
    RegenerateDeviceToken: handle_regenerate_token,
    RecordBeat: handle_record_beat,
    RecordPageVisit: handle_record_page_visit,
}


async def ensure_installation(ingest: Ingest) -> None:
    """Record the first set-up once, whichever replica gets there first."""
    event = InstallationSetUp(event_id=new_event_id(), occurred_at=now())
    for _ in range(100):
        try:
            await ingest.append(event, "InstallationSetUp", Expectation(INSTALLATION_SUBJECTS, 0))
        except (ExpectationInFlight, DuplicateInFlight):  # another replica's set-up is being stored
            await asyncio.sleep(0.1)
        except ExpectationFailed:  # set up before: uptime keeps counting from then
            return
        else:
            return
    raise TimeoutError("the installation set-up stayed in flight")
