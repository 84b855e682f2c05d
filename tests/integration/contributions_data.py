"""The data set the contributions API and rebuild tests share: a directory, commits, marks, emails
and blueprints around the Havana release, loaded through the admin routes and ingest."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from services.contributions_import.importer import send
from services.gateway import keys
from shared.commands.contributions import CommitData, ImportCommits
from tests.conftest import admin

Client = TestClient[web.Request, web.Application]
API = "/api/1.0"
DAY = 86_400
GRIZZLY_END, HAVANA_END, ICEHOUSE_END = 1365033600, 1381968000, 1397692800  # Apr 4, Oct 17 2013, Apr 17 2014
JULY_1 = 1372636800  # 2013-07-01, when John moved from OldCo to NewCo

DIRECTORY = {
    "releases": [
        {"release_name": "Icehouse", "end_date": "2014-Apr-17"},
        {"release_name": "Grizzly", "end_date": "2013-Apr-04"},
        {"release_name": "Havana", "end_date": "2013-Oct-17"},
    ],
    "users": [
        {
            "launchpad_id": "jdoe",
            "user_name": "John Doe",
            "emails": ["john@old.com", "John@New.com"],
            "companies": [
                {"company_name": "NewCo", "end_date": None},
                {"company_name": "OldCo", "end_date": "2013-Jul-01"},
            ],
        },
        {
            "launchpad_id": "jenkins",
            "user_name": "CI",
            "emails": ["jenkins@ci.org"],
            "companies": [{"company_name": "*robots", "end_date": None}],
        },
    ],
    "companies": [
        {"company_name": "OldCo", "domains": ["old.com"]},
        {"company_name": "NewCo", "domains": ["new.com"]},
        {"company_name": "Corp", "domains": ["corp.com"]},
    ],
    "repos": [
        {"module": "nova", "organization": "openstack", "uri": "git://x/nova.git"},
        {"module": "swift", "organization": "openstack"},
        {"module": "docs", "organization": "other"},
    ],
    "module_groups": [{"module_group_name": "storage", "modules": ["swift"]}],
    "project_types": [
        {"id": "openstack", "title": "OpenStack", "modules": ["openstack"]},
        {"id": "storage-type", "title": "Storage", "modules": ["storage"], "child": True},
        {"id": "docs", "title": "Docs", "modules": ["docs"]},
    ],
}


def commit(n: int, email: str, date: int, added: int, deleted: int = 0, name: str = "") -> CommitData:
    return CommitData(
        commit_id=f"{n:040x}",
        author_name=name or email.split("@")[0].title(),
        author_email=email,
        date=date,
        subject=f"Change {n}",
        message=f"Body {n}\n",
        files_changed=1,
        lines_added=added,
        lines_deleted=deleted,
    )


COMMITS = {
    "nova": [
        commit(1, "john@old.com", JULY_1 - 30 * DAY, 8, 2, "John D"),  # havana, OldCo
        commit(2, "john@new.com", JULY_1, 5, 0, "John D"),  # havana, on the day he moved: NewCo
        commit(3, "alice@corp.com", JULY_1 + 31 * DAY, 7),  # havana, nobody mapped her: Corp by domain
        commit(4, "bob@home.net", HAVANA_END + 90 * DAY, 3),  # icehouse
        commit(5, "jenkins@ci.org", JULY_1 + 60 * DAY, 100),  # a robot's: never counted
    ],
    "swift": [commit(6, "bob@home.net", JULY_1 + 70 * DAY, 0)],  # binary only: 0 lines
}
MARK_DATE = JULY_1 + 40 * DAY


def marks() -> list[dict[str, Any]]:
    """Alice: 1 x -2, 3 x -1, 55 x +1, 45 x +2 and 2 x 0 (Stackalytics' example, plus zeros); John 2."""
    out = []
    values = [-2] * 1 + [-1] * 3 + [1] * 55 + [2] * 45 + [0] * 2
    for i, v in enumerate(values):
        out.append(
            {
                "review_id": f"{1000 + i}",
                "author_name": "Alice",
                "author_email": "alice@corp.com",
                "type": "Code-Review",
                "value": v,
                "date": MARK_DATE + i // 10,  # ten marks share each second: paging must still be exact
                "module": "nova",
            }
        )
    for i, v in enumerate([1, -1]):
        out.append(
            {
                "review_id": f"2000{i}",
                "author_name": "John",
                "author_email": "john@new.com",
                "type": "Code-Review",
                "value": v,
                "date": MARK_DATE,
                "module": "swift",
            }
        )
    out.append({**out[-1], "review_id": "3000", "type": "Workflow", "value": 1})  # kept, never counted
    return out


EMAILS = [
    {
        "message_id": "<1@x>",
        "author_name": "Bob",
        "author_email": "bob@home.net",
        "date": JULY_1 + DAY,
        "subject": "Q",
        "module": "nova",
    },
    {
        "message_id": "<2@x>",
        "author_name": "Bob",
        "author_email": "bob@home.net",
        "date": JULY_1 + 2 * DAY,
        "subject": "A",
    },
]
BLUEPRINTS = [
    {
        "name": "shiny",
        "module": "nova",
        "owner": "jdoe",
        "date_created": JULY_1 + 3 * DAY,
        "assignee": "alice-lp",
        "date_completed": JULY_1 + 50 * DAY,
        "implementation_status": "Implemented",
        "title": "Shiny",
    },
    {
        "name": "draft",
        "module": "swift",
        "owner": "jdoe",
        "drafter": "carol",
        "date_created": JULY_1 + 4 * DAY,
    },
]


async def post(client: Client, path: str, body: Any, status: int = 200) -> Any:
    resp = await client.post(API + path, json=body, headers=admin())
    assert resp.status == status, await resp.text()
    return await resp.json()


async def load(client: Client) -> None:
    """The data set every test here reads; each write answers once the read model shows it."""
    assert await post(client, "/directory", DIRECTORY) == {"saved": 15, "unchanged": 0}
    nc = client.app[keys.NATS]
    for module, commits in COMMITS.items():
        reply = await send(nc, ImportCommits(module=module, branch="master", commits=commits), 10.0)
        assert reply.result == {"accepted": len(commits), "duplicates": 0}
    assert await post(client, "/marks", marks()) == {"accepted": 109, "duplicates": 0}
    assert await post(client, "/emails", EMAILS) == {"accepted": 2, "duplicates": 0}
    assert await post(client, "/blueprints", BLUEPRINTS) == {"accepted": 3, "duplicates": 0}
    await caught_up(client, 6 + 109 + 2 + 3)


async def caught_up(client: Client, records: int) -> None:
    pool = client.app[keys.POOL]
    for _ in range(400):
        if await pool.fetchval("SELECT count(*) FROM contribution_records") >= records:
            position = await pool.fetchval(
                "SELECT position FROM projection_checkpoints WHERE projection = 'contributions'"
            )
            await client.app[keys.WATCH].wait(("contributions",), int(position), 5.0)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("records did not reach the read model")
