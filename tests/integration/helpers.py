"""Small helpers the integration tests share: reading the whole stream, dumping read models."""

from __future__ import annotations

import asyncio
import io
import os
import sys

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus import EVENTS_STREAM, read_stream
from shared.db import Conn
from shared.events import AnyEvent, decode_event
from shared.settings import Settings


async def all_events(js: JetStreamContext) -> list[tuple[int, AnyEvent]]:
    out = []
    async for batch in read_stream(js, ["usagehub.events.>"]):
        out += [(d.seq, decode_event(d.data)) for d in batch]
    return out


async def raw_stream_bytes(js: JetStreamContext, stream: str, subjects: str) -> bytes:
    """Every stored message of ``stream`` (headers and data), for searching for leaked secrets."""
    info = await js.stream_info(stream)
    chunks = []
    for seq in range(int(info.state.first_seq), int(info.state.last_seq) + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except Exception:  # deleted (work-queue streams delete what was acknowledged)
            continue
        chunks.append(repr(msg.headers).encode() + (msg.data or b""))
    return b"\n".join(chunks)


async def dump_tables(conn: Conn, tables: dict[str, str]) -> dict[str, bytes]:
    """``COPY`` of each table ordered by the given key: a byte-exact picture of a read model."""
    out = {}
    for table, order in tables.items():
        buf = io.BytesIO()
        await conn.copy_from_query(f"SELECT * FROM {table} ORDER BY {order}", output=buf, format="text")
        out[table] = buf.getvalue()
    return out


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a usagehub process started by a test: the test's servers, and NATS as the
    user of ``settings`` (``Services.settings_for(role)``)."""
    env = {**os.environ, "USAGEHUB_NATS_URL": settings.nats_url, "USAGEHUB_LOG_FORMAT": "json", **extra}
    for name in ("USAGEHUB_NATS_USER", "USAGEHUB_NATS_PASSWORD", "USAGEHUB_NATS_PASSWORD_FILE"):
        env.pop(name, None)
    if settings.nats_user:
        env.update(USAGEHUB_NATS_USER=settings.nats_user, USAGEHUB_NATS_PASSWORD=settings.nats_password)
    if settings.database_url:
        env["USAGEHUB_DATABASE_URL"] = settings.database_url
    return env


async def run_usagehub(*args: str, settings: Settings) -> tuple[int, str, str]:
    """The ``usagehub`` admin command as a separate process: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        env=service_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def last_sequence(js: JetStreamContext, subject: str | None = None) -> int:
    """The stream's last sequence, or the last sequence among messages on ``subject`` (wildcards ok)."""
    if subject is None:
        info = await js.stream_info(EVENTS_STREAM)
        return int(info.state.last_seq)
    info = await js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    subjects = info.state.subjects or {}
    if not subjects:
        return 0
    # stream_info does not return sequences per subject, so read the newest one directly.
    best = 0
    for name in subjects:
        try:
            msg = await js.get_last_msg(EVENTS_STREAM, name, direct=True)
        except NotFoundError:
            continue
        best = max(best, int(msg.seq or 0))
    return best


async def keys_recorded(conn: Conn, js: JetStreamContext, within: float = 10.0) -> None:
    """Until the idempotency projection has recorded the whole event stream. No answer waits for it
    (it lingers to gather larger batches), so a test that reads its rows waits here first."""
    last = await last_sequence(js)
    for _ in range(int(within / 0.02)):
        position = await conn.fetchval(
            "SELECT position FROM projection_checkpoints WHERE projection = 'idempotency'"
        )
        if (position or 0) >= last:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the idempotency projection did not reach stream position {last}")
