"""Commands that arrive together go to ingest as one request, and each caller still gets its own answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gateway import command_batches
from services.gateway.command_batches import CommandBatches
from shared.bus import BATCH, COMMANDS_PREFIX, MAX_COMMANDS_PER_BATCH, connect
from shared.commands import RecordBeat, Reply, encoder
from shared.secrets import hash_token, new_token
from tests.conftest import Services, admin

Client = TestClient[web.Request, web.Application]
_commands = msgspec.json.Decoder(list[RecordBeat])


def beat(n: int) -> RecordBeat:
    return RecordBeat(token_hash=f"{n:064x}")


class StandInIngest:
    """Answers commands as ingest would, recording the subjects they came on; holds its first answer
    until ``release`` is set, so the commands that arrive meanwhile queue behind it."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.release = asyncio.Event()
        self.asked = asyncio.Event()

    @staticmethod
    def reply(cmd: RecordBeat) -> Reply:
        n = int(cmd.token_hash, 16)
        if n % 3 == 0:
            return Reply(status=401, error=f"no device has token {n}")
        return Reply(status=200, seq=n, result={"token": cmd.token_hash})

    async def on_command(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)
        self.asked.set()
        await self.release.wait()
        if msg.subject == COMMANDS_PREFIX + BATCH:
            answer = encoder.encode([self.reply(c) for c in _commands.decode(msg.data)])
        else:
            answer = encoder.encode(self.reply(msgspec.json.decode(msg.data, type=RecordBeat)))
        await msg.respond(answer)


@contextlib.asynccontextmanager
async def sending(nc: NATS, within: float) -> AsyncIterator[CommandBatches]:
    commands = CommandBatches(nc, within)
    commands.start()
    try:
        yield commands
    finally:
        await commands.close()


async def one_out_then(nc: NATS, ingest: StandInIngest, count: int) -> list[Reply]:
    """Beats 1 to ``count``: the first goes out alone and is held there while the rest queue."""
    await nc.subscribe(COMMANDS_PREFIX + "*", cb=ingest.on_command)
    async with sending(nc, within=5.0) as commands:
        first = asyncio.create_task(commands.ask(beat(1)))
        await ingest.asked.wait()
        rest = [asyncio.create_task(commands.ask(beat(n))) for n in range(2, count + 1)]
        await asyncio.sleep(0.1)
        ingest.release.set()
        return await asyncio.gather(first, *rest)


async def test_commands_that_arrive_together_share_a_request_and_keep_their_own_answers(
    nats_client: NATS,
) -> None:
    ingest = StandInIngest()
    replies = await one_out_then(nats_client, ingest, 39)
    assert ingest.subjects == [COMMANDS_PREFIX + "RecordBeat", COMMANDS_PREFIX + BATCH]
    for n, reply in enumerate(replies, start=1):
        assert reply == StandInIngest.reply(beat(n)), n


async def test_a_batch_never_holds_more_than_ingest_takes(nats_client: NATS) -> None:
    ingest = StandInIngest()
    many = MAX_COMMANDS_PER_BATCH + 10
    replies = await one_out_then(nats_client, ingest, many + 1)
    assert ingest.subjects == [COMMANDS_PREFIX + "RecordBeat"] + [COMMANDS_PREFIX + BATCH] * 2
    assert [r.seq for r in replies if r.status == 200] == [n for n in range(1, many + 2) if n % 3]


async def test_with_no_ingest_every_command_hears_503(nats_client: NATS) -> None:
    async with sending(nats_client, within=0.5) as commands:
        outcomes = await asyncio.gather(*(commands.ask(beat(n)) for n in range(5)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [web.HTTPServiceUnavailable] * 5
    assert all(o.headers["Retry-After"] == "1" for o in outcomes if isinstance(o, web.HTTPException))


async def test_an_ingest_that_never_answers_is_504_for_every_command_in_time(nats_client: NATS) -> None:
    async def never_answer(msg: Msg) -> None:
        pass

    silent = await nats_client.subscribe(COMMANDS_PREFIX + "*", cb=never_answer)
    started = time.monotonic()
    try:
        async with sending(nats_client, within=0.5) as commands:
            outcomes = await asyncio.gather(
                *(commands.ask(beat(n)) for n in range(5)), return_exceptions=True
            )
    finally:
        await silent.unsubscribe()
    assert [type(o) for o in outcomes] == [web.HTTPGatewayTimeout] * 5
    assert time.monotonic() - started < 2.0


async def test_a_command_queued_past_its_time_is_refused_unsent(
    nats_client: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_batches, "MAX_IN_FLIGHT", 1)
    ingest = StandInIngest()
    await nats_client.subscribe(COMMANDS_PREFIX + "*", cb=ingest.on_command)
    async with sending(nats_client, within=0.5) as commands:
        first = asyncio.create_task(commands.ask(beat(1)))
        await ingest.asked.wait()
        late = asyncio.create_task(commands.ask(beat(2)))
        outcomes = await asyncio.gather(first, late, return_exceptions=True)
    # The first went and never came back (504); the second never left the gateway (503: safe to retry).
    assert [type(o) for o in outcomes] == [web.HTTPGatewayTimeout, web.HTTPServiceUnavailable]
    assert ingest.subjects == [COMMANDS_PREFIX + "RecordBeat"]


async def test_ingest_answers_each_command_of_a_batch_on_its_own(services: Services, client: Client) -> None:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
    token = (await resp.json())["token"]
    good = encoder.encode(RecordBeat(token_hash=hash_token(token)))
    unknown = encoder.encode(RecordBeat(token_hash=hash_token("not a token")))
    unreadable = b'{"command": "NoSuchCommand"}'
    nc = await connect(services.settings, "tests-batch")
    try:
        batch = b"[" + b",".join([good, unknown, unreadable, good]) + b"]"
        msg = await nc.request(COMMANDS_PREFIX + BATCH, batch, timeout=10)
        too_many = b"[" + b",".join([good] * (MAX_COMMANDS_PER_BATCH + 1)) + b"]"
        refused = await nc.request(COMMANDS_PREFIX + BATCH, too_many, timeout=10)
    finally:
        await nc.close()
    replies = msgspec.json.decode(msg.data, type=list[Reply])
    assert [r.status for r in replies] == [200, 401, 400, 200]
    assert replies[0].seq > 0 and replies[3].seq > 0 and replies[0].seq != replies[3].seq
    assert msgspec.json.decode(refused.data, type=Reply).status == 400


async def test_concurrent_beats_each_get_their_own_answer(services: Services, client: Client) -> None:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
    token = (await resp.json())["token"]
    # Well-formed tokens no device has: refused by ingest, inside the batches, not by the gateway.
    tokens = [token if i % 4 else new_token() for i in range(60)]
    answers = await asyncio.gather(*(client.post("/api/beat", headers={"Authorization": t}) for t in tokens))
    assert [a.status for a in answers] == [200 if i % 4 else 401 for i in range(60)]
    # Read-your-writes held for each: every accepted beat is already in the statistics.
    stats = await (await client.get("/api/stats")).json()
    assert stats["total_beats"] == 45
