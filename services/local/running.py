"""What ``usagehub up`` leaves in its data dir so that every other ``usagehub`` command reaches the
running system: the servers' URLs (the embedded ones listen on random ports) and, per NATS user,
the file holding its password. The file is the user's alone (mode 0600) and is removed on stop."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import Settings, SettingsError

RUNNING_FILE = "running.json"


@dataclass(frozen=True, slots=True)
class RunningSystem:
    pid: int
    http_url: str
    nats_url: str
    database_url: str = field(repr=False)
    # NATS user -> the file with its password; empty when the NATS server has no users.
    password_files: dict[str, str] = field(default_factory=dict)


def write_running(data_dir: Path, running: RunningSystem) -> Path:
    """Replace the file atomically, created 0600 before anything is written to it."""
    path = data_dir / RUNNING_FILE
    partial = data_dir / (RUNNING_FILE + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(running), f, indent=2)
        f.write("\n")
    partial.replace(path)
    return path


def remove_running(data_dir: Path, pid: int) -> None:
    """Remove the file if it is still this process's (a second ``up`` may have replaced it)."""
    found = read_running(data_dir)
    if found is not None and found.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / RUNNING_FILE).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_running(data_dir: Path) -> RunningSystem | None:
    """The system ``usagehub up`` runs from ``data_dir``; None if none does (a file left by a
    ``usagehub up`` that was killed names a process that is gone)."""
    try:
        raw = json.loads((data_dir / RUNNING_FILE).read_text())
        running = RunningSystem(
            pid=int(raw["pid"]),
            http_url=str(raw["http_url"]),
            nats_url=str(raw["nats_url"]),
            database_url=str(raw["database_url"]),
            password_files={str(k): str(v) for k, v in dict(raw.get("password_files", {})).items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return running if _alive(running.pid) else None


def reach_running(settings: Settings, user: str) -> Settings:
    """``settings`` as given where the environment names the servers; otherwise the servers of the
    ``usagehub up`` running from the data dir, connecting to NATS as ``user`` (the role whose rights
    the command needs)."""
    if settings.nats_url and settings.database_url:
        return settings
    running = read_running(settings.data_dir)
    if running is None:
        return settings
    changes: dict[str, str] = {}
    if not settings.nats_url:
        changes["nats_url"] = running.nats_url
        password_file = running.password_files.get(user)
        if password_file is not None and not settings.nats_user:
            changes["nats_user"] = user
            changes["nats_password"] = Path(password_file).read_text().rstrip("\r\n")
    if not settings.database_url:
        changes["database_url"] = running.database_url
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


NOTHING_RUNNING = (
    " (no `usagehub up` runs from the data dir USAGEHUB_DATA_DIR, default .usagehub; start one with"
    " `make up`, or name the servers in the environment)"
)


def require_running(settings: Settings, *, nats: bool = True, database: bool = True) -> Settings:
    """``settings`` if they name the servers a command needs; otherwise SettingsError says which
    is missing and how to start a system the command would find."""
    missing = []
    if nats and not settings.nats_url:
        missing.append("USAGEHUB_NATS_URL is required")
    if database and not settings.database_url:
        missing.append("USAGEHUB_DATABASE_URL is required")
    if missing:
        raise SettingsError("; ".join(missing) + NOTHING_RUNNING)
    return settings


def running_url(settings: Settings) -> str:
    """Where the gateway of the running system answers (the configured address if none runs)."""
    running = read_running(settings.data_dir)
    if running is not None:
        return running.http_url
    return f"http://{settings.http_host}:{settings.http_port}/"
