"""usagehub in its production shape, on loopback: a three-node JetStream cluster configured as the prod
overlay configures it (sync interval and stream replicas read from deploy/), one Postgres, and
gateway, ingest and projector replicas as real processes. Used by the fault tests and ``make bench``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.local.servers import free_port, nats_server_binary, spawn
from shared.bus import EVENTS_STREAM, connect, ensure_streams
from shared.bus_permissions import ROLES, authorization_file, password_variable
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
PROD_OVERLAY = REPO_ROOT / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml"
SECRET = "cluster-test-admin-key-0123456789abcdef"
# The harness's own connection (streams, stream infos, reading the stream back): ingest's rights suffice.
ADMIN_USER = "ingest"


def prod_nats_conf() -> Path:
    """The file the prod overlay mounts as the NATS servers' nats.conf."""
    found = re.search(r"nats\.conf=(\S+)", PROD_OVERLAY.read_text())
    if not found:
        raise RuntimeError(f"{PROD_OVERLAY} names no nats.conf")
    return PROD_OVERLAY.parent / found.group(1)


def prod_sync_interval() -> str:
    """The ``sync_interval`` of the prod NATS configuration: the harness runs what production runs."""
    conf = prod_nats_conf()
    block = re.search(r"^jetstream\s*\{(.*?)^\}", conf.read_text(), re.S | re.M)
    found = block and re.search(r"^\s*sync_interval\s*:\s*(\S+)\s*$", block.group(1), re.M)
    if not found:
        raise RuntimeError(f"{conf} sets no sync_interval")
    return found.group(1)


def prod_stream_replicas() -> int:
    found = re.search(r"USAGEHUB_STREAM_REPLICAS=(\d+)", PROD_OVERLAY.read_text())
    if not found:
        raise RuntimeError(f"{PROD_OVERLAY} sets no USAGEHUB_STREAM_REPLICAS")
    return int(found.group(1))


async def _get_json(url: str, within: float = 2.0) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as http,
        http.get(url) as r,
    ):
        r.raise_for_status()
        return await r.json(content_type=None)


class ServiceExited(RuntimeError):
    """A service process ended while it was being waited for: no use waiting longer."""


async def _until(what: str, check: Any, seconds: float, every: float = 0.1) -> Any:
    """Poll ``check()`` (async) until it returns something truthy without raising; bounded."""
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except ServiceExited:
            raise
        except Exception as exc:
            last = exc
        await asyncio.sleep(every)
    raise TimeoutError(f"{what} not within {seconds}s (last error: {last!r})")


@dataclass
class NatsNode:
    """One nats-server of the cluster: its own ports, store and log; it can be killed, paused, restarted."""

    name: str
    root: Path
    client_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def write_config(self, route_ports: Sequence[int], sync_interval: str) -> Path:
        routes = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in route_ports)
        config = self.root / "nats.conf"
        self.root.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.root / "jetstream"}"\n  sync_interval: {sync_interval}\n}}\n'
            "cluster {\n"
            "  name: usagehub\n"
            f"  listen: 127.0.0.1:{self.route_port}\n"
            # Clients keep to the URLs they were given (in the proxy test, the proxies' URLs).
            "  no_advertise: true\n"
            "  connect_retries: 120\n"
            f"  routes: [\n{routes}\n  ]\n"
            "}\n"
            # The users and permissions of every deployment, their passwords from the environment.
            "include ./authorization.conf\n"
        )
        (self.root / "authorization.conf").write_text(authorization_file())
        return config

    def start(self, passwords: dict[str, str]) -> None:
        env = {**os.environ, **{password_variable(user): p for user, p in passwords.items()}}
        with open(self.root / "nats.log", "ab") as log:
            self.process = spawn(
                [nats_server_binary(), "-c", str(self.root / "nats.conf")], stdout=log, stderr=log, env=env
            )
        self.paused = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush beyond what was already fsynced."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.paused = False

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    async def stream_state(self, stream: str = EVENTS_STREAM) -> dict[str, Any] | None:
        """This server's own replica of ``stream`` (its monitoring endpoint), or None without one."""
        jsz = await _get_json(f"{self.monitor}/jsz?accounts=true&streams=true")
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    state: dict[str, Any] = detail["state"]
                    return state
        return None

    async def meta_leader(self) -> str:
        jsz = await _get_json(f"{self.monitor}/jsz")
        return str((jsz.get("meta_cluster") or {}).get("leader") or "")


class NatsCluster:
    """Three JetStream servers with routes to each other, configured from the prod NATS config, with
    a password for each role's user."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.nodes = [NatsNode(f"usagehub-nats-{i}", root / f"nats-{i}") for i in range(size)]
        self.sync_interval = prod_sync_interval()
        self.passwords = {user: secrets.token_hex(24) for user in ROLES}
        self._write_configs()

    def _write_configs(self) -> None:
        routes = [n.route_port for n in self.nodes]
        for node in self.nodes:
            node.write_config(routes, self.sync_interval)

    async def _listening(self, seconds: float) -> bool:
        """Every node answers on its monitoring port; False as soon as one has exited (a port that
        ``free_port`` found free was taken by another process before the node could bind it)."""
        deadline = asyncio.get_running_loop().time() + seconds
        waiting = list(self.nodes)
        while waiting:
            if any(not n.running for n in waiting):
                return False
            if asyncio.get_running_loop().time() > deadline:
                return False
            still = []
            for node in waiting:
                try:
                    await _get_json(f"{node.monitor}/varz", within=1.0)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    still.append(node)
            waiting = still
            if waiting:
                await asyncio.sleep(0.1)
        # A node serves monitoring before it binds its client and route ports; one that could not
        # bind them exits just after.
        await asyncio.sleep(1.0)
        return all(n.running for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    async def start(self) -> None:
        for _ in range(3):
            for node in self.nodes:
                node.start(self.passwords)
            if await self._listening(30):
                break
            # A port was taken under a node: start the cluster again on new ones.
            self.stop()
            for node in self.nodes:
                node.client_port, node.route_port, node.monitor_port = free_port(), free_port(), free_port()
            self._write_configs()
        await self.wait_for_meta_leader(60)

    def restart(self, node: NatsNode) -> None:
        node.start(self.passwords)

    def settings(self, user: str, urls: Sequence[str] | None = None) -> Settings:
        """How ``user`` connects to the cluster (to ``urls``, by default every server's)."""
        return Settings(
            nats_url=",".join(urls or self.urls), nats_user=user, nats_password=self.passwords[user]
        )

    async def wait_for_meta_leader(self, seconds: float) -> str:
        async def agreed() -> str:
            leaders = {await n.meta_leader() for n in self.nodes if n.running and not n.paused}
            return leaders.pop() if len(leaders) == 1 else ""

        leader: str = await _until("a JetStream meta leader", agreed, seconds, every=0.2)
        return leader

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def stream_leader(js: JetStreamContext, stream: str = EVENTS_STREAM) -> str:
    info = await js.stream_info(stream)
    return str(info.cluster.leader or "") if info.cluster else ""


@dataclass
class ServiceProcess:
    """A usagehub service as its own process: ``python -m services.<kind>``."""

    kind: str
    name: str
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = spawn(
                [sys.executable, "-m", f"services.{self.kind}"], env=self.env, stdout=log, stderr=log
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(self.base + "/metrics") as r,
        ):
            return await r.text()


@dataclass
class Usagehub:
    """Everything running: the cluster, the services, and an admin connection to the cluster."""

    nats: NatsCluster
    services: list[ServiceProcess]
    nc: NATS
    database_url: str
    secret: str = SECRET

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    def of_kind(self, kind: str) -> list[ServiceProcess]:
        return [s for s in self.services if s.kind == kind]

    @property
    def gateways(self) -> list[str]:
        return [s.base for s in self.of_kind("gateway")]


def service_environment(nats: Settings, database_url: str, **extra: str) -> dict[str, str]:
    """A service's environment: its NATS user, every server's URL, the prod overlay's replicas."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEHUB_")}
    env.update(
        USAGEHUB_NATS_URL=nats.nats_url,
        USAGEHUB_NATS_USER=nats.nats_user,
        USAGEHUB_NATS_PASSWORD=nats.nats_password,
        USAGEHUB_DATABASE_URL=database_url,
        USAGEHUB_SECRET_KEY=SECRET,
        USAGEHUB_STREAM_REPLICAS=str(prod_stream_replicas()),
        USAGEHUB_LOG_FORMAT="json",
        USAGEHUB_LOG_LEVEL="info",
        USAGEHUB_HTTP_HOST="127.0.0.1",
    )
    env.update(extra)
    return env


async def wait_ready(services: Sequence[ServiceProcess], seconds: float = 90) -> None:
    """Until every gateway says ready (NATS, Postgres, an ingest, the projections) and every ingest
    and projector answers its health check."""
    for service in services:
        path = "/readyz" if service.kind == "gateway" else "/healthz"

        async def ready(service: ServiceProcess = service, path: str = path) -> bool:
            if service.process is not None and service.process.poll() is not None:
                raise ServiceExited(
                    f"{service.name} exited with {service.process.returncode}: see {service.log}"
                )
            await _get_json(service.base + path)
            return True

        await _until(f"{service.name} ready", ready, seconds, every=0.25)


@contextlib.asynccontextmanager
async def running_usagehub(
    root: Path,
    database_url: str,
    *,
    gateways: int = 2,
    ingests: int = 2,
    projectors: int = 2,
    nats: NatsCluster | None = None,
    service_nats_urls: Sequence[str] | None = None,
    projector_database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Usagehub]:
    """The cluster (``nats``, not yet started, or a new one), its streams with the prod replica
    count, then the services: each given every server's URL, or ``service_nats_urls``; projectors
    may reach Postgres another way."""
    nats = nats or NatsCluster(root)
    services: list[ServiceProcess] = []
    nc: NATS | None = None
    try:
        await nats.start()
        nc = await connect(nats.settings(ADMIN_USER), "cluster-tests")
        js = nc.jetstream()
        await _until("the streams", lambda: _create_streams(js), 60, every=0.5)
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        urls = service_nats_urls or nats.urls
        counts = {"ingest": ingests, "projector": projectors, "gateway": gateways}
        for kind, count in counts.items():
            for i in range(count):
                port = free_port()
                db = (
                    projector_database_url if kind == "projector" and projector_database_url else database_url
                )
                extra = {"USAGEHUB_HTTP_PORT" if kind == "gateway" else "USAGEHUB_METRICS_PORT": str(port)}
                env = service_environment(nats.settings(kind, urls), db, **{**extra, **(extra_env or {})})
                service = ServiceProcess(kind, f"{kind}-{i}", env, port, logs / f"{kind}-{i}.log")
                service.start()
                services.append(service)
        await wait_ready(services)
        yield Usagehub(nats, services, nc, database_url)
    finally:
        for service in services:
            service.stop()
        if nc is not None:
            await nc.close()
        nats.stop()


async def _create_streams(js: JetStreamContext) -> bool:
    await ensure_streams(js, prod_stream_replicas())
    info = await js.stream_info(EVENTS_STREAM)
    return bool(info.cluster and info.cluster.leader)
