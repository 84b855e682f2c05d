"""``usagehub import git`` on a repository built here (merges, renames, binary files, trailers, two
authors with one name), every figure checked against plain ``git log``; importing again appends
nothing, even past JetStream's duplicate window; this project's own history imports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from services.gateway import keys
from shared.bus import EVENTS_STREAM
from tests.conftest import Services
from tests.integration.contributions_repos import (
    git,
    plain_numstat,
    plain_shortstat,
    projected,
    revision_count,
)
from tests.integration.helpers import last_sequence, run_usagehub

Client = TestClient[web.Request, web.Application]
SAME_1 = ("Sam Same", "same1@example.org")
SAME_2 = ("Sam Same", "Same2@Example.org")
OTHER = ("Olga Other", "olga@example.org")
T0 = 1_400_000_000
CHANGE_ID = "I96d1ecd3f0069295e27127239c83afc32673ffec"
# This project's own repository (a work tree: its .git may be a file).
ROOT = Path(__file__).resolve().parents[2]


def build_repo(repo: Path) -> None:
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    (repo / "a.txt").write_text("".join(f"line {i}\n" for i in range(10)))
    (repo / "logo.bin").write_bytes(bytes(range(256)) * 4)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "Initial files", author=SAME_1, date=T0)
    # A rename with a change (+2 -1), and a change to the binary file.
    git(repo, "mv", "a.txt", "c.txt")
    lines = (repo / "c.txt").read_text().splitlines(keepends=True)
    (repo / "c.txt").write_text("".join([*lines[1:], "new 1\n", "new 2\n"]))
    (repo / "logo.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    git(repo, "commit", "-qam", "Rename a to c", author=SAME_2, date=T0 + 100)
    git(repo, "checkout", "-qb", "side")
    (repo / "side.txt").write_text("side\n")
    git(repo, "add", "side.txt")
    git(repo, "commit", "-qm", "Side work", author=OTHER, date=T0 + 200)
    git(repo, "checkout", "-q", "main")
    (repo / "c.txt").write_text((repo / "c.txt").read_text() + "trailer work\n")
    message = (
        "Add the trailers\n\nBody text.\n\nCloses-Bug: #1234567\nPartial-Bug: #2345678\n"
        f"Related-Bug: #3456789\nImplements: blueprint shiny-feature\nChange-Id: {CHANGE_ID}\n"
    )
    git(repo, "commit", "-qam", message, author=SAME_1, date=T0 + 300)
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge side", "side", author=OTHER, date=T0 + 400)
    # A pure rename, a deletion and an empty commit.
    git(repo, "mv", "side.txt", "moved.txt")
    git(repo, "commit", "-qm", "Move side", author=SAME_2, date=T0 + 500)
    git(repo, "rm", "-q", "logo.bin")
    git(repo, "commit", "-qm", "Drop the logo", author=OTHER, date=T0 + 600)
    git(repo, "commit", "-q", "--allow-empty", "-m", "Nothing at all", author=SAME_1, date=T0 + 700)


async def activity(client: Client, query: str) -> list[dict[str, Any]]:
    """Every record, walking the pages three at a time."""
    out: list[dict[str, Any]] = []
    while True:
        resp = await client.get(f"/api/1.0/activity?release=all&page_size=3&start_record={len(out)}{query}")
        assert resp.status == 200, await resp.text()
        page = (await resp.json())["activity"]
        out += page
        if len(page) < 3:
            return out


async def stats(client: Client, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return {row["id"]: row for row in (await resp.json())["stats"]}


async def test_every_figure_is_what_git_log_says(
    client: Client, services: Services, js: JetStreamContext, tmp_path: Path
) -> None:
    repo = tmp_path / "demo"
    build_repo(repo)
    code, out, err = await run_usagehub(
        "import", "git", str(repo), "--module", "demo", "--progress", settings=services.settings
    )
    assert code == 0, err
    expected = plain_numstat(repo)
    assert len(expected) == 7  # nine commits, one of them a merge... and the merge is not a commit
    summary = json.loads(out)
    assert summary == {
        "module": "demo",
        "branch": "main",
        "commits": 7,
        "appended": 7,
        "already_imported": 0,
        "skipped": {},
    }
    assert err.rstrip("\n").splitlines()[-1].startswith("import demo [")
    assert " 100% 7/7 commits  " in err
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await projected(conn, js)
    finally:
        await conn.close()

    records = await activity(client, "")
    assert sorted(r["commit_id"] for r in records) == sorted(expected)
    assert [r["date"] for r in records] == sorted((e.date for e in expected.values()), reverse=True)
    shortstat = plain_shortstat(repo)
    for r in records:
        e = expected[r["commit_id"]]
        figures = (r["files_changed"], r["lines_added"], r["lines_deleted"])
        assert figures == (e.files, e.added, e.deleted) == shortstat[e.commit_id], r["subject"]
        assert r["loc"] == e.added + e.deleted
        assert (r["author_email"], r["author_name"], r["date"]) == (e.email, e.name, e.date)
        assert (r["module"], r["branches"], r["record_type"], r["primary_key"]) == (
            "demo",
            "main",
            "commit",
            e.commit_id,
        )
    rename = next(r for r in records if r["subject"] == "Rename a to c")
    assert (rename["files_changed"], rename["lines_added"], rename["lines_deleted"]) == (2, 2, 1)
    assert next(r for r in records if r["subject"] == "Move side")["files_changed"] == 1
    assert next(r for r in records if r["subject"] == "Nothing at all")["files_changed"] == 0
    trailers = next(r for r in records if r["subject"] == "Add the trailers")
    assert trailers["change_id"] == [CHANGE_ID]
    assert trailers["bug_id"] == ["1234567", "2345678", "3456789"]
    assert trailers["blueprint_id"] == ["demo:shiny-feature"]
    assert trailers["message"].startswith("Body text.\n")

    # Two authors with one name are two engineers: identities are e-mails, not names.
    by_email: dict[str, list[int]] = {}
    for e in expected.values():
        count_loc = by_email.setdefault(e.email, [0, 0])
        count_loc[0] += 1
        count_loc[1] += e.added + e.deleted
    commits = await stats(client, "/api/1.0/stats/engineers?release=all")
    loc = await stats(client, "/api/1.0/stats/engineers?release=all&metric=loc")
    assert {k: v["metric"] for k, v in commits.items()} == {k: v[0] for k, v in by_email.items()}
    assert {k: v["metric"] for k, v in loc.items() if v["metric"]} == {
        k: v[1] for k, v in by_email.items() if v[1]
    }
    assert commits["same1@example.org"]["name"] == commits["same2@example.org"]["name"] == "Sam Same"
    modules = await stats(client, "/api/1.0/stats/modules?release=all")
    assert modules == {"demo": {"metric": 7, "id": "demo", "name": "demo"}}
    companies = await stats(client, "/api/1.0/stats/companies?release=all&metric=loc")
    assert companies["*independent"]["metric"] == sum(e.added + e.deleted for e in expected.values())


async def test_importing_again_appends_nothing_and_later_only_what_is_new(
    client: Client, services: Services, js: JetStreamContext, tmp_path: Path
) -> None:
    repo = tmp_path / "demo"
    build_repo(repo)
    cli = services.settings
    code, _, err = await run_usagehub("import", "git", str(repo), "--module", "demo", settings=cli)
    assert code == 0, err
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await projected(conn, js)
        before = await last_sequence(js, "usagehub.events.contributions.commit")
        code, out, err = await run_usagehub("import", "git", str(repo), "--module", "demo", settings=cli)
        assert code == 0, err
        assert (json.loads(out)["appended"], json.loads(out)["already_imported"]) == (0, 7)
        # Not a terminal: a quick import is one plain progress line, the last one.
        assert err.splitlines() == [err.splitlines()[0]] and " 100% 7/7 commits  " in err, err
        code, _, err = await run_usagehub(
            "import", "git", str(repo), "--module", "demo", "--no-progress", settings=cli
        )
        assert (code, err) == (0, "")
        assert await last_sequence(js, "usagehub.events.contributions.commit") == before

        # Past JetStream's duplicate window only the read model can say what the stream holds.
        info = await js.stream_info(EVENTS_STREAM)
        info.config.duplicate_window = 1.0
        await js.update_stream(info.config)
        (repo / "new.txt").write_text("one\ntwo\n")
        git(repo, "add", "new.txt")
        git(repo, "commit", "-qm", "Later work", author=OTHER, date=T0 + 5000)
        code, out, err = await run_usagehub("import", "git", str(repo), "--module", "demo", settings=cli)
        assert code == 0, err
        assert (json.loads(out)["appended"], json.loads(out)["already_imported"]) == (1, 7)
        await projected(conn, js)
        count = await conn.fetchval("SELECT count(*) FROM contribution_records WHERE record_type = 'commit'")
        assert count == 8
        info = await js.stream_info(EVENTS_STREAM, subjects_filter="usagehub.events.contributions.commit")
        assert sum((info.state.subjects or {}).values()) == 8
    finally:
        await conn.close()


async def test_this_projects_own_history_imports(
    client: Client, services: Services, js: JetStreamContext
) -> None:
    root = ROOT
    code, out, err = await run_usagehub(
        "import", "git", str(root), "--module", "usagehub", settings=services.settings
    )
    assert code == 0, err
    result = json.loads(out)
    count = revision_count(root)
    assert result["commits"] == count > 10
    assert result["appended"] == count - len(result["skipped"])
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await projected(conn, js)
    finally:
        await conn.close()
    expected = plain_numstat(root)
    loc = sum(e.added + e.deleted for sha, e in expected.items() if sha not in result["skipped"])
    resp = await client.get("/api/1.0/contribution?release=all&module=usagehub")
    assert (await resp.json())["contribution"]["commit_count"] == result["appended"]
    assert (await resp.json())["contribution"]["loc"] == loc


async def test_a_path_that_is_no_repository_is_a_clear_error(services: Services, tmp_path: Path) -> None:
    cli = services.settings
    code, out, err = await run_usagehub("import", "git", str(tmp_path), "--module", "x", settings=cli)
    assert (code, out) == (2, "") and f"{tmp_path} is not a git repository" in err
    code, _, err = await run_usagehub("import", "git", str(tmp_path / "nope"), "--module", "x", settings=cli)
    assert code == 2 and "is not a git repository" in err
    repo = tmp_path / "r"
    build_repo(repo)
    code, _, err = await run_usagehub(
        "import", "git", str(repo), "--module", "x", "--branch", "no-such", settings=cli
    )
    assert code == 2 and "'no-such' is not a branch or commit" in err
