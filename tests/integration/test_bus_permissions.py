"""The bus checks who speaks: no credentials or a wrong password is refused, and each role is refused
every subject it must not publish or subscribe to. (That each role can do what it needs, the rest of
the suite shows: every service under test connects as its own user.)

A refusal is observed twice: the server reports it to the client ("Permissions Violation", through
nats-py's error callback), and a superuser listening on the subject never receives the message,
though it does receive a marker it sends itself afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.bus import EVENTS_STREAM, BusRefused, connect, inbox_prefix, intake_subject
from shared.settings import Settings
from tests.conftest import Services, as_user
from tests.servers import NatsServer


@pytest.fixture(autouse=True)
def _our_server(bus: NatsServer) -> None:
    if not bus.passwords:
        pytest.skip("USAGEHUB_TEST_NATS_URL names a server whose users are not ours")


@dataclass
class Client:
    """A connection as one user, with every error the server reported to it."""

    nc: NATS
    errors: list[str] = field(default_factory=list)

    async def refused(self, what: str) -> None:
        """Until the server has reported a permissions violation about ``what``."""
        await self.nc.flush()
        for _ in range(100):
            # nats-py lowers the case of the server's message.
            if any(f"permissions violation for {what}".lower() in e.lower() for e in self.errors):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no permissions violation for {what!r}; errors: {self.errors}")


@pytest.fixture
async def as_role(bus: NatsServer) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """Connects as a user, with its own inbox prefix and an error callback that records."""
    clients: list[Client] = []

    async def connect_as(user: str) -> Client:
        client = Client(NATS())

        async def on_error(exc: Exception) -> None:
            client.errors.append(str(exc))

        await client.nc.connect(
            bus.url,
            user=user,
            password=bus.passwords[user],
            inbox_prefix=inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
        )
        clients.append(client)
        return client

    yield connect_as
    for client in clients:
        await client.nc.close()


class Listener:
    """A superuser subscription that records what arrives on ``subject``."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self.nc, self.subject, self.got = nc, subject, list[bytes]()

    async def __aenter__(self) -> Listener:
        async def on_msg(msg: Msg) -> None:
            self.got.append(msg.data)

        self.sub = await self.nc.subscribe(self.subject, cb=on_msg)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def received(self, marker_subject: str) -> list[bytes]:
        """What arrived before a marker this superuser publishes now (so the rest was dropped)."""
        await self.nc.publish(marker_subject, b"marker")
        for _ in range(100):
            if b"marker" in self.got:
                return [m for m in self.got if m != b"marker"]
            await asyncio.sleep(0.02)
        raise AssertionError("the marker never arrived")


async def test_a_client_without_credentials_is_refused(nats_url: str) -> None:
    with pytest.raises(BusRefused, match="without credentials"):
        await connect(Settings(nats_url=nats_url), "anonymous")


async def test_a_wrong_password_is_refused(bus: NatsServer) -> None:
    with pytest.raises(BusRefused, match="'ingest'"):
        await connect(Settings(nats_url=bus.url, nats_user="ingest", nats_password="not-it"), "guess")
    right = await connect(as_user(Settings(nats_url=bus.url), bus, "ingest"), "right")
    await right.close()


@pytest.mark.parametrize("user", ["gateway", "projector", "publisher", "alpha", "operator"])
async def test_only_ingest_publishes_events(
    user: str, as_role: Callable[[str], Awaitable[Client]], nats_client: NATS, js: JetStreamContext
) -> None:
    client = await as_role(user)
    async with Listener(nats_client, "usagehub.events.>") as listener:
        await client.nc.publish("usagehub.events.heartbeat.beat_recorded", b'{"type": "BeatRecorded"}')
        await client.refused('publish to "usagehub.events.heartbeat.beat_recorded"')
        assert await listener.received("usagehub.events.marker") == []
    # The marker went into the stream too; nothing else did.
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 1


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("gateway", "usagehub.commands.>"),
        ("publisher", "usagehub.commands.>"),
        ("projector", "usagehub.commands.RegenerateDeviceToken"),
        ("operator", "usagehub.commands.>"),
        ("gateway", "_INBOX.>"),
        ("publisher", ">"),
        ("gateway", "_INBOX_ingest.>"),
        ("projector", "_INBOX_gateway.>"),
        ("alpha", "_INBOX_beta.>"),
        ("publisher", "usagehub.ingest.>"),
        ("gateway", "usagehub.events.>"),
    ],
)
async def test_roles_cannot_listen_to_what_is_not_theirs(
    user: str, subject: str, as_role: Callable[[str], Awaitable[Client]], nats_client: NATS
) -> None:
    client = await as_role(user)
    got: list[bytes] = []
    marker = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg.data)

    async def on_marker(msg: Msg) -> None:
        marker.set()

    await client.nc.subscribe(subject, cb=on_msg)
    await client.refused(f'subscription to "{subject}"')
    await client.nc.subscribe(inbox_prefix(user) + ".marker", cb=on_marker)
    await client.nc.flush()
    # One publisher's messages reach a subscriber in order: once a marker is in, so would be the
    # secret sent just before it. The server may take a moment to route to a new subscription (its
    # PONG can come first: about one run in four here), so the pair is sent until a marker is in.
    async with asyncio.timeout(10):
        while not marker.is_set():
            await nats_client.publish(subject.replace(">", "x").replace("*", "x"), b"secret")
            await nats_client.publish(inbox_prefix(user) + ".marker", b"marker")
            await nats_client.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(marker.wait(), 0.2)
    assert got == []


async def test_ingest_hears_commands_only_in_its_queue_group(
    as_role: Callable[[str], Awaitable[Client]],
) -> None:
    ingest = await as_role("ingest")
    await ingest.nc.subscribe("usagehub.commands.*")
    await ingest.refused('subscription to "usagehub.commands.*"')


async def test_a_named_publisher_publishes_only_under_its_own_name(
    as_role: Callable[[str], Awaitable[Client]], nats_client: NATS, js: JetStreamContext
) -> None:
    alpha = await as_role("alpha")
    async with Listener(nats_client, "usagehub.ingest.>") as listener:
        for subject in (
            intake_subject("beats", "beta"),
            intake_subject("beats"),
            "usagehub.ingest.x.alpha.y",
        ):
            await alpha.nc.publish(subject, b"{}")
            await alpha.refused(f'publish to "{subject}"')
        assert await listener.received("usagehub.ingest.marker") == []
    # Under its own name it is stored, and the acknowledgement reaches it on its own inbox.
    ack = await alpha.nc.jetstream().publish(intake_subject("beats", "alpha"), b"{}")
    assert ack.stream == "USAGEHUB_INTAKE"
    generic = await as_role("publisher")
    assert (await generic.nc.jetstream().publish(intake_subject("beats"), b"{}")).stream == "USAGEHUB_INTAKE"
    # Ingest does not run here: the work queue holds the marker and these two, nothing else.
    assert (await js.stream_info("USAGEHUB_INTAKE")).state.messages == 3


async def test_operators_read_the_rejections(
    as_role: Callable[[str], Awaitable[Client]], nats_client: NATS
) -> None:
    await nats_client.jetstream().publish("usagehub.rejected.beats", b'{"reason": "no token"}')
    operator = await as_role("operator")
    js = operator.nc.jetstream()
    assert (await js.stream_info("USAGEHUB_REJECTED")).state.messages == 1
    pulled = await js.pull_subscribe("usagehub.rejected.>", stream="USAGEHUB_REJECTED")
    assert [m.data for m in await pulled.fetch(1, timeout=5)] == [b'{"reason": "no token"}']
    pushed = await js.subscribe("usagehub.rejected.>", stream="USAGEHUB_REJECTED", ordered_consumer=True)
    assert (await pushed.next_msg(timeout=5)).data == b'{"reason": "no token"}'
    assert operator.errors == []


@pytest.mark.parametrize("user", ["publisher", "gateway", "operator"])
async def test_only_ingest_and_projectors_read_the_event_stream(
    user: str, as_role: Callable[[str], Awaitable[Client]]
) -> None:
    client = await as_role(user)
    js = client.nc.jetstream(timeout=1.0)
    with pytest.raises(nats.errors.TimeoutError):  # the request never reached JetStream
        await js.pull_subscribe("usagehub.events.>", stream=EVENTS_STREAM)
    await client.refused(f'publish to "$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}')


async def test_no_role_deletes_the_event_stream(as_role: Callable[[str], Awaitable[Client]]) -> None:
    for user in ("ingest", "projector", "gateway", "operator"):
        client = await as_role(user)
        with pytest.raises(nats.errors.TimeoutError):
            await client.nc.jetstream(timeout=0.5).delete_stream(EVENTS_STREAM)
        await client.refused(f'publish to "$JS.API.STREAM.DELETE.{EVENTS_STREAM}"')


async def test_ingest_never_answers_onto_a_subject_that_is_no_inbox(
    services: Services, as_role: Callable[[str], Awaitable[Client]], nats_client: NATS
) -> None:
    """The requester picks the reply subject and the server does not check it: ingest, which may
    publish events, must not answer a request whose reply subject is an event subject."""
    gateway = await as_role("gateway")
    async with Listener(nats_client, "usagehub.events.>") as listener:
        await gateway.nc.publish("usagehub.commands.Ping", b"{}", reply="usagehub.events.heartbeat.x")
        answered = await gateway.nc.request("usagehub.commands.Ping", b"{}", timeout=5)
        assert b'"status":200' in answered.data  # ingest is there, and answers on an inbox
        await asyncio.sleep(0.3)  # the two were handled concurrently
        assert await listener.received("usagehub.events.marker") == []
