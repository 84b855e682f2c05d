"""Running ``git`` itself on a repository: checking it is one, counting and streaming its commits.

The ``git`` command is used (not a library) so that the numbers are exactly those of the ``git log``
people compare them with, rename detection included. Local configuration that would change the
output is overridden on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from services.contributions_import.git_log import GIT_LOG_ARGS, GitCommit, GitLogParser

# -c options that pin what a user's or system's configuration could otherwise change.
GIT_CONFIG = (
    "-c",
    "log.showRoot=true",
    "-c",
    "log.showSignature=false",
    "-c",
    "diff.renames=true",
    "-c",
    "color.ui=never",
    "-c",
    "core.quotePath=false",
)
CHUNK = 1 << 20


class GitError(Exception):
    """git refused or failed; the message is what to tell the user."""


def _env() -> dict[str, str]:
    # No prompts, no pager, and messages we can show as they are.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}


async def _git(path: Path, *args: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(path),
            *GIT_CONFIG,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
    except FileNotFoundError:
        raise GitError("the git command is not installed") from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GitError(err.decode(errors="replace").strip() or f"git {args[0]} failed")
    return out.decode(errors="replace").strip()


async def check_repository(path: Path) -> None:
    """Raise GitError with a clear message unless ``path`` is a git repository (bare ones included)."""
    try:
        await _git(path, "rev-parse", "--git-dir")
    except GitError as exc:
        raise GitError(f"{path} is not a git repository ({exc})") from None


async def current_branch(path: Path) -> str:
    """The branch HEAD is on, or ``HEAD`` when it is detached."""
    try:
        return await _git(path, "symbolic-ref", "--short", "-q", "HEAD") or "HEAD"
    except GitError:
        return "HEAD"


async def count_commits(path: Path, revision: str) -> int:
    """How many commits ``read_commits`` will give (merges are not commits here)."""
    try:
        return int(await _git(path, "rev-list", "--count", "--no-merges", revision, "--"))
    except GitError as exc:
        if "unknown revision" in str(exc) or "bad revision" in str(exc) or "ambiguous argument" in str(exc):
            raise GitError(f"{revision!r} is not a branch or commit of {path}") from None
        raise


async def read_commits(path: Path, revision: str) -> AsyncIterator[list[GitCommit]]:
    """The non-merge commits reachable from ``revision``, oldest first, as git prints them."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(path),
        *GIT_CONFIG,
        "log",
        *GIT_LOG_ARGS,
        revision,
        "--",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    parser = GitLogParser()
    read_all = False
    try:
        while chunk := await proc.stdout.read(CHUNK):
            commits = parser.feed(chunk)
            if commits:
                yield commits
        read_all = True
    finally:
        if not read_all and proc.returncode is None:  # the caller stopped early
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        err = await errors
    if proc.returncode != 0:
        raise GitError(err.decode(errors="replace").strip() or "git log failed")
    rest = parser.close()
    if rest:
        yield rest
