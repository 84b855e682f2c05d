"""``usagehub up``: embedded servers (unless URLs are given), then gateway, ingest and projector as
supervised child processes, in the foreground; SIGINT/SIGTERM stops everything, children first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from services.local.servers import Server, free_port, start_nats, start_postgres
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("supervisor")

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


def up(settings: Settings) -> int:
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: list[Server] = []
    children: list[Child] = []
    try:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        nats_url, database_url = settings.nats_url, settings.database_url
        if not nats_url:
            servers.append(start_nats(data_dir / "nats", log_file=data_dir / "nats.log"))
            nats_url = servers[-1].url
            log.info("embedded nats started", url=nats_url, data=str(data_dir / "nats"))
        if not database_url:
            servers.append(start_postgres(data_dir / "postgres"))
            database_url = servers[-1].url
            log.info("embedded postgres started", url=database_url, data=str(data_dir / "postgres"))
        _migrate(database_url)
        env = _child_env(settings, nats_url, database_url)
        for service in SERVICES:
            child_env = dict(env)
            if service != "gateway":
                child_env["USAGEHUB_METRICS_PORT"] = str(free_port())
            children.append(Child(service, child_env))
        for child in children:
            child.start()
        log.info("usagehub is up", url=f"http://{settings.http_host}:{settings.http_port}/")
        while not stopping:
            time.sleep(0.2)
            for child in children:
                assert child.process is not None
                if child.process.poll() is None or stopping:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > 5:
                    log.error("child keeps failing, stopping", child=child.service)
                    return 1
                log.warning("child exited, restarting", child=child.service, status=child.process.returncode)
                time.sleep(min(5.0, 0.5 * len(child.restarts)))
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
        for server in reversed(servers):
            server.stop()
        log.info("usagehub stopped")
