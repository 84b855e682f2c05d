"""``usagehub up``: embedded servers (unless URLs are given), then gateway, ingest and projector as
supervised child processes, in the foreground; SIGINT/SIGTERM stops everything, children first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from services.local.servers import Server, free_port, start_nats, start_postgres
from shared.logging import get_logger, redact_url
from shared.settings import Settings

log = get_logger("supervisor")

# Each service connects to NATS as the user of the same name (shared/bus_permissions.py).
SERVICES = ("ingest", "projector", "gateway")


@dataclass
class Child:
    service: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{self.service}"], env=self.env)
        log.info("started", child=self.service, pid=self.process.pid)


def _child_env(settings: Settings, nats_url: str, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        USAGEHUB_NATS_URL=nats_url,
        USAGEHUB_DATABASE_URL=database_url,
        USAGEHUB_LOG_FORMAT=settings.log_format,
    )
    return env


def _as_user(env: dict[str, str], user: str, password_file: Path) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k != "USAGEHUB_NATS_PASSWORD"}
    return {**env, "USAGEHUB_NATS_USER": user, "USAGEHUB_NATS_PASSWORD_FILE": str(password_file)}


def _migrate(database_url: str) -> None:
    import asyncio

    import asyncpg

    from shared.db import migrate

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())


@dataclass
class EmbeddedServer:
    """An embedded server and how to start it again: same data, same port, so no URL changes."""

    start: Callable[[], Server]
    server: Server | None = None
    restarts: list[float] = field(default_factory=list)

    def launch(self) -> Server:
        self.server = self.start()
        return self.server


def _may_restart(restarts: list[float], what: str) -> bool:
    """At most five restarts a minute, with a growing pause; then give up (and stop everything)."""
    now = time.monotonic()
    restarts[:] = [t for t in restarts if now - t < 60] + [now]
    if len(restarts) > 5:
        log.error("keeps failing, stopping everything", process=what)
        return False
    time.sleep(min(5.0, 0.5 * len(restarts)))
    return True


def up(settings: Settings) -> int:
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: list[EmbeddedServer] = []
    children: list[Child] = []
    try:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        nats_url, database_url = settings.nats_url, settings.database_url
        nats: EmbeddedServer | None = None
        if not nats_url:
            port = free_port()
            nats = EmbeddedServer(lambda: start_nats(data_dir / "nats", port, log_file=data_dir / "nats.log"))
            servers.append(nats)
            nats_url = nats.launch().url
            log.info("embedded nats started", url=nats_url, data=str(data_dir / "nats"))
        if not database_url:
            pg_port = free_port()
            postgres = EmbeddedServer(lambda: start_postgres(data_dir / "postgres", pg_port))
            servers.append(postgres)
            database_url = postgres.launch().url
            log.info(
                "embedded postgres started", url=redact_url(database_url), data=str(data_dir / "postgres")
            )
        _migrate(database_url)
        env = _child_env(settings, nats_url, database_url)
        for service in SERVICES:
            child_env = dict(env)
            if nats is not None and nats.server is not None:  # our own server: each service as its role
                child_env = _as_user(child_env, service, nats.server.password_files[service])
            if service != "gateway":
                child_env["USAGEHUB_METRICS_PORT"] = str(free_port())
            children.append(Child(service, child_env))
        for child in children:
            child.start()
        log.info("usagehub is up", url=f"http://{settings.http_host}:{settings.http_port}/")
        while not stopping:
            time.sleep(0.2)
            for embedded in servers:
                assert embedded.server is not None
                if embedded.server.process.poll() is None or stopping:
                    continue
                name = embedded.server.name
                log.warning("embedded server exited, restarting", server=name)
                if not _may_restart(embedded.restarts, name):
                    return 1
                try:
                    embedded.launch()
                except Exception:  # e.g. the old one's processes still hold its files: try again
                    log.warning("embedded server did not start", server=name, exc_info=True)
            for child in children:
                assert child.process is not None
                if child.process.poll() is None or stopping:
                    continue
                log.warning("child exited, restarting", child=child.service, status=child.process.returncode)
                if not _may_restart(child.restarts, child.service):
                    return 1
                child.start()
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
        for child in children:
            if child.process is not None:
                try:
                    child.process.wait(15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        for embedded in reversed(servers):
            if embedded.server is not None:
                embedded.server.stop()
        log.info("usagehub stopped")
