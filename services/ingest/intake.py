"""Where commands come in: NATS request/reply from the gateway (a queue group, so replicas share the
load) and the durable intake stream other services publish to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.ingest.context import Ingest
from services.ingest.handlers import handle
from shared import metrics
from shared.bus import (
    BATCH,
    COMMANDS_PREFIX,
    INGEST_QUEUE,
    INTAKE_STREAM,
    INTAKE_SUBJECTS,
    MAX_COMMANDS_PER_BATCH,
    PING,
    is_inbox,
    parse_intake_subject,
)
from shared.commands import (
    AnyCommand,
    RecordBeat,
    RecordDigitalUsages,
    RecordDownloadUsage,
    RecordFrontUsage,
    RecordLinkUsage,
    RecordPrintUsages,
    RecordSyndicationUsage,
    Reply,
    command_decoder,
    encoder,
)
from shared.commands.contributions import RecordBlueprint, RecordEmail, RecordMark
from shared.commands.metering import RecordApiCall
from shared.logging import get_logger, request_id_var

log = get_logger(__name__)

# usagehub.ingest.<kind>[.<publisher>] (shared.bus.intake_subject): the payload other services
# publish, decoded as this command.
INTAKE_KINDS: dict[str, type[msgspec.Struct]] = {
    "beats": RecordBeat,
    "link_usage": RecordLinkUsage,
    "media_digital": RecordDigitalUsages,
    "media_print": RecordPrintUsages,
    "media_syndication": RecordSyndicationUsage,
    "media_front": RecordFrontUsage,
    "media_download": RecordDownloadUsage,
    "metering": RecordApiCall,
    "contribution_marks": RecordMark,
    "contribution_emails": RecordEmail,
    "contribution_blueprints": RecordBlueprint,
}
INTAKE_DURABLE = "ingest-intake"
# Who published a message on usagehub.ingest.<kind> with no publisher token.
GENERIC_PUBLISHER = "services"
# Fields never copied into a rejection record.
_SECRET_FIELDS = frozenset({"token", "token_hash", "authorization", "api_key", "key", "password", "secret"})
# Fields only usagehub sets: a payload that sets one is refused, never obeyed.
_INTERNAL_FIELDS = frozenset({"idempotency_key", "origin", "command"})
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_REASON = 2000
MAX_SUBJECT = 256
MAX_REJECTION_BYTES = 64 * 1024
EVENT_LOG_UNAVAILABLE = "the event log did not acknowledge this write; retry with the same Idempotency-Key"


def answer_within(command_timeout: float) -> float:
    """How long ingest may take over a command: less than the gateway waits (``command_timeout``),
    so when the event log cannot store, the client hears 503 from ingest rather than a timeout."""
    return command_timeout * 0.8


async def _answer(ingest: Ingest, msg: Msg, within: float) -> None:
    if not is_inbox(msg.reply):
        # Ingest may publish events: an answer steered onto a stream's subject would be appended.
        log.warning("command without an inbox to answer to, ignored", reply=msg.reply[:100])
        return
    if msg.subject == COMMANDS_PREFIX + PING:
        answer = encoder.encode(Reply(status=200))
    elif msg.subject == COMMANDS_PREFIX + BATCH:
        answer = await _answer_batch(ingest, msg.data, within)
    else:
        answer = encoder.encode(await _reply_to(ingest, msg.data, within))
    with contextlib.suppress(Exception):
        await msg.respond(answer)


async def _answer_batch(ingest: Ingest, data: bytes, within: float) -> bytes:
    """The replies to a batch of commands, in its order: each command is decided on its own, so one
    refusal, or one that cannot be read, is that command's answer alone."""
    try:
        commands = _batch_decoder.decode(data)
    except msgspec.DecodeError as exc:
        return encoder.encode(Reply(status=400, error=f"invalid command batch: {exc}"))
    if len(commands) > MAX_COMMANDS_PER_BATCH:
        return encoder.encode(
            Reply(status=400, error=f"a command batch holds at most {MAX_COMMANDS_PER_BATCH} commands")
        )
    # Concurrently: appends that are decided together share one batch of the appender.
    replies = await asyncio.gather(*(_reply_to(ingest, bytes(c), within) for c in commands))
    return encoder.encode(replies)


_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])


async def _reply_to(ingest: Ingest, data: bytes, within: float) -> Reply:
    try:
        cmd = command_decoder.decode(data)
    except msgspec.DecodeError as exc:
        return Reply(status=400, error=f"invalid command: {exc}")
    token = request_id_var.set(cmd.request_id)
    try:
        async with asyncio.timeout(within):
            return await handle(ingest, cmd)
    except (NatsError, TimeoutError, ConnectionError) as exc:
        # No stream leader (no quorum), no connection, or no acknowledgement in time: not
        # acknowledged, though an append that timed out may still be stored, hence the same key.
        log.warning("event log unavailable", command=type(cmd).__name__, error=repr(exc))
        return Reply(status=503, error=EVENT_LOG_UNAVAILABLE)
    except Exception:
        log.exception("command failed", command=type(cmd).__name__)
        return Reply(status=503, error=EVENT_LOG_UNAVAILABLE)
    finally:
        request_id_var.reset(token)


async def serve_commands(nc: NATS, ingest: Ingest, within: float) -> Any:
    """Answer every command concurrently (concurrent appends are what fills a shared batch), each
    within ``within`` seconds."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_command(msg: Msg) -> None:
        task = asyncio.create_task(_answer(ingest, msg, within))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(COMMANDS_PREFIX + "*", queue=INGEST_QUEUE, cb=on_command)


def _redacted(payload: bytes) -> dict[str, Any]:
    """What a rejection record keeps of a payload: a JSON object with its secrets redacted, or for
    anything else only its size and hash (it may be a bare secret)."""
    try:
        data = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        return {"payload": {k: ("[redacted]" if k.lower() in _SECRET_FIELDS else v) for k, v in data.items()}}
    return _digest(payload)


def decode_intake(kind: str, payload: bytes, msg_id: str, publisher: str = GENERIC_PUBLISHER) -> AnyCommand:
    """Turn an intake message into a command; raises ValueError with the reason when invalid.

    The message id is the publisher's idempotency key; the origin names the publisher. Neither, nor
    any other internal field, can be set by the payload.
    """
    cls = INTAKE_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown intake kind {kind!r}; known: {sorted(INTAKE_KINDS)}")
    try:
        fields = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("payload must be a JSON object")
    internal = sorted(_INTERNAL_FIELDS & fields.keys())
    if internal:
        raise ValueError(
            f"{', '.join(internal)}: set by usagehub, not by publishers (the message id is the key)"
        )
    if "token" in fields:
        raise ValueError("token: send token_hash (the SHA-256 of the token, 64 hex digits), never the token")
    request_id = fields.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID.match(request_id)):
        raise ValueError("request_id must be 1 to 128 of A-Z a-z 0-9 . _ -")
    command = {**fields, "command": cls.__name__, "idempotency_key": msg_id, "origin": f"intake:{publisher}"}
    try:
        cmd: AnyCommand = msgspec.convert(command, AnyCommand)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    return cmd


def _kind_label(kind: str) -> str:
    # Metric labels and rejected subjects come from a fixed set, whatever subjects are published.
    return kind if kind in INTAKE_KINDS else "unknown"


async def _reject(js: JetStreamContext, kind: str, msg: Msg, reason: str, status: int) -> None:
    label = _kind_label(kind)
    record = {
        "kind": label,
        "intake_subject": msg.subject[:MAX_SUBJECT],
        "status": status,
        "reason": reason[:MAX_REASON],
    }
    record.update(_redacted(msg.data))
    data = msgspec.json.encode(record)
    if len(data) > MAX_REJECTION_BYTES:  # the record of a huge payload keeps its hash, not its text
        record.pop("payload", None)
        data = msgspec.json.encode({**record, **_digest(msg.data)})
    await js.publish(f"usagehub.rejected.{label}", data)
    metrics.INTAKE_REJECTED.labels(label).inc()
    log.warning("intake message rejected", kind=label, reason=reason[:MAX_REASON])


def _digest(payload: bytes) -> dict[str, Any]:
    return {"payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}


async def _take(ingest: Ingest, js: JetStreamContext, msg: Msg) -> None:
    headers = msg.headers or {}
    msg_id = headers.get("Nats-Msg-Id") or f"seq:{msg.metadata.sequence.stream}"
    kind = ""
    try:
        kind, publisher = parse_intake_subject(msg.subject)
        cmd = decode_intake(kind, msg.data, msg_id, publisher or GENERIC_PUBLISHER)
    except ValueError as exc:
        await _reject(js, kind, msg, str(exc), 400)
        await msg.ack()
        return
    try:
        reply = await handle(ingest, cmd)
    except Exception:
        log.exception("intake message failed, will be redelivered", kind=_kind_label(kind))
        await msg.nak(delay=1.0)
        return
    if reply.status >= 500:
        await msg.nak(delay=1.0)
        return
    if reply.status >= 400:
        await _reject(js, kind, msg, reply.error or "rejected", reply.status)
    await msg.ack()


async def _take_safely(ingest: Ingest, js: JetStreamContext, msg: Msg) -> None:
    # One bad message must never stop the intake of every other one.
    try:
        await _take(ingest, js, msg)
    except Exception:
        log.exception("intake message could not be handled, will be redelivered")
        with contextlib.suppress(Exception):
            await msg.nak(delay=5.0)


async def consume_intake(ingest: Ingest, js: JetStreamContext, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await _consume_intake(ingest, js, stop)
        except NatsError as exc:
            # The consumer has no leader yet (a cluster starting or electing one) or the connection
            # is gone: the messages wait in the stream, so try again shortly.
            log.warning("intake unavailable, trying again", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def _consume_intake(ingest: Ingest, js: JetStreamContext, stop: asyncio.Event) -> None:
    config = ConsumerConfig(
        durable_name=INTAKE_DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_deliver=-1
    )
    sub = await js.pull_subscribe(
        INTAKE_SUBJECTS, durable=INTAKE_DURABLE, stream=INTAKE_STREAM, config=config
    )
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except TimeoutError:
                continue
            await asyncio.gather(*(_take_safely(ingest, js, m) for m in msgs))
    finally:
        # A pull request left open would hold up the connection's drain at shutdown.
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
