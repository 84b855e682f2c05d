"""Git repositories the contributions tests build, and the figures plain ``git log`` gives for them
(parsed here with nothing from the importer)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from shared.db import checkpoints
from tests.integration.helpers import last_sequence


def git(repo: Path, *args: str, author: tuple[str, str] | None = None, date: int | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    if author is not None:
        env |= {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]}
        env |= {"GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1]}
    if date is not None:
        env |= {"GIT_AUTHOR_DATE": f"{date} +0000", "GIT_COMMITTER_DATE": f"{date} +0000"}
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, check=True)
    return done.stdout.decode()


def revision_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "--no-merges", "HEAD"))


@dataclass(frozen=True)
class LogEntry:
    commit_id: str
    email: str
    name: str
    date: int
    files: int
    added: int
    deleted: int


def plain_numstat(repo: Path, revision: str = "HEAD") -> dict[str, LogEntry]:
    """``git log --no-merges -M --numstat``, one line per file, summed per commit."""
    out = git(repo, "log", "--no-merges", "-M", "--numstat", "--format=@@@%H|%ae|%an|%at", revision)
    entries: dict[str, LogEntry] = {}
    current: list[str] = []
    files = added = deleted = 0

    def close() -> None:
        if current:
            sha, email, name, at = current
            entries[sha] = LogEntry(sha, email.lower(), name, int(at), files, added, deleted)

    for line in out.splitlines():
        if line.startswith("@@@"):
            close()
            current = line[3:].split("|")
            files = added = deleted = 0
        elif line.strip():
            a, d, _ = line.split("\t", 2)
            files += 1
            added += 0 if a == "-" else int(a)
            deleted += 0 if d == "-" else int(d)
    close()
    return entries


def plain_shortstat(repo: Path) -> dict[str, tuple[int, int, int]]:
    """``git log --no-merges -M --shortstat``: what Stackalytics parsed ("3 files changed, ...")."""
    out = git(repo, "log", "--no-merges", "-M", "--shortstat", "--format=@@@%H")
    stats: dict[str, tuple[int, int, int]] = {}
    sha = ""
    for line in out.splitlines():
        if line.startswith("@@@"):
            sha = line[3:]
            stats[sha] = (0, 0, 0)
        elif "changed" in line:
            parts = [p.strip() for p in line.split(",")]
            files = int(parts[0].split()[0])
            added = next((int(p.split()[0]) for p in parts if "insertion" in p), 0)
            deleted = next((int(p.split()[0]) for p in parts if "deletion" in p), 0)
            stats[sha] = (files, added, deleted)
    return stats


def fast_import_repo(repo: Path, commits: int, authors: int = 20, start: int = 1_400_000_000) -> None:
    """A linear history of ``commits`` commits in one ``git fast-import`` run (seconds, not minutes)."""
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    lines: list[bytes] = []
    for i in range(commits):
        a = i % authors
        body = f"Change {i}\n\nCloses-Bug: #{100000 + i}\n".encode()
        content = "".join(f"line {i} {j}\n" for j in range(i % 7 + 1)).encode()
        lines += [
            b"commit refs/heads/main",
            f"author Dev {a} <dev{a}@example.org> {start + i * 600} +0000".encode(),
            f"committer Dev {a} <dev{a}@example.org> {start + i * 600} +0000".encode(),
            f"data {len(body)}".encode(),
            body,
            f"M 644 inline f{i % 50}.txt".encode(),
            f"data {len(content)}".encode(),
            content,
            b"",
        ]
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=b"\n".join(lines) + b"\n", check=True
    )
    git(repo, "checkout", "-q", "main")


async def projected(conn: object, js: JetStreamContext) -> int:
    """Wait (up to a minute) until the contributions projection has every contribution event."""
    last = await last_sequence(js, "usagehub.events.contributions.>")
    for _ in range(1200):
        position = (await checkpoints(conn)).get("contributions", 0)  # type: ignore[arg-type]
        if position >= last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError("the contributions projection did not catch up")
