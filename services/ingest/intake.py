"""Where commands come in: NATS request/reply from the gateway (a queue group, so replicas share the
load) and the durable intake stream other services publish to."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.ingest.context import Ingest
from services.ingest.handlers import handle
from shared import metrics
from shared.bus import COMMANDS_PREFIX, INGEST_QUEUE, INTAKE_STREAM, INTAKE_SUBJECTS
from shared.commands import AnyCommand, RecordBeat, RecordLinkUsage, Reply, command_decoder, encoder
from shared.commands.contributions import RecordBlueprint, RecordEmail, RecordMark
from shared.logging import get_logger, request_id_var

log = get_logger(__name__)

# usagehub.ingest.<kind>: the payload other services publish, decoded as this command.
INTAKE_KINDS: dict[str, type[msgspec.Struct]] = {
    "beats": RecordBeat,
    "link_usage": RecordLinkUsage,
    "contribution_marks": RecordMark,
    "contribution_emails": RecordEmail,
    "contribution_blueprints": RecordBlueprint,
}
INTAKE_DURABLE = "ingest-intake"
# Fields never copied into a rejection record.
_SECRET_FIELDS = frozenset({"token", "authorization"})


async def _answer(ingest: Ingest, msg: Msg) -> None:
    try:
        cmd = command_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        reply = Reply(status=400, error=f"invalid command: {exc}")
    else:
        token = request_id_var.set(cmd.request_id)
        try:
            reply = await handle(ingest, cmd)
        except Exception:
            log.exception("command failed", command=type(cmd).__name__)
            reply = Reply(status=503, error="the event log is unavailable, try again")
        finally:
            request_id_var.reset(token)
    with contextlib.suppress(Exception):
        await msg.respond(encoder.encode(reply))


async def serve_commands(nc: NATS, ingest: Ingest) -> Any:
    """Answer every command concurrently: concurrent appends are what fills a shared batch."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_command(msg: Msg) -> None:
        task = asyncio.create_task(_answer(ingest, msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(COMMANDS_PREFIX + "*", queue=INGEST_QUEUE, cb=on_command)


def _redacted(payload: bytes) -> Any:
    try:
        data = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {"unparsed_bytes": len(payload)}
    if isinstance(data, dict):
        return {k: ("[redacted]" if k.lower() in _SECRET_FIELDS else v) for k, v in data.items()}
    return data


def decode_intake(kind: str, payload: bytes, msg_id: str) -> AnyCommand:
    """Turn an intake message into a command; raises ValueError with the reason when invalid."""
    cls = INTAKE_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown intake kind {kind!r}; known: {sorted(INTAKE_KINDS)}")
    try:
        fields = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("payload must be a JSON object")
    fields.setdefault("idempotency_key", msg_id)
    try:
        cmd: AnyCommand = msgspec.convert({**fields, "command": cls.__name__}, AnyCommand)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    return cmd


async def _reject(js: JetStreamContext, kind: str, msg: Msg, reason: str, status: int) -> None:
    record = {"kind": kind, "status": status, "reason": reason, "payload": _redacted(msg.data)}
    await js.publish(f"usagehub.rejected.{kind or 'unknown'}", msgspec.json.encode(record))
    metrics.INTAKE_REJECTED.labels(kind).inc()
    log.warning("intake message rejected", kind=kind, reason=reason)


async def _take(ingest: Ingest, js: JetStreamContext, msg: Msg) -> None:
    kind = msg.subject.removeprefix("usagehub.ingest.")
    headers = msg.headers or {}
    msg_id = headers.get("Nats-Msg-Id") or f"intake:{msg.metadata.sequence.stream}"
    try:
        cmd = decode_intake(kind, msg.data, msg_id)
    except ValueError as exc:
        await _reject(js, kind, msg, str(exc), 400)
        await msg.ack()
        return
    try:
        reply = await handle(ingest, cmd)
    except Exception:
        log.exception("intake message failed, will be redelivered", kind=kind)
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
