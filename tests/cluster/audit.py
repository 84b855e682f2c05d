"""What the clients were told, checked against the event stream and the read models: no acknowledged
write lost, none doubled, and every read model exactly what folding the stream gives."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from services.projector.link_usage import LinksState, fold_usage_events
from services.projector.projections import PROJECTIONS
from shared.bus import read_stream, subject_matches
from shared.events import AnyEvent, BeatRecorded, decode_event
from tests.cluster.load import Load

# The commands of the load; their events carry "<origin>|<command>|<caller>|<target>|<client key>".
LOAD_COMMANDS = ("|RecordBeat|", "|RecordLinkUsage|")


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    event: AnyEvent


async def stream_events(js: JetStreamContext, attempts: int = 3) -> list[Stored]:
    """Every event in the stream. Read again from the start when the read fails: just after a fault a
    new consumer may not be served yet (a pull answered 503 once, after a stream leader's pause)."""
    for attempt in range(attempts):
        out: list[Stored] = []
        try:
            async for batch in read_stream(js, ["usagehub.events.>"]):
                out += [Stored(d.seq, d.subject, decode_event(d.data)) for d in batch]
        except (ConnectionError, TimeoutError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(2)
            continue
        return out
    raise AssertionError("unreachable")


def client_key(event: AnyEvent) -> str | None:
    scoped = event.idempotency_key
    if scoped is None or not any(c in scoped for c in LOAD_COMMANDS):
        return None
    return scoped.rsplit("|", 1)[1]


@dataclass
class Audit:
    acked: int
    stored: int
    lost: list[str] = field(default_factory=list)  # acknowledged, not in the stream
    doubled: list[str] = field(default_factory=list)  # in the stream more than once
    unknown: list[str] = field(default_factory=list)  # in the stream, never sent
    stored_unacked: int = 0  # abandoned by the client, stored all the same (allowed)
    read_models: list[str] = field(default_factory=list)
    seq_of: dict[str, int] = field(default_factory=dict)  # where each client key's event is

    def figures(self) -> dict[str, Any]:
        return {
            "acked": self.acked,
            "lost": len(self.lost),
            "doubled": len(self.doubled),
            "stored_never_sent": len(self.unknown),
            "stored_not_acked": self.stored_unacked,
            "read_model_mismatches": len(self.read_models),
        }

    def assert_clean(self) -> None:
        assert self.lost == [], f"acknowledged writes lost: {self.lost[:10]}"
        assert self.doubled == [], f"writes doubled: {self.doubled[:10]}"
        assert self.unknown == [], f"stored writes nobody sent: {self.unknown[:10]}"
        assert self.read_models == [], f"read models differ from the stream: {self.read_models[:10]}"


def projection_ends(events: list[Stored]) -> dict[str, int]:
    """For each projection, the last stream position among the events it reads."""
    return {
        name: max((s.seq for s in events if any(subject_matches(s.subject, f) for f in p.filters)), default=0)
        for name, p in PROJECTIONS.items()
    }


async def read_model_problems(conn: asyncpg.Connection, events: list[Stored]) -> list[str]:
    """Every way the read models differ from the stream: checkpoints, beats per device, the key
    table, usage sessions, anything quarantined."""
    problems = []
    rows = await conn.fetch("SELECT projection, position FROM projection_checkpoints")
    positions = {r["projection"]: r["position"] for r in rows}
    for name, last in projection_ends(events).items():
        if positions.get(name, 0) != last:
            problems.append(f"{name}: checkpoint {positions.get(name, 0)}, stream {last}")

    beats = Counter(s.event.device_id for s in events if isinstance(s.event, BeatRecorded))
    rows = await conn.fetch("SELECT device_id, num_beats FROM heartbeat_devices")
    devices = {r["device_id"]: r["num_beats"] for r in rows}
    for device in sorted(set(devices) | set(beats)):
        if devices.get(device, 0) != beats.get(device, 0):
            problems.append(
                f"device {device}: {devices.get(device)} beats in Postgres, {beats[device]} stored"
            )
    total = await conn.fetchval("SELECT total_beats FROM heartbeat_stats")
    if (total or 0) != sum(beats.values()):
        problems.append(f"total_beats {total}, stream {sum(beats.values())}")

    first: dict[str, int] = {}
    for s in events:
        if s.event.idempotency_key is not None:
            first.setdefault(s.event.idempotency_key, s.seq)
    rows = await conn.fetch("SELECT idempotency_key, stream_seq FROM idempotency_keys")
    keys = {r["idempotency_key"]: r["stream_seq"] for r in rows}
    if keys != first:
        missing = sorted(set(first) - set(keys))[:3]
        problems.append(f"idempotency_keys: {len(keys)} rows, stream {len(first)} keys (missing {missing})")

    state = fold_usage_events(LinksState(), [s.event for s in events])
    sessions = {(k[0], k[1], s.start, s.last) for k, ss in state.sessions.items() for s in ss}
    rows = await conn.fetch("SELECT link_id, user_name, started_at, last_at FROM link_usage_sessions")
    table = {(r["link_id"], r["user_name"], r["started_at"], r["last_at"]) for r in rows}
    if table != sessions:
        problems.append(f"link_usage_sessions: {len(table)} rows, folding the stream gives {len(sessions)}")

    quarantined = await conn.fetchval("SELECT count(*) FROM projection_quarantine")
    if quarantined:
        problems.append(f"{quarantined} events quarantined")
    return problems


async def caught_up(js: JetStreamContext, database_url: str, within: float) -> float:
    """Seconds until every projection has applied everything the stream holds now (writes may go
    on meanwhile), or fail after ``within`` seconds."""
    ends = projection_ends(await stream_events(js))
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            rows = await conn.fetch("SELECT projection, position FROM projection_checkpoints")
            positions = {r["projection"]: r["position"] for r in rows}
            if all(positions.get(name, 0) >= end for name, end in ends.items()):
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise AssertionError(f"projections at {positions}, the stream's ends at {ends}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def converge(js: JetStreamContext, database_url: str, within: float = 30.0) -> tuple[float, list[str]]:
    """Seconds until the read models are exactly what the stream says (or the problems left after
    ``within`` seconds)."""
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            problems = await read_model_problems(conn, await stream_events(js))
            if not problems or time.monotonic() - started > within:
                return time.monotonic() - started, problems
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def audit(js: JetStreamContext, database_url: str, load: Load, within: float = 30.0) -> Audit:
    """Compare what the load was told with the stream, once the read models have converged."""
    _, problems = await converge(js, database_url, within)
    events = await stream_events(js)
    stored = Counter(k for s in events if (k := client_key(s.event)) and k.startswith(load.prefix + "-"))
    sent = {w.key for w in load.writes}
    acked = {w.key for w in load.acked}
    return Audit(
        acked=len(acked),
        stored=sum(stored.values()),
        lost=sorted(acked - set(stored)),
        doubled=sorted(k for k, n in stored.items() if n > 1),
        unknown=sorted(set(stored) - sent),
        stored_unacked=len((set(stored) & sent) - acked),
        read_models=problems,
        seq_of={k: s.seq for s in events if (k := client_key(s.event)) in stored},
    )
