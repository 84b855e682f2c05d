"""The embedded Postgres of ``usagehub up``: a password (scram-sha-256) kept 0600 in its data dir and
the same on every start, and, as root, no change to anything outside the data dir."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.local import servers
from services.local.servers import UID_IN_NAMESPACE, start_postgres


def current_user(url: str) -> str:
    # start_postgres runs its own event loop: these tests are synchronous.
    async def query() -> str:
        conn = await asyncpg.connect(url)
        try:
            return str(await conn.fetchval("SELECT current_user"))
        finally:
            await conn.close()

    return asyncio.run(query())


def without_password(url: str, password: str | None) -> str:
    parts = urlsplit(url)
    userinfo = "postgres" + (f":{password}" if password else "")
    return parts._replace(netloc=f"{userinfo}@{parts.hostname}:{parts.port}").geturl()


def test_it_takes_its_password_and_nothing_else(tmp_path: Path) -> None:
    server = start_postgres(tmp_path / "pg", database="usagehub")
    try:
        assert current_user(server.url) == "postgres"
        for wrong in (None, "not-it"):
            with pytest.raises(asyncpg.InvalidPasswordError):
                current_user(without_password(server.url, wrong))
        first_url = server.url
    finally:
        server.stop()
    password_file = tmp_path / "pg" / "password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert urlsplit(first_url).password == password_file.read_text().strip()

    again = start_postgres(tmp_path / "pg", database="usagehub")
    try:
        assert urlsplit(again.url).password == urlsplit(first_url).password
        assert current_user(again.url) == "postgres"
    finally:
        again.stop()


def _picture_outside(data: Path) -> dict[str, object]:
    """Modes and owners of every folder above the data dir, and the system's users and groups."""
    folders = {str(p): (p.stat().st_mode, p.stat().st_uid) for p in data.resolve().parents}
    accounts = {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in ("/etc/passwd", "/etc/group")}
    return {"folders": folders, "accounts": accounts}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused by Postgres")
def test_as_root_it_runs_in_a_user_namespace_and_changes_nothing_outside(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "er" / "pg"
    data.parent.mkdir(parents=True)
    (tmp_path / "deep").chmod(0o700)
    before = _picture_outside(data)
    server = start_postgres(data, database="usagehub")
    try:
        # The process we started is postgres itself (unshare execs), root on the host, and an
        # ordinary user inside its namespace.
        pid = server.process.pid
        assert Path(f"/proc/{pid}/exe").resolve().name == "postgres"
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == [str(UID_IN_NAMESPACE), "0", "1"]
        assert current_user(server.url) == "postgres"
    finally:
        server.stop()
    assert _picture_outside(data) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a user namespace")
def test_as_root_without_unshare_it_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="as an ordinary user, or set USAGEHUB_DATABASE_URL"):
        servers._as_unprivileged(["postgres"])


def test_a_data_dir_made_with_trust_auth_gets_the_password(tmp_path: Path) -> None:
    """Data dirs from before passwords were used allowed anyone local in: the next start closes that."""
    data = tmp_path / "pg"
    data.mkdir(mode=0o700)
    initdb = [str(servers._postgres_bin() / "initdb"), "-D", str(data / "data"), "--auth=trust"]
    subprocess.run(servers._as_unprivileged([*initdb, "-U", "postgres"]), check=True, capture_output=True)
    server = start_postgres(data, database="usagehub")
    try:
        assert current_user(server.url) == "postgres"
        with pytest.raises(asyncpg.InvalidPasswordError):
            current_user(without_password(server.url, None))
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its parent has not reaped it


def test_it_never_outlives_its_parent(tmp_path: Path) -> None:
    """The parent-death signal reaches postgres through unshare (as root) too: a supervisor killed
    with SIGKILL leaves no postgres behind."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from services.local.servers import start_postgres;"
            f" print(start_postgres(Path({str(tmp_path / 'pg')!r})).process.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert parent.stdout is not None
    with parent.stdout:
        postgres = int(parent.stdout.readline())
    assert _alive(postgres)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while _alive(postgres) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(postgres)
