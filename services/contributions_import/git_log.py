"""Reading ``git log`` output (pure): the format asked for, an incremental parser, and Stackalytics'
definitions of a commit record (message patterns, which commits count, and how fields are cleaned).

``GIT_LOG_ARGS`` are Stackalytics' own choices (``--no-merges``, ``-M``, author e-mail and date) with
``--numstat`` in place of ``--shortstat``: the same totals, but per file, so nothing is parsed from
prose. Each commit is printed as a NUL, six NUL-terminated header fields, then its numstat lines; the
numstat lines never contain a NUL, so the next NUL starts the next commit whatever the messages hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.ingest.contributions import MAX_EMAIL, MAX_IDS, MAX_MESSAGE, MAX_NAME, MAX_SUBJECT
from shared.commands.contributions import CommitData
from shared.contribution_sums import MAX_DATE, MIN_DATE

HEADER_FIELDS = ("%H", "%at", "%an", "%ae", "%s", "%b")
FORMAT = "%x00" + "".join(f + "%x00" for f in HEADER_FIELDS)
# What ``git log`` is run with (``git -c log.showRoot=true log <these> <revision>``): the root commit's
# files count, renames are detected, and no local diff or text conversion changes the numbers.
GIT_LOG_ARGS = (
    "--no-merges",
    "-M",
    "--numstat",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--encoding=UTF-8",
    "--reverse",
    f"--format={FORMAT}",
)


# Stackalytics' vcs.py MESSAGE_PATTERNS, applied as it does to the message body (%b).
BUG = re.compile(r"bug[\s#:]*(?P<id>\d+)", re.IGNORECASE)
BLUEPRINT = re.compile(r"\b(?:blueprint|bp)\b[ \t]*[#:]?[ \t]*(?P<id>[a-z0-9-]+)", re.IGNORECASE)
CHANGE_ID = re.compile(r"Change-Id: (?P<id>I[0-9a-f]{40})", re.IGNORECASE)
# Stackalytics' utils.keep_safe_chars, used on author e-mails.
UNSAFE_EMAIL_CHARS = re.compile(r"[^\x21-\x7e\x80-\xff]+")
# Stackalytics ignores the machine-made submodule bumps.
IGNORED_SUBJECTS = frozenset({"Update git submodules"})


@dataclass(frozen=True, slots=True)
class GitCommit:
    commit_id: str
    date: int
    author_name: str
    author_email: str
    subject: str
    message: str
    files_changed: int
    lines_added: int
    lines_deleted: int


def numstat_totals(block: str) -> tuple[int, int, int]:
    """(files, added, deleted) of a commit's numstat lines; a binary file is a file with 0 lines."""
    files = added = deleted = 0
    for line in block.split("\n"):
        if not line:
            continue
        a, d, _path = line.split("\t", 2)
        files += 1
        added += 0 if a == "-" else int(a)
        deleted += 0 if d == "-" else int(d)
    return files, added, deleted


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class GitLogParser:
    """Feed it ``git log`` output in chunks of any size; it yields each commit once it is complete."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[GitCommit]:
        self._buffer += chunk
        return self._parse(final=False)

    def close(self) -> list[GitCommit]:
        commits = self._parse(final=True)
        if self._buffer:
            raise ValueError("git log output ended inside a commit")
        return commits

    def _parse(self, *, final: bool) -> list[GitCommit]:
        commits: list[GitCommit] = []
        buf, pos = self._buffer, 0
        while pos < len(buf):
            parsed = _commit_at(buf, pos, final=final)
            if parsed is None:
                break
            commit, pos = parsed
            commits.append(commit)
        self._buffer = buf[pos:]  # one copy per chunk, not per commit
        return commits


def _commit_at(buf: bytes, start: int, *, final: bool) -> tuple[GitCommit, int] | None:
    """The commit starting at ``start`` and where the next one starts, or None if it is incomplete."""
    if buf[start] != 0:
        raise ValueError(f"git log output out of step at {buf[start : start + 40]!r}")
    fields = []
    pos = start + 1
    for _ in HEADER_FIELDS:
        end = buf.find(b"\0", pos)
        if end < 0:
            return None
        fields.append(buf[pos:end])
        pos = end + 1
    end = buf.find(b"\0", pos)
    if end < 0:
        if not final:
            return None
        end = len(buf)
    files, added, deleted = numstat_totals(_decode(buf[pos:end]))
    commit_id, at, name, email, subject, message = (_decode(f) for f in fields)
    return GitCommit(commit_id, int(at), name, email, subject, message, files, added, deleted), end


def parse_git_log(output: bytes) -> list[GitCommit]:
    parser = GitLogParser()
    return parser.feed(output) + parser.close()


def _first_each(pattern: re.Pattern[str], message: str) -> list[str]:
    return list(dict.fromkeys(m.group("id") for m in pattern.finditer(message)))[:MAX_IDS]


def _clean(value: str, limit: int, allowed: str = "") -> str:
    """Control characters (which the API could not show, nor Postgres store) become U+FFFD."""
    cleaned = "".join("\ufffd" if (ord(c) < 32 or ord(c) == 127) and c not in allowed else c for c in value)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _email(commit: GitCommit) -> str:
    return UNSAFE_EMAIL_CHARS.sub("", commit.author_email).lower()[:MAX_EMAIL]


def skip_reason(commit: GitCommit) -> str | None:
    """Why Stackalytics (or the API's date range) leaves a commit out, if it does."""
    if commit.subject in IGNORED_SUBJECTS:
        return "a submodule update"
    if not _email(commit):
        return "no author e-mail"
    if not MIN_DATE <= commit.date < MAX_DATE:
        return f"author date {commit.date} outside 1900-2199"
    return None


def commit_data(commit: GitCommit) -> CommitData:
    """The record Stackalytics makes of a commit (one ``skip_reason`` does not leave out)."""
    message = commit.message
    return CommitData(
        commit_id=commit.commit_id,
        author_name=_clean(commit.author_name, MAX_NAME),
        author_email=_email(commit),
        date=commit.date,
        subject=_clean(commit.subject, MAX_SUBJECT),
        message=_clean(message, MAX_MESSAGE, allowed="\t\n\r"),
        files_changed=commit.files_changed,
        lines_added=commit.lines_added,
        lines_deleted=commit.lines_deleted,
        change_id=_first_each(CHANGE_ID, message),
        bug_id=_first_each(BUG, message),
        blueprint_id=_first_each(BLUEPRINT, message),
    )
