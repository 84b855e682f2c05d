"""Every statistic read from the sums equals counting the records, for random selections that reach
every way a query is planned: each grouping, each combination of filters, open and closed spans
ending anywhere in a day (the projection applied straight to Postgres, in uneven batches)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg

from services.gateway import contributions_read as read
from services.projector.contributions import apply_contributions
from shared.db import migrate
from shared.events import new_event_id
from shared.events.contributions import (
    BlueprintDrafted,
    CommitRecorded,
    DirectoryCompanySaved,
    DirectoryModuleGroupSaved,
    DirectoryModuleSaved,
    DirectoryProjectTypeSaved,
    EmailRecorded,
    ReviewMarkRecorded,
)

AT = datetime(2024, 1, 1, tzinfo=UTC)
START, SPAN = 1_356_998_400, 400 * 86_400  # 2013 into 2014: month and year boundaries
MODULES = ["nova", "swift", "glance", "docs"]
USERS = [f"u{i}@c{i % 3}.org" for i in range(7)]
METRIC_KIND = {"commits": "commit", "loc": "commit", "marks": "mark", "emails": "email", "bpd": "bpd"}


def records(rng: random.Random, count: int) -> list[tuple[str, int, str, str, int, int]]:
    """(type, date, module, email, loc, mark value) drawn at random, clustered in time so that many
    share days and months."""
    out = []
    for _ in range(count):
        date = (
            START
            + rng.randrange(SPAN // 86_400) * 86_400
            + rng.choice([0, 1, 43_200, 86_399, rng.randrange(86_400)])
        )
        kind = rng.choice(["commit", "commit", "mark", "mark", "email", "bpd"])
        out.append(
            (kind, date, rng.choice(MODULES), rng.choice(USERS), rng.randrange(50), rng.randrange(-2, 3))
        )
    return out


def event(i: int, r: tuple[str, int, str, str, int, int]) -> object:
    kind, date, module, email, loc, value = r
    common = {"event_id": new_event_id(), "occurred_at": AT, "date": date, "module": module}
    if kind == "commit":
        return CommitRecorded(
            **common, commit_id=f"{i:040x}", branch="master", author_name="A", author_email=email,
            subject="s", message="m", files_changed=1, lines_added=loc, lines_deleted=0,
        )  # fmt: skip
    if kind == "mark":
        return ReviewMarkRecorded(
            **common, primary_key=f"m{i}", review_id=str(i), author_name="A", author_email=email,
            mark_type="Code-Review", value=value,
        )  # fmt: skip
    if kind == "email":
        return EmailRecorded(**common, message_id=f"<{i}>", author_name="A", author_email=email, subject="s")
    return BlueprintDrafted(
        **common, blueprint_id=f"{module}:b{i}", name=f"b{i}", title="t", launchpad_id=email
    )


def expected(
    recs: list[tuple[str, int, str, str, int, int]], sel: read.Selection, metric: str, group: str
) -> list[tuple[str, int]]:
    totals: dict[str, int] = defaultdict(int)
    for kind, date, module, email, loc, _ in recs:
        user = email  # a blueprint's Launchpad id here is the same string
        # By domain (c0.org, c1.org); blueprints have no e-mail, so no domain.
        company = {"c0.org": "C0", "c1.org": "C1"}.get(email.split("@")[1], "*independent")
        if kind == "bpd":
            company = "*independent"
        if kind != METRIC_KIND[metric]:
            continue
        if (sel.lo is not None and date < sel.lo) or (sel.hi is not None and date > sel.hi):
            continue
        if sel.modules is not None and module not in sel.modules:
            continue
        if (sel.module, sel.company, sel.user_id) != (
            sel.module and module,
            sel.company and company,
            sel.user_id and user,
        ):
            continue
        key = {"module": module, "company": company, "user_id": user}[group]
        totals[key] += loc if metric == "loc" else 1
    return sorted(((k, v) for k, v in totals.items() if v), key=lambda kv: (-kv[1], kv[0]))


async def test_statistics_equal_counting_the_records(database_url: str) -> None:
    rng = random.Random(12)
    recs = records(rng, 1500)
    directory = [
        DirectoryModuleSaved(
            event_id=new_event_id(), occurred_at=AT, module=m, organization="os" if m != "docs" else ""
        )
        for m in MODULES
    ]
    directory.append(
        DirectoryModuleGroupSaved(
            event_id=new_event_id(), occurred_at=AT, module_group="store", modules=["swift"]
        )
    )
    directory.append(
        DirectoryProjectTypeSaved(
            event_id=new_event_id(), occurred_at=AT, project_type="os", title="OS", modules=["os"]
        )
    )
    directory.append(
        DirectoryProjectTypeSaved(
            event_id=new_event_id(), occurred_at=AT, project_type="st", title="St", modules=["store"]
        )
    )
    for n in range(2):
        company = DirectoryCompanySaved(
            event_id=new_event_id(), occurred_at=AT, company_name=f"C{n}", domains=[f"c{n}.org"]
        )
        directory.append(company)
    events = [*directory, *(event(i, r) for i, r in enumerate(recs))]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        i = 0
        while i < len(events):
            size = rng.choice([1, 7, 50, 300])
            async with conn.transaction():
                await apply_contributions(conn, [(i + j + 1, e) for j, e in enumerate(events[i : i + size])])  # type: ignore[misc]
            i += size
        sets = {None: None, "os": frozenset({"nova", "swift", "glance"}), "st": frozenset({"swift"})}
        for _ in range(400):
            a, b = sorted(rng.randrange(START - 86_400, START + SPAN + 86_400) for _ in range(2))
            lo = rng.choice([None, a, START + rng.randrange(SPAN // 86_400) * 86_400])
            hi = rng.choice([None, b, b - b % 86_400 - 1])
            ptype = rng.choice([None, None, "os", "st"])
            sel = read.Selection(
                lo=lo,
                hi=hi,
                project_type=ptype,
                modules=sets[ptype],
                module=rng.choice([None, None, *MODULES]),
                company=rng.choice([None, None, "*independent", "C0", "C1"]),
                user_id=rng.choice([None, None, *USERS]),
            )
            metric = rng.choice(list(METRIC_KIND))
            group = rng.choice(["module", "company", "user_id"])
            got = [(r.id, r.metric) for r in await read.stats(conn, sel, metric, group)]
            assert got == expected(recs, sel, metric, group), (sel, metric, group)
            summary = await read.contribution(conn, sel)
            assert summary["commit_count"] == sum(v for _, v in expected(recs, sel, "commits", "module"))
            assert summary["loc"] == sum(v for _, v in expected(recs, sel, "loc", "module"))
            assert sum(summary["marks"].values()) == sum(v for _, v in expected(recs, sel, "marks", "module"))
    finally:
        await conn.close()
