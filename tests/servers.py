"""Where the tests get their NATS and Postgres: URLs from the environment, else an embedded NATS
with the production users plus a test superuser, and Postgres from testcontainers when a Docker
engine answers, or else embedded (the default on a fresh machine)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.local.servers import start_nats, start_postgres

# The tests' own connections: may do anything (delete streams, read every subject).
SUPERUSER = "tests"
# Named publishers, to show each may publish only under its own name.
PUBLISHERS = ("alpha", "beta")


@dataclass(frozen=True)
class NatsServer:
    url: str
    # Every user's password; empty when the server is not ours (USAGEHUB_TEST_NATS_URL).
    passwords: dict[str, str] = field(default_factory=dict)


@functools.cache
def _docker_engine() -> bool:
    """Whether a Docker engine answers on its socket (here only the docker client is installed)."""
    if os.environ.get("USAGEHUB_TEST_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine was named explicitly: let testcontainers use it
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
        except OSError:
            return False


@contextlib.contextmanager
def nats_server() -> Iterator[NatsServer]:
    """A JetStream server for the whole test session, with a user per role.

    ``USAGEHUB_TEST_NATS_URL`` names a server of yours instead: then every connection uses
    ``USAGEHUB_NATS_USER``/``USAGEHUB_NATS_PASSWORD`` from the environment (or none), and the tests
    of the roles' permissions are skipped. Never testcontainers: the server needs the generated users.
    """
    if url := os.environ.get("USAGEHUB_TEST_NATS_URL"):
        yield NatsServer(url)
        return
    store = Path(tempfile.mkdtemp(prefix="usagehub-test-nats-"))
    server = start_nats(store, log_file=store / "nats.log", publishers=PUBLISHERS, superusers=[SUPERUSER])
    try:
        passwords = {user: path.read_text().strip() for user, path in server.password_files.items()}
        yield NatsServer(server.url, passwords)
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A Postgres URL (to a database the tests may create other databases from)."""
    if url := os.environ.get("USAGEHUB_TEST_DATABASE_URL"):
        yield url
        return
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    data = Path(tempfile.mkdtemp(prefix="usagehub-test-pg-"))
    server = start_postgres(data, database="postgres")
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
