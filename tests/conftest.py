"""Fixtures, stacked: servers (once per session) -> a fresh database and empty streams per test ->
the services running in this process -> an HTTP client for the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js import JetStreamContext

from services.gateway.app import init_app
from services.gateway.http_server import gateway_runner
from services.ingest.__main__ import run as run_ingest
from services.projector.__main__ import run as run_projector
from shared.bus import COMMANDS_PREFIX, STREAMS, connect, ensure_streams
from shared.logging import configure_logging
from shared.settings import Settings
from tests.servers import SUPERUSER, NatsServer, nats_server, postgres_server

SECRET = "test-admin-secret-key-0123456789abcdef"

# tests/browser needs a browser: `make browser-test` runs it (and sets this); `make test` does not.
collect_ignore = [] if os.environ.get("USAGEHUB_BROWSER_TESTS") else ["browser"]


@pytest.fixture(scope="session")
def bus() -> Iterator[NatsServer]:
    """One JetStream server for the session, with a user per role."""
    with nats_server() as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(bus: NatsServer) -> str:
    return bus.url


def as_user(settings: Settings, bus: NatsServer, user: str) -> Settings:
    """``settings`` connecting to NATS as ``user``; on a server that is not ours, as the environment's
    ``USAGEHUB_NATS_USER`` (or without credentials)."""
    if bus.passwords:
        return replace(settings, nats_user=user, nats_password=bus.passwords[user])
    env_user, env_password = (
        os.environ.get("USAGEHUB_NATS_USER", ""),
        os.environ.get("USAGEHUB_NATS_PASSWORD", ""),
    )
    return replace(settings, nats_user=env_user, nats_password=env_password)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One Postgres server for the session."""
    with postgres_server() as url:
        yield url


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database for this test."""
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(postgres_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def nats_client(bus: NatsServer) -> AsyncIterator[NATS]:
    """A superuser client on a server whose usagehub streams were just deleted: each test starts empty."""
    nc = await connect(as_user(Settings(nats_url=bus.url), bus, SUPERUSER), "tests")
    js = nc.jetstream()
    for stream in STREAMS:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    await ensure_streams(js)
    yield nc
    await nc.close()


@pytest.fixture
def js(nats_client: NATS) -> JetStreamContext:
    return nats_client.jetstream()


@pytest.fixture
def settings(nats_client: NATS, bus: NatsServer, database_url: str) -> Settings:
    """Settings for the gateway under test (free ports, the test servers, a known admin key)."""
    configure_logging("test", "json", "info")
    gateway = Settings(
        nats_url=bus.url,
        database_url=database_url,
        secret_key=SECRET,
        http_port=0,
        metrics_port=0,
        log_format="json",
        stats_interval=1.0,
    )
    return as_user(gateway, bus, "gateway")


@dataclass
class Services:
    """The ingest and projector running as tasks in the test's event loop, each as its own NATS user;
    ``settings`` are the gateway's."""

    settings: Settings
    stop: asyncio.Event
    tasks: dict[str, asyncio.Task[None]]
    bus: NatsServer

    def settings_for(self, user: str) -> Settings:
        return as_user(self.settings, self.bus, user)

    async def stop_service(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def start_service(self, name: str) -> None:
        runner = {"ingest": run_ingest, "projector": run_projector}[name]
        self.tasks[name] = asyncio.create_task(runner(self.settings_for(name), self.stop), name=name)


@pytest.fixture
async def services(settings: Settings, bus: NatsServer) -> AsyncIterator[Services]:
    """Ingest and projector, started and stopped around the test."""
    svc = Services(settings, asyncio.Event(), {}, bus)
    svc.start_service("ingest")
    svc.start_service("projector")
    await _wait_ready(settings)
    yield svc
    svc.stop.set()
    results = await asyncio.gather(*svc.tasks.values(), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _wait_ready(settings: Settings) -> None:
    """Until the installation event is projected and ingest answers commands."""
    conn = await asyncpg.connect(settings.database_url)
    nc = await connect(settings, "tests-ready")
    try:
        for _ in range(400):
            with contextlib.suppress(asyncpg.UndefinedTableError):
                if await conn.fetchval("SELECT set_up_at FROM installation") is not None:
                    break
            await asyncio.sleep(0.025)
        else:
            raise TimeoutError("the installation was not set up")
        for _ in range(400):
            with contextlib.suppress(NoRespondersError):
                await nc.request(COMMANDS_PREFIX + "Ping", b"{}", timeout=5)  # answered 400
                return
            await asyncio.sleep(0.025)
        raise TimeoutError("ingest does not answer")
    finally:
        await conn.close()
        await nc.close()


class GatewayTestServer(TestServer):
    """aiohttp's test server, serving through the gateway's own runner (its limits included)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return gateway_runner(self.app, **kwargs)


def gateway(settings: Settings) -> GatewayTestServer:
    """The gateway of ``settings`` as ``__main__`` runs it, on a free port."""
    return GatewayTestServer(init_app(settings))


@pytest.fixture
async def client(services: Services) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An HTTP client for a gateway running on a free port."""
    async with TestClient(gateway(services.settings)) as c:
        yield c


def admin(**extra: str) -> dict[str, str]:
    return {"Authorization": SECRET, **extra}


def with_settings(s: Settings, **changes: object) -> Settings:
    return replace(s, **changes)  # type: ignore[arg-type]
