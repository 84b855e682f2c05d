"""``usagehub import git`` and ``usagehub import directory``: read, cut into commands that fit a NATS
message, and send them to ingest as the gateway would, with a progress bar on long imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.contributions_import.git_history import (
    check_repository,
    count_commits,
    current_branch,
    read_commits,
)
from services.contributions_import.git_log import commit_data, skip_reason
from services.progress import ProgressBar
from shared.bus import COMMANDS_PREFIX
from shared.commands import Command, Reply, encoder, reply_decoder
from shared.commands.contributions import (
    CommitData,
    ImportCommits,
    SaveDirectory,
    directory_entries,
    split_directory,
)
from shared.logging import new_request_id

# NATS refuses messages over 1 MiB by default; stay well below, whatever the messages hold.
MAX_COMMAND_BYTES = 512 * 1024
MAX_BATCH = 1000


class ImportFailed(Exception):
    """Ingest refused or could not be reached; the message says why."""


async def send(nc: NATS, cmd: Command, command_timeout: float) -> Reply:
    cmd = msgspec.structs.replace(cmd, request_id=new_request_id())
    try:
        msg = await nc.request(
            COMMANDS_PREFIX + type(cmd).__name__, encoder.encode(cmd), timeout=command_timeout
        )
    except NoRespondersError:
        raise ImportFailed("the ingest service is not running") from None
    except NatsTimeout:
        raise ImportFailed("the ingest service did not answer in time") from None
    reply = reply_decoder.decode(msg.data)
    if reply.status >= 400:
        raise ImportFailed(f"{reply.error} ({reply.status})")
    return reply


@dataclass
class GitImport:
    module: str
    branch: str
    commits: int = 0
    appended: int = 0
    already_imported: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "branch": self.branch,
            "commits": self.commits,
            "appended": self.appended,
            "already_imported": self.already_imported,
            "skipped": self.skipped,
        }


async def import_git(
    nc: NATS, path: Path, module: str, branch: str | None, progress: ProgressBar, command_timeout: float
) -> GitImport:
    """Send every non-merge commit of ``branch`` (HEAD by default) in batches; ingest appends the
    ones it does not hold yet, so a second run appends only what is new."""
    await check_repository(path)
    revision = branch or "HEAD"
    result = GitImport(module, branch or await current_branch(path))
    total = await count_commits(path, revision)
    batch: list[CommitData] = []
    size = 0

    async def flush() -> None:
        nonlocal batch, size
        if batch:
            reply = await send(
                nc, ImportCommits(module=module, branch=result.branch, commits=batch), command_timeout
            )
            result.appended += int(reply.result.get("accepted", 0))
            result.already_imported += int(reply.result.get("duplicates", 0))
        batch, size = [], 0

    progress.update(0, total)
    async for commits in read_commits(path, revision):
        for commit in commits:
            result.commits += 1
            reason = skip_reason(commit)
            if reason is not None:
                result.skipped[commit.commit_id] = reason
                continue
            data = commit_data(commit)
            data_size = len(encoder.encode(data))
            if batch and (len(batch) >= MAX_BATCH or size + data_size > MAX_COMMAND_BYTES):
                await flush()
                progress.update(result.commits - 1, total)
            batch.append(data)
            size += data_size
    await flush()
    progress.finish(result.commits)
    return result


def read_directory_file(path: Path) -> SaveDirectory:
    """A Stackalytics ``default_data.json``-shaped file as one command; ValueError says what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cmd = msgspec.json.decode(raw, type=SaveDirectory)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    # Only usagehub sets a command's envelope; a file naming one is not obeyed.
    return msgspec.structs.replace(cmd, idempotency_key=None, request_id=None, origin="http")


async def import_directory(
    nc: NATS, cmd: SaveDirectory, progress: ProgressBar, command_timeout: float
) -> dict[str, int]:
    saved = unchanged = sent = 0
    progress.update(0, directory_entries(cmd))
    for part in split_directory(cmd, MAX_COMMAND_BYTES):
        reply = await send(nc, part, command_timeout)
        saved += int(reply.result.get("saved", 0))
        unchanged += int(reply.result.get("unchanged", 0))
        sent += directory_entries(part)
        progress.update(sent)
    progress.finish(sent)
    return {"saved": saved, "unchanged": unchanged}
