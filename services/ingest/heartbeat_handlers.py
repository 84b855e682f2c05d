"""Heartbeat command handlers: devices and their tokens, beats and page visits; listed in ``HANDLERS``."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest.context import Ingest, msg_id_for
from services.ingest.heartbeat import (
    DEVICE_SUBJECTS,
    DeviceRegistry,
    record_beat,
    record_page_visit,
    regenerate_token,
    register_device,
)
from shared.bus import Expectation, ExpectationFailed
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
from shared.secrets import hash_token, new_token

INSTALLATION_SUBJECTS = "usagehub.events.installation.>"
DeviceEvent = DeviceRegistered | DeviceTokenRegenerated


def _devices_expectation(registry: DeviceRegistry) -> Expectation:
    return Expectation(DEVICE_SUBJECTS, registry.last_seq)


async def _issue_token(
    ingest: Ingest, decide: Callable[[DeviceRegistry, str], DeviceEvent], msg_id: str
) -> Reply:
    """Append a device event carrying a new token's hash; the plaintext token goes only to the caller."""
    token = new_token()
    async with ingest.devices.changes:
        event, appended = await ingest.decide_and_append(
            ingest.devices,
            lambda registry: decide(registry, hash_token(token)),
            _devices_expectation,
            msg_id,
            maybe_news=[404],
        )
        await ingest.devices.catch_up(ingest.js)
    if appended.duplicate:  # a retried registration: the first answer (and its token) may be lost
        original = await ingest.event_at(appended.seq)
        assert isinstance(original, DeviceRegistered)
        return await _reissue_token(ingest, original.device_id)
    name = ingest.devices.state.names[event.device_id]
    return Reply(status=200, seq=appended.seq, result={"id": event.device_id, "name": name, "token": token})


async def _reissue_token(ingest: Ingest, device_id: int) -> Reply:
    return await handle_regenerate_token(ingest, RegenerateDeviceToken(device_id=device_id))


async def handle_register_device(ingest: Ingest, cmd: RegisterDevice) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, DeviceRegistered):
        return await _reissue_token(ingest, earlier.device_id)
    return await _issue_token(
        ingest,
        lambda registry, token_hash: register_device(
            cmd, registry, token_hash, event_id=new_event_id(), at=now()
        ),
        msg_id_for(cmd),
    )


async def handle_regenerate_token(ingest: Ingest, cmd: RegenerateDeviceToken) -> Reply:
    return await _issue_token(
        ingest,
        lambda registry, token_hash: regenerate_token(
            cmd, registry, token_hash, event_id=new_event_id(), at=now()
        ),
        # Every regeneration is a new token: a retried one must not be collapsed into the lost one.
        f"RegenerateDeviceToken:{new_event_id()}",
    )


async def handle_record_beat(ingest: Ingest, cmd: RecordBeat) -> Reply:
    event: Event | None = await ingest.earlier_outcome(cmd.idempotency_key)
    seq = 0
    if not isinstance(event, BeatRecorded):
        # The expectation on device events means a just-revoked token can never slip through.
        decided, appended = await ingest.decide_and_append(
            ingest.devices,
            lambda registry: record_beat(cmd, registry, event_id=new_event_id(), at=now()),
            _devices_expectation,
            msg_id_for(cmd),
            maybe_news=[401],
        )
        event, seq = await ingest.original(appended, decided), appended.seq
    assert isinstance(event, BeatRecorded)
    return Reply(status=200, seq=seq, result={"timestamp": int(event.occurred_at.timestamp())})


async def handle_record_page_visit(ingest: Ingest, cmd: RecordPageVisit) -> Reply:
    event = record_page_visit(cmd, event_id=new_event_id(), at=now())
    appended = await ingest.append(event, msg_id_for(cmd))
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
    with contextlib.suppress(ExpectationFailed):  # set up before: uptime keeps counting from then
        await ingest.append(event, "InstallationSetUp", Expectation(INSTALLATION_SUBJECTS, 0))
