"""Command handlers: one plain async function per command, listed in ``HANDLERS``.

Each handler decides with a pure function from ``devices``/``beats``, appends, and builds the reply.
A decision that raced with another replica (the stream moved on) is reloaded and decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from nats.js import JetStreamContext

from services.ingest.beats import record_beat, record_page_visit
from services.ingest.devices import (
    DEVICE_SUBJECTS,
    DeviceRegistry,
    Rejected,
    fold_device_registry,
    regenerate_token,
    register_device,
)
from services.ingest.link_handlers import (
    handle_create_link,
    handle_delete_link,
    handle_record_link_usage,
    handle_update_link,
)
from services.ingest.links import LinkRegistry
from shared import metrics
from shared.bus import Appended, Appender, Expectation, ExpectationFailed, get_event_data, read_stream
from shared.commands import (
    AnyCommand,
    Command,
    CreateLink,
    DeleteLink,
    RecordBeat,
    RecordLinkUsage,
    RecordPageVisit,
    RegenerateDeviceToken,
    RegisterDevice,
    Reply,
    UpdateLink,
)
from shared.events import (
    BeatRecorded,
    DeviceRegistered,
    Event,
    InstallationSetUp,
    decode_event,
    new_event_id,
    now,
)
from shared.logging import get_logger
from shared.secrets import hash_token, new_token

log = get_logger(__name__)

MAX_RETRIES = 20
INSTALLATION_SUBJECTS = "usagehub.events.installation.>"


@dataclass
class Ingest:
    """What handlers need: the appender, JetStream for reads, Postgres for old keys, device state."""

    appender: Appender
    js: JetStreamContext
    pool: asyncpg.Pool
    devices: DeviceRegistry = field(default_factory=DeviceRegistry)
    # Device changes are rare: within one process they take turns, so only replicas ever race.
    device_changes: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The link registry, caught up lazily (services.ingest.link_handlers); changes take turns likewise.
    links: LinkRegistry = field(default_factory=LinkRegistry)
    link_changes: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up_devices(self) -> None:
        registry = self.devices
        async for batch in read_stream(self.js, [DEVICE_SUBJECTS], after=registry.last_seq):
            for d in batch:
                registry = fold_device_registry(registry, decode_event(d.data), d.seq)
        # Two concurrent catch-ups may finish out of order: keep the one that saw more.
        if registry.last_seq > self.devices.last_seq:
            self.devices = registry

    async def append(self, event: Event, msg_id: str, expect: Expectation | None = None) -> Appended:
        appended = await self.appender.append(event, msg_id, expect)
        if not appended.duplicate:
            metrics.EVENTS_APPENDED.labels(type(event).__name__).inc()
        return appended

    async def earlier_outcome(self, key: str | None) -> Event | None:
        """The event an idempotency key produced before JetStream's duplicate window, if any."""
        if key is None:
            return None
        seq = await self.pool.fetchval(
            "SELECT stream_seq FROM idempotency_keys WHERE idempotency_key = $1", key
        )
        if seq is None:
            return None
        return decode_event(await get_event_data(self.js, int(seq)))

    def devices_expectation(self) -> Expectation:
        return Expectation(DEVICE_SUBJECTS, self.devices.last_seq)


def msg_id_for(cmd: Command) -> str:
    # Scoped by the command, so one client key used on two routes means two different writes.
    return f"{type(cmd).__name__}:{cmd.idempotency_key or cmd.request_id or new_event_id()}"


def scoped_key(cmd: Command) -> Command:
    return (
        cmd if cmd.idempotency_key is None else _with_key(cmd, f"{type(cmd).__name__}:{cmd.idempotency_key}")
    )


def _with_key(cmd: Command, key: str) -> Command:
    return msgspec.structs.replace(cmd, idempotency_key=key)


async def _device_event_with_fresh_token(
    ingest: Ingest, decide: Callable[[DeviceRegistry, str], Event], msg_id: str
) -> tuple[Event, Appended, str]:
    """Decide and append a device event carrying a new token's hash, retrying lost races."""
    token = new_token()
    async with ingest.device_changes:
        for _ in range(MAX_RETRIES):
            event = decide(ingest.devices, hash_token(token))
            try:
                appended = await ingest.append(event, msg_id, ingest.devices_expectation())
            except ExpectationFailed:
                await ingest.catch_up_devices()
                continue
            await ingest.catch_up_devices()
            return event, appended, token
    raise Rejected(503, "too much contention on devices, try again")


def _token_reply(ingest: Ingest, device_id: int, appended: Appended, token: str) -> Reply:
    return Reply(
        status=200,
        seq=appended.seq,
        result={"id": device_id, "name": ingest.devices.names[device_id], "token": token},
    )


async def _reissue_token(ingest: Ingest, cmd: Command, device_id: int) -> Reply:
    """A retried token-issuing command: the first answer (and its token) may be lost, so issue a new one."""
    regen = RegenerateDeviceToken(device_id=device_id, request_id=cmd.request_id)
    return await handle_regenerate_token(ingest, regen)


async def handle_register_device(ingest: Ingest, cmd: RegisterDevice) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, DeviceRegistered):
        return await _reissue_token(ingest, cmd, earlier.device_id)
    event, appended, token = await _device_event_with_fresh_token(
        ingest,
        lambda registry, token_hash: register_device(
            cmd, registry, token_hash, event_id=new_event_id(), at=now()
        ),
        msg_id_for(cmd),
    )
    if appended.duplicate:
        original = decode_event(await get_event_data(ingest.js, appended.seq))
        assert isinstance(original, DeviceRegistered)
        return await _reissue_token(ingest, cmd, original.device_id)
    assert isinstance(event, DeviceRegistered)
    return _token_reply(ingest, event.device_id, appended, token)


async def handle_regenerate_token(ingest: Ingest, cmd: RegenerateDeviceToken) -> Reply:
    if cmd.device_id not in ingest.devices.names:
        await ingest.catch_up_devices()
    _, appended, token = await _device_event_with_fresh_token(
        ingest,
        lambda registry, token_hash: regenerate_token(
            cmd, registry, token_hash, event_id=new_event_id(), at=now()
        ),
        # Every regeneration is a new token: a retried one must not be collapsed into the lost one.
        f"RegenerateDeviceToken:{new_event_id()}",
    )
    return _token_reply(ingest, cmd.device_id, appended, token)


async def handle_record_beat(ingest: Ingest, cmd: RecordBeat) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, BeatRecorded):
        return Reply(status=200, seq=0, result={"timestamp": int(earlier.occurred_at.timestamp())})
    msg_id = msg_id_for(cmd)
    for attempt in range(MAX_RETRIES):
        try:
            event = record_beat(cmd, ingest.devices, event_id=new_event_id(), at=now())
        except Rejected:
            if attempt > 0:
                raise
            # Maybe another replica registered this device or regenerated its token just now.
            await ingest.catch_up_devices()
            continue
        try:
            appended = await ingest.append(event, msg_id, ingest.devices_expectation())
        except ExpectationFailed:
            await ingest.catch_up_devices()
            continue
        if appended.duplicate:
            original = decode_event(await get_event_data(ingest.js, appended.seq))
            event = original if isinstance(original, BeatRecorded) else event
        return Reply(status=200, seq=appended.seq, result={"timestamp": int(event.occurred_at.timestamp())})
    raise Rejected(503, "too much contention on devices, try again")


async def handle_record_page_visit(ingest: Ingest, cmd: RecordPageVisit) -> Reply:
    event = record_page_visit(cmd, event_id=new_event_id(), at=now())
    appended = await ingest.append(event, msg_id_for(cmd))
    return Reply(status=200, seq=appended.seq)


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    RegisterDevice: handle_register_device,
    RegenerateDeviceToken: handle_regenerate_token,
    RecordBeat: handle_record_beat,
    RecordPageVisit: handle_record_page_visit,
    CreateLink: handle_create_link,
    UpdateLink: handle_update_link,
    DeleteLink: handle_delete_link,
    RecordLinkUsage: handle_record_link_usage,
}


async def handle(ingest: Ingest, cmd: AnyCommand) -> Reply:
    """Dispatch one command; domain refusals become replies, anything else propagates."""
    cmd = scoped_key(cmd)  # type: ignore[assignment]
    try:
        reply = await HANDLERS[type(cmd)](ingest, cmd)
    except Rejected as exc:
        reply = Reply(status=exc.status, error=exc.message)
    metrics.COMMANDS.labels(type(cmd).__name__, str(reply.status)).inc()
    return reply


async def ensure_installation(ingest: Ingest) -> None:
    """Record the first set-up once, whichever replica gets there first."""
    event = InstallationSetUp(event_id=new_event_id(), occurred_at=now())
    with contextlib.suppress(ExpectationFailed):  # set up before: uptime keeps counting from then
        await ingest.append(event, "InstallationSetUp", Expectation(INSTALLATION_SUBJECTS, 0))
