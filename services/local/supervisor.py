"""``usagehub up``: embedded servers (unless URLs are given), then gateway workers, ingest and
projector as supervised child processes, in the foreground; SIGINT/SIGTERM stops everything, children
first."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from services.local.running import RunningSystem, read_running, remove_running, write_running
from services.local.servers import Server, free_port, start_nats, start_postgres
from shared.logging import get_logger, redact_url
from shared.metrics import MULTIPROCESS_DIR_ENV
from shared.settings import Settings

log = get_logger("supervisor")

# Each service connects to NATS as the user of the same name (shared/bus_permissions.py).
SERVICES = ("ingest", "projector", "gateway")
# Gateway workers when USAGEHUB_HTTP_WORKERS is 0: one per core up to this many (docs/operations.md,
# "Gateway workers": each costs about 58 MiB idle, and reads rarely keep more cores busy on one host).
AUTO_HTTP_WORKERS_CAP = 2


def gateway_workers(configured: int, cores: int | None, linux: bool = True) -> int:
    """How many gateway processes ``up`` starts: as configured, or for 0 one per core up to the cap.
    Only Linux spreads a port's connections among its SO_REUSEPORT sockets (BSD and macOS hand them
    all to one), so elsewhere 0 is one."""
    if configured > 0:
        return configured
    if not linux:
        return 1
    return max(1, min(AUTO_HTTP_WORKERS_CAP, cores or 1))


def usable_cores() -> int | None:
    """The cores this process may run on (a container's or taskset's share, not the whole host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


@dataclass
class Backoff:
    """The pause before each restart: ``first``, doubling up to ``cap``; back to ``first`` once a run
    has lasted ``stable`` seconds. It never gives up: a crash loop costs one start per ``cap``."""

    first: float = 0.5
    cap: float = 30.0
    stable: float = 60.0
    _pause: float = 0.0

    def pause_after(self, ran_for: float) -> float:
        if ran_for >= self.stable or self._pause == 0.0:
            self._pause = self.first
        pause = self._pause
        self._pause = min(self.cap, self._pause * 2)
        return pause


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _reason(line: str) -> str:
    """The useful part of a log line: for a JSON record, its exception's last line or its event."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    exception = str(record.get("exception") or "").strip()
    return exception.splitlines()[-1] if exception else str(record.get("event", line))


class StderrTail:
    """Copies a child's stderr to ours, line by line, and remembers the last line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.last = ""
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            # Keep reading even when our stderr is gone: a child blocked on a full pipe would hang.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(raw)
                sys.stderr.buffer.flush()
            if raw.strip():
                self.last = raw.decode(errors="replace").strip()[:2000]
        stream.close()

    def wait(self, timeout: float = 1.0) -> None:
        self._thread.join(timeout)


@dataclass
class Supervised:
    """One process kept running: started by ``launch``, restarted after ``backoff`` when it exits."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    backoff: Backoff = field(default_factory=Backoff)
    # Where to read why it stopped, when it is not its stderr (the embedded servers' log files).
    log_file: Path | None = None
    # Told the pid of each run that has exited (a gateway worker's metrics are handed back).
    on_exit: Callable[[int], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    tail: StderrTail | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    starts: list[float] = field(default_factory=list)
    last_exit: str = ""

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.starts.append(self.started_at)
        self.process = self.launch()
        if self.process.stderr is not None:
            self.tail = StderrTail(self.process.stderr)
        log.info("started", process=self.name, pid=self.process.pid)

    def check(self, now: float) -> None:
        """Restart it when it has exited and its pause is over; never blocks."""
        restart_at = self.restart_at
        if restart_at is None:
            if self.process is None or self.process.poll() is None:
                return
            if self.on_exit is not None:
                self.on_exit(self.process.pid)
            restart_at = self._exited(now, describe_exit(self.process.returncode))
        if now < restart_at:
            return
        self.restart_at = None
        try:
            self.start()
        except Exception as exc:  # e.g. the old server's processes still hold its port: try again later
            self.process = None
            self._exited(time.monotonic(), f"could not start: {exc}")

    def _exited(self, now: float, why: str) -> float:
        if self.tail is not None:
            self.tail.wait()
        if self.log_file is not None:
            why += f"; see {self.log_file}"
        elif self.tail is not None and self.tail.last:
            why += f"; last stderr line: {_reason(self.tail.last)}"
        pause = self.backoff.pause_after(now - self.started_at)
        self.restart_at = now + pause
        self.last_exit = why
        log.warning(f"{self.name} stopped ({self.last_exit}); restarting in {pause:.1f} s")
        return self.restart_at

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def supervise(processes: list[Supervised], stopping: Callable[[], bool], tick: float = 0.2) -> None:
    """Keep every process running until ``stopping()``; each restarts on its own pace."""
    while not stopping():
        now = time.monotonic()
        for p in processes:
            p.check(now)
        time.sleep(tick)


def _embedded(
    name: str, start: Callable[[], Server], log_file: Path, servers: dict[str, Server]
) -> Supervised:
    """An embedded server restarted on the same port and data, so no URL changes."""

    def launch() -> subprocess.Popen[bytes]:
        servers[name] = start()
        return servers[name].process

    return Supervised(name, launch, log_file=log_file)


def _service(
    service: str, env: dict[str, str], name: str = "", on_exit: Callable[[int], None] | None = None
) -> Supervised:
    def launch() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", f"services.{service}"]
        return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)

    return Supervised(name or service, launch, on_exit=on_exit)


def _fresh_metrics_dir(directory: Path) -> Path:
    """The directory where gateway workers keep their metrics, emptied: prometheus_client's files from
    an earlier run would add the counts of processes long gone."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _gateway_workers(env: dict[str, str], count: int, data_dir: Path) -> list[Supervised]:
    """``count`` gateway processes on the one port; several share it (SO_REUSEPORT) and their metrics
    (multiprocess mode: any worker's /metrics answers the sum of all)."""
    if count == 1:
        return [_service("gateway", {**env, "USAGEHUB_HTTP_WORKERS": "1"})]
    from prometheus_client.multiprocess import mark_process_dead

    metrics_dir = _fresh_metrics_dir(data_dir / "gateway-metrics")
    env = {**env, "USAGEHUB_HTTP_WORKERS": str(count), MULTIPROCESS_DIR_ENV: str(metrics_dir)}

    def on_exit(pid: int) -> None:
        # Its live gauges (WebSocket clients) leave the sum; its counters stay in it, as they must.
        mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]  # unannotated upstream

    return [_service("gateway", env, f"gateway-{i}", on_exit) for i in range(1, count + 1)]


def _child_env(settings: Settings, nats_url: str, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    # Children write to a pipe: "auto" would make them choose JSON where we have a terminal.
    log_format = settings.log_format
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    env.update(USAGEHUB_NATS_URL=nats_url, USAGEHUB_DATABASE_URL=database_url, USAGEHUB_LOG_FORMAT=log_format)
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


def _announce_when_ready(http_url: str, stopping: Callable[[], bool]) -> None:
    """ "usagehub is up at …" once the gateway's /readyz says so, not when the processes start."""
    import urllib.error
    import urllib.request

    while not stopping():
        try:
            with urllib.request.urlopen(http_url + "readyz", timeout=2) as answer:
                if answer.status == 200:
                    log.info(f"usagehub is up at {http_url}", url=http_url)
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)


def _hold_data_dir(data_dir: Path) -> IO[str] | None:
    """An exclusive lock on the data dir for as long as this ``up`` runs (the OS drops it when the
    process dies, however it dies); None if another ``up`` holds it."""
    import fcntl

    handle = (data_dir / "up.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _port_taken(host: str, port: int) -> str | None:
    """Why the gateway could not listen on host:port, or None if it can."""
    import socket

    try:
        with socket.create_server((host, port), reuse_port=False) as _:
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


# What an unset admin secret turns off (docs/api.md, each API's write routes).
NO_SECRET = (
    "USAGEHUB_SECRET_KEY is not set: the admin routes are off (devices and their tokens, links,"
    " media-usage writes, orgs and API keys, contribution records); reads and beats with existing"
    " tokens still work. Set one with: export USAGEHUB_SECRET_KEY=$(openssl rand -hex 32)"
)


def up(settings: Settings) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _hold_data_dir(data_dir)
    if lock is None:
        running = read_running(data_dir)
        holder = f" (pid {running.pid}, {running.http_url})" if running is not None else ""
        print(
            f"usagehub: the data dir {data_dir} is in use by another usagehub up{holder}; stop it"
            " first, or give this one its own USAGEHUB_DATA_DIR",
            file=sys.stderr,
        )
        return 1
    try:
        taken = _port_taken(settings.http_host, settings.http_port)
        if taken is not None:
            print(
                f"usagehub: cannot listen on {settings.http_host}:{settings.http_port} ({taken});"
                " stop what uses it, or choose another port with USAGEHUB_HTTP_PORT",
                file=sys.stderr,
            )
            return 1
        if not settings.secret_key:
            log.warning(NO_SECRET)
        return _run(settings, data_dir)
    finally:
        lock.close()


def _run(settings: Settings, data_dir: Path) -> int:
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: dict[str, Server] = {}
    embedded: list[Supervised] = []
    children: list[Supervised] = []
    gateways: list[Supervised] = []
    others: list[Supervised] = []
    try:
        nats_url, database_url = settings.nats_url, settings.database_url
        if not nats_url:
            port, nats_log = free_port(), data_dir / "nats.log"
            embedded.append(
                _embedded(
                    "nats", lambda: start_nats(data_dir / "nats", port, log_file=nats_log), nats_log, servers
                )
            )
            embedded[-1].start()
            nats_url = servers["nats"].url
            log.info("embedded nats started", url=nats_url, data=str(data_dir / "nats"))
        if not database_url:
            pg_port, pg_dir = free_port(), data_dir / "postgres"
            embedded.append(
                _embedded(
                    "postgres", lambda: start_postgres(pg_dir, pg_port), pg_dir / "postgres.log", servers
                )
            )
            embedded[-1].start()
            database_url = servers["postgres"].url
            log.info("embedded postgres started", url=redact_url(database_url), data=str(pg_dir))
        _migrate(database_url)
        env = _child_env(settings, nats_url, database_url)
        workers = gateway_workers(settings.http_workers, usable_cores(), sys.platform == "linux")
        for service in SERVICES:
            child_env = dict(env)
            if "nats" in servers:  # our own server: each service connects as its own role
                child_env = _as_user(child_env, service, servers["nats"].password_files[service])
            if service == "gateway":
                gateways = _gateway_workers(child_env, workers, data_dir)
            else:
                child_env["USAGEHUB_METRICS_PORT"] = str(free_port())
                others.append(_service(service, child_env))
        children = [*others, *gateways]
        log.info("gateway workers", workers=workers, port=settings.http_port)
        for child in children:
            child.start()
        http_url = f"http://{settings.http_host}:{settings.http_port}/"
        running = RunningSystem(
            pid=os.getpid(),
            http_url=http_url,
            nats_url=nats_url,
            database_url=database_url,
            password_files={u: str(f) for u, f in servers["nats"].password_files.items()}
            if "nats" in servers
            else {},
        )
        log.info("running system written for usagehub commands", path=str(write_running(data_dir, running)))
        threading.Thread(target=_announce_when_ready, args=(http_url, lambda: stopping), daemon=True).start()
        supervise([*embedded, *children], lambda: stopping)
        return 0
    finally:
        with contextlib.suppress(OSError):
            remove_running(data_dir, os.getpid())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The gateway workers first: their last flush of the API calls they metered must still find
        # ingest.
        for group in (gateways, others):
            for child in group:
                if child.process is not None and child.process.poll() is None:
                    child.process.terminate()
            for child in group:
                child.stop()
        for name in reversed(list(servers)):
            servers[name].stop()
        log.info("usagehub stopped")
