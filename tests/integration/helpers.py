"""Small helpers the integration tests share: reading the whole stream, dumping read models."""

from __future__ import annotations

import io

import asyncpg
from nats.js import JetStreamContext

from shared.bus import read_stream
from shared.events import AnyEvent, decode_event


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


async def dump_tables(database_url: str, tables: dict[str, str]) -> dict[str, bytes]:
    """``COPY`` of each table ordered by the given key: a byte-exact picture of a read model."""
    conn = await asyncpg.connect(database_url)
    try:
        out = {}
        for table, order in tables.items():
            buf = io.BytesIO()
            await conn.copy_from_query(f"SELECT * FROM {table} ORDER BY {order}", output=buf, format="text")
            out[table] = buf.getvalue()
        return out
    finally:
        await conn.close()
