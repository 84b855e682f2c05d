"""The Stackalytics API v1.0 through HTTP: every route and common parameter, zero omission, the marks
comment, paging, JSONP, the release/date intersection, affiliation by date, and the admin routes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from services.contributions_import.importer import send
from services.gateway import keys
from services.gateway.app import init_app
from shared.commands.contributions import ImportCommits
from tests.conftest import Services, admin, with_settings
from tests.integration.contributions_data import (
    API,
    BLUEPRINTS,
    COMMITS,
    DAY,
    DIRECTORY,
    EMAILS,
    HAVANA_END,
    ICEHOUSE_END,
    JULY_1,
    MARK_DATE,
    Client,
    load,
    marks,
    post,
)


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(API + path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def stats(client: Client, query: str) -> list[tuple[str, int]]:
    return [(r["id"], r["metric"]) for r in (await get(client, query))["stats"]]


async def test_stats_by_engineer_company_and_module_with_zeros_left_out(client: Client) -> None:
    await load(client)
    assert await get(client, "/stats/engineers?release=havana") == {
        "stats": [
            {"metric": 2, "id": "jdoe", "name": "John Doe"},
            {"metric": 1, "id": "alice@corp.com", "name": "Alice"},
            {"metric": 1, "id": "bob@home.net", "name": "Bob"},
        ]
    }
    # Bob's swift commit has no lines: by lines of code he is left out.
    assert await stats(client, "/stats/engineers?release=havana&metric=loc") == [
        ("jdoe", 15),
        ("alice@corp.com", 7),
    ]
    assert await stats(client, "/stats/companies?release=havana") == [
        ("*independent", 1),
        ("Corp", 1),
        ("NewCo", 1),
        ("OldCo", 1),
    ]
    assert await stats(client, "/stats/modules?release=havana") == [("nova", 3), ("swift", 1)]
    assert await get(client, "/stats/modules?release=havana&metric=loc") == {
        "stats": [{"metric": 22, "id": "nova", "name": "nova"}]
    }
    assert await stats(client, "/stats/modules?release=havana&metric=emails") == [("nova", 1), ("unknown", 1)]
    assert await stats(client, "/stats/engineers?release=all&metric=bpd") == [("carol", 1), ("jdoe", 1)]
    assert await stats(client, "/stats/engineers?release=all&metric=bpc") == [("alice-lp", 1)]
    assert await stats(client, "/stats/companies?release=grizzly") == []


async def test_marks_have_the_distribution_comment(client: Client) -> None:
    await load(client)
    body = await get(client, "/stats/engineers?release=havana&metric=marks")
    assert body["stats"] == [
        {"comment": "1|3|55|45 (96.2%)", "metric": 106, "id": "alice@corp.com", "name": "Alice"},
        {"comment": "0|1|1|0 (50.0%)", "metric": 2, "id": "jdoe", "name": "John Doe"},
    ]
    # Only engineers get the comment.
    assert (await get(client, "/stats/modules?release=havana&metric=marks"))["stats"] == [
        {"metric": 106, "id": "nova", "name": "nova"},
        {"metric": 2, "id": "swift", "name": "swift"},
    ]


async def test_contribution_summary(client: Client) -> None:
    await load(client)
    assert await get(client, "/contribution?release=all") == {
        "contribution": {
            "loc": 25,
            "new_blueprint_count": 2,
            "email_count": 2,
            "commit_count": 5,
            "competed_blueprint_count": 1,
            "marks": {"-2": 1, "-1": 4, "0": 2, "1": 56, "2": 45},
        }
    }
    john = (await get(client, "/contribution?release=all&user_id=jdoe&metric=marks"))["contribution"]
    assert (john["commit_count"], john["loc"], john["new_blueprint_count"], john["marks"]["1"]) == (
        2,
        15,
        1,
        1,
    )
    none = (await get(client, "/contribution?release=grizzly"))["contribution"]
    assert none["commit_count"] == none["loc"] == 0 and set(none["marks"]) == {"-2", "-1", "0", "1", "2"}


async def test_company_affiliation_by_date(client: Client) -> None:
    await load(client)
    # John's commit a day before he moved counts for OldCo, the one on the day for NewCo.
    assert await stats(client, "/stats/companies?release=all&user_id=jdoe") == [("NewCo", 1), ("OldCo", 1)]
    assert await stats(client, f"/stats/companies?release=all&user_id=jdoe&end_date={JULY_1 - 1}") == [
        ("OldCo", 1)
    ]
    # The directory changes: he stayed at OldCo until August. Every record is counted again.
    changed = {
        "users": [
            {
                **DIRECTORY["users"][0],  # type: ignore[dict-item]
                "companies": [
                    {"company_name": "OldCo", "end_date": "2013-Aug-01"},
                    {"company_name": "NewCo", "end_date": None},
                ],
            }
        ]
    }
    assert await post(client, "/directory", changed) == {"saved": 1, "unchanged": 0}
    assert await stats(client, "/stats/companies?release=all&user_id=jdoe") == [("OldCo", 2)]
    # Alice joins the directory: her records (by e-mail) and her blueprint (by Launchpad id) are hers.
    alice = {
        "launchpad_id": "alice-lp",
        "user_name": "Alice A",
        "emails": ["alice@corp.com"],
        "companies": [{"company_name": "NewCo", "end_date": None}],
    }
    assert await post(client, "/directory", {"users": [alice]}) == {"saved": 1, "unchanged": 0}
    assert await stats(client, "/stats/engineers?release=all") == [
        ("bob@home.net", 2),
        ("jdoe", 2),
        ("alice-lp", 1),
    ]
    assert await stats(client, "/stats/companies?release=all&metric=bpc") == [("NewCo", 1)]
    users = (await get(client, "/users?release=all&metric=marks"))["data"]
    assert users == [{"id": "alice-lp", "text": "Alice A"}, {"id": "jdoe", "text": "John Doe"}]
    # Removing her from the directory gives her e-mail back its own user, named by her first record.
    resp = await client.delete(f"{API}/directory/user/alice-lp", headers=admin())
    assert resp.status == 204
    assert ("alice@corp.com", 106) in await stats(client, "/stats/engineers?release=all&metric=marks")
    assert await stats(client, "/stats/companies?release=all&metric=bpc") == [("*independent", 1)]


async def test_release_and_dates_select_their_intersection(client: Client) -> None:
    await load(client)
    # The default release is the current one (the last to end): only Bob's icehouse commit.
    assert await stats(client, "/stats/engineers") == [("bob@home.net", 1)]
    assert await stats(client, "/stats/engineers?release=ICEHOUSE") == [("bob@home.net", 1)]
    everyone = [("bob@home.net", 2), ("jdoe", 2), ("alice@corp.com", 1)]
    assert await stats(client, "/stats/engineers?release=all") == everyone
    # start_date and end_date are inclusive Unix times, intersected with the release.
    havana_after_july = f"/stats/engineers?release=havana&start_date={JULY_1}"
    assert await stats(client, havana_after_july) == [("alice@corp.com", 1), ("bob@home.net", 1), ("jdoe", 1)]
    assert await stats(client, f"/stats/engineers?release=havana&start_date={JULY_1 + 1}") == [
        ("alice@corp.com", 1),
        ("bob@home.net", 1),
    ]
    assert await stats(client, f"/stats/engineers?release=havana&end_date={JULY_1}") == [("jdoe", 2)]
    assert await stats(client, f"/stats/engineers?release=havana&end_date={JULY_1 - 1}") == [("jdoe", 1)]
    # A span reaching past the release is cut to it; one outside it selects nothing.
    past = f"/stats/engineers?release=grizzly&start_date={JULY_1 - 60 * DAY}&end_date={ICEHOUSE_END}"
    assert await stats(client, past) == []
    assert await stats(client, f"/stats/engineers?release=all&start_date={HAVANA_END}") == [
        ("bob@home.net", 1)
    ]
    assert await stats(client, f"/stats/engineers?release=all&start_date={JULY_1}&end_date={JULY_1}") == [
        ("jdoe", 1)
    ]
    assert (
        await stats(client, f"/stats/engineers?release=all&start_date={JULY_1 + 1}&end_date={JULY_1}") == []
    )
    # Marks ten to a second: a span ending mid-day counts exactly the seconds it covers.
    marks = f"/stats/engineers?release=all&metric=marks&start_date={MARK_DATE}&end_date={MARK_DATE + 3}"
    assert await stats(client, marks) == [("alice@corp.com", 40), ("jdoe", 2)]


async def test_project_type_module_company_and_user_filters(client: Client) -> None:
    await load(client)
    assert await stats(client, "/stats/modules?release=all&project_type=openstack") == [
        ("nova", 4),
        ("swift", 1),
    ]
    assert await stats(client, "/stats/modules?release=all&project_type=storage-type") == [("swift", 1)]
    assert await stats(client, "/stats/engineers?release=all&project_type=storage-type") == [
        ("bob@home.net", 1)
    ]
    assert await stats(client, "/stats/engineers?release=all&project_type=docs") == []
    assert await stats(client, "/stats/engineers?release=all&project_type=docs&module=nova") == []
    assert await stats(client, "/stats/companies?release=all&module=NOVA") == [
        ("*independent", 1),
        ("Corp", 1),
        ("NewCo", 1),
        ("OldCo", 1),
    ]
    assert await stats(client, "/stats/engineers?release=all&company=corp") == [("alice@corp.com", 1)]
    assert await stats(client, "/stats/modules?release=all&company=*independent&user_id=BOB@home.net") == [
        ("nova", 1),
        ("swift", 1),
    ]
    assert await stats(client, "/stats/modules?release=all&company=NewCo&user_id=jdoe&module=nova") == [
        ("nova", 1)
    ]
    assert await stats(
        client, "/stats/companies?release=all&project_type=openstack&user_id=bob@home.net"
    ) == [("*independent", 2)]
    assert await stats(client, "/stats/engineers?release=all&project_type=openstack&company=OldCo") == [
        ("jdoe", 1)
    ]
    assert await stats(client, "/stats/engineers?release=all&project_type=all") == [
        ("bob@home.net", 2),
        ("jdoe", 2),
        ("alice@corp.com", 1),
    ]


UNKNOWN = [
    ("release=kilo", "release"),
    ("project_type=nope", "project_type"),
    ("module=glance", "module"),
    ("company=Nobody", "company"),
    ("user_id=nobody", "user_id"),
    ("metric=reviews", "metric"),
    ("start_date=yesterday", "start_date"),
    ("end_date=1.5", "end_date"),
    ("start_date=99999999999999", "start_date"),
    ("module=nova&module=swift", "module"),
    ("release=havana,icehouse", "release"),
    ("module=nova%00", "module"),
    ("company=%FF", "company"),
    ("user_id=" + "x" * 1001, "user_id"),
]


async def test_unknown_values_are_400_with_the_reason(client: Client) -> None:
    await post(client, "/directory", {"releases": DIRECTORY["releases"], "repos": DIRECTORY["repos"]})
    for query, word in UNKNOWN:
        for route in (
            "/stats/engineers",
            "/stats/companies",
            "/stats/modules",
            "/activity",
            "/contribution",
            "/users",
        ):
            resp = await client.get(f"{API}{route}?{query}")
            assert resp.status == 400, (route, query, await resp.text())
            body = await resp.json()
            assert set(body) == {"error"} and word in body["error"]


async def test_activity_is_newest_first_and_walks_every_record_once(client: Client) -> None:
    await load(client)
    body = await get(client, "/activity?release=all")
    assert [r["commit_id"][-1] for r in body["activity"]] == [
        "4",
        "6",
        "3",
        "2",
        "1",
    ]  # the robot's is left out
    first = body["activity"][-1]
    assert first == {
        "record_type": "commit",
        "primary_key": f"{1:040x}",
        "commit_id": f"{1:040x}",
        "user_id": "jdoe",
        "launchpad_id": "jdoe",
        "author_name": "John D",
        "author_email": "john@old.com",
        "module": "nova",
        "release": "havana",
        "blueprint_id": [],
        "bug_id": [],
        "date": JULY_1 - 30 * DAY,
        "branches": "master",
        "message": "Body 1\n",
        "subject": "Change 1",
        "change_id": [],
        "company_name": "OldCo",
        "loc": 10,
        "files_changed": 1,
        "lines_added": 8,
        "lines_deleted": 2,
    }
    default = await get(client, "/activity?release=all&metric=marks")
    assert len(default["activity"]) == 10  # the default page size
    seen: list[str] = []
    for page_size in (7, 1000):
        seen = []
        while True:
            page = (
                await get(
                    client,
                    f"/activity?release=all&metric=marks&page_size={page_size}&start_record={len(seen)}",
                )
            )["activity"]
            seen += [r["primary_key"] for r in page]
            if len(page) < page_size:
                break
        assert len(seen) == len(set(seen)) == 108
    dates = [
        r["date"]
        for r in (await get(client, "/activity?release=all&metric=marks&page_size=1000"))["activity"]
    ]
    assert dates == sorted(dates, reverse=True)
    assert (await get(client, "/activity?release=all&metric=marks&start_record=108"))["activity"] == []
    mark = (await get(client, "/activity?release=all&metric=marks&user_id=jdoe&page_size=1"))["activity"][0]
    assert {k: mark[k] for k in ("record_type", "type", "module", "company_name", "review_id")} == {
        "record_type": "mark",
        "type": "Code-Review",
        "module": "swift",
        "company_name": "NewCo",
        "review_id": "20000",
    }
    emails = (await get(client, "/activity?release=all&metric=emails"))["activity"]
    assert [(e["message_id"], e["module"], e["subject"]) for e in emails] == [
        ("<2@x>", "unknown", "A"),
        ("<1@x>", "nova", "Q"),
    ]
    [bpc] = (await get(client, "/activity?release=all&metric=bpc"))["activity"]
    assert (bpc["id"], bpc["user_id"], bpc["primary_key"], bpc["author_name"]) == (
        "nova:shiny",
        "alice-lp",
        "bpc:nova:shiny",
        "alice-lp",
    )
    for bad in ("page_size=0", "page_size=1001", "start_record=-1", "page_size=x"):
        await get(client, f"/activity?{bad}", status=400)


async def test_jsonp_with_a_strictly_checked_callback(client: Client) -> None:
    await load(client)
    for name in ("myCallback", "jQuery19104_1392", "$", "_a.b$.c_1"):
        resp = await client.get(f"{API}/stats/modules?release=havana&callback={name}")
        assert resp.status == 200 and resp.content_type == "application/javascript"
        text = await resp.text()
        assert text.startswith(name + "(") and text.endswith(");")
        assert json.loads(text[len(name) + 1 : -2]) == await get(client, "/stats/modules?release=havana")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    bad = [
        "",
        "alert(1)",
        "a b",
        "1abc",
        "a..b",
        "a.",
        ".a",
        "a-b",
        "x" * 65,
        "a/**/",
        "<script>",
        "a;b",
        "é",
    ]
    for name in bad:
        for route in ("/stats/modules", "/activity", "/contribution", "/releases", "/users"):
            resp = await client.get(f"{API}{route}", params={"callback": name})
            assert resp.status == 400, (name, route)
            assert resp.content_type == "application/json" and "callback" in (await resp.json())["error"]


async def test_the_lists_that_build_the_filters(client: Client) -> None:
    await load(client)
    assert await get(client, "/releases") == {
        "data": [
            {"id": "all", "text": "All"},
            {"id": "icehouse", "text": "Icehouse"},
            {"id": "havana", "text": "Havana"},
            {"id": "grizzly", "text": "Grizzly"},
        ],
        "default": "icehouse",
    }
    assert await get(client, "/project_types") == {
        "data": [
            {"id": "all", "text": "All", "child": False},
            {"id": "docs", "text": "Docs", "child": False},
            {"id": "openstack", "text": "OpenStack", "child": False},
            {"id": "storage-type", "text": "Storage", "child": True},
        ],
        "default": "all",
    }
    assert await get(client, "/modules?release=all") == {
        "data": [{"id": "nova", "text": "nova"}, {"id": "swift", "text": "swift"}]
    }
    assert await get(client, "/modules?release=all&module=nova&metric=emails") == {
        "data": [{"id": "nova", "text": "nova"}, {"id": "unknown", "text": "unknown"}]
    }
    assert (await get(client, "/companies?release=havana"))["data"] == [
        {"id": "*independent", "text": "*independent"},
        {"id": "Corp", "text": "Corp"},
        {"id": "NewCo", "text": "NewCo"},
        {"id": "OldCo", "text": "OldCo"},
    ]
    assert (await get(client, "/users?release=all"))["data"] == [
        {"id": "alice@corp.com", "text": "Alice"},
        {"id": "bob@home.net", "text": "Bob"},
        {"id": "jdoe", "text": "John Doe"},
    ]
    assert (await get(client, "/users?release=all&query=DOE"))["data"] == [{"id": "jdoe", "text": "John Doe"}]
    assert (await get(client, "/users?release=all&query=corp.com"))["data"] == [
        {"id": "alice@corp.com", "text": "Alice"}
    ]
    assert (await get(client, "/users?release=all&page_size=1&start_record=1"))["data"] == [
        {"id": "bob@home.net", "text": "Bob"}
    ]
    await get(client, "/users?query=" + "x" * 201, status=400)


async def test_records_are_deduplicated_by_their_primary_key(client: Client) -> None:
    await load(client)
    assert await post(client, "/marks", marks()[:5] + marks()[:2]) == {"accepted": 0, "duplicates": 7}
    assert await post(client, "/emails", [EMAILS[0], {**EMAILS[0], "subject": "other"}]) == {
        "accepted": 0,
        "duplicates": 2,
    }
    more = {
        **BLUEPRINTS[1],
        "assignee": "carol",
        "date_completed": JULY_1 + 9 * DAY,
        "implementation_status": "Implemented",
    }
    assert await post(client, "/blueprints", [more]) == {"accepted": 1, "duplicates": 1}  # now also completed
    assert await stats(client, "/stats/engineers?release=all&metric=bpc") == [("alice-lp", 1), ("carol", 1)]
    reply = await send(
        client.app[keys.NATS], ImportCommits(module="nova", branch="master", commits=COMMITS["nova"]), 10.0
    )
    assert reply.result == {"accepted": 0, "duplicates": 5}


BAD = [
    ("/marks", {"review_id": "1"}, "list"),
    ("/marks", [{"review_id": "1"}], "marks[0]"),
    ("/marks", [{**marks()[0], "value": 5}], "value"),
    ("/marks", [{**marks()[0], "date": "yesterday"}], "date"),
    ("/marks", [marks()[0], {**marks()[0], "author_email": "x"}], "marks[1]"),
    ("/emails", [{**EMAILS[0], "message_id": 7}], "message_id"),
    ("/blueprints", [{**BLUEPRINTS[0], "owner": "has space"}], "owner"),
    ("/directory", [], "object"),
    ("/directory", {"users": [{"emails": ["not-an-email"]}]}, "emails[0]"),
    ("/directory", {"users": [{"user_name": "Nobody"}]}, "launchpad_id"),
    ("/directory", {"releases": [{"release_name": "x", "end_date": "2013-13-01"}]}, "end_date"),
    ("/directory", {"users": "no"}, "users"),
]


async def test_bad_records_are_refused_whole(client: Client) -> None:
    for path, body, reason in BAD:
        resp = await client.post(API + path, json=body, headers=admin())
        assert resp.status == 400, (path, await resp.text())
        assert reason in (await resp.json())["error"], path
    assert await client.app[keys.POOL].fetchval("SELECT count(*) FROM contribution_records") == 0
    assert await client.app[keys.POOL].fetchval("SELECT count(*) FROM contribution_users") == 0


async def test_bodies_that_are_too_large_or_not_json(client: Client) -> None:
    big = [marks()[0]] * 5000
    resp = await client.post(
        f"{API}/marks", data=json.dumps(big), headers=admin(**{"Content-Type": "application/json"})
    )
    assert resp.status == 400 and "too large" in (await resp.json())["error"]
    for raw in (b"", b"not json", b"[" * 5000 + b"]" * 5000, b'[{"review_id": "\\ud800"}]'):
        resp = await client.post(
            f"{API}/marks", data=raw, headers=admin(**{"Content-Type": "application/json"})
        )
        assert resp.status == 400, raw[:20]
        assert set(await resp.json()) == {"error"}


async def test_admin_routes_need_the_key_and_do_not_exist_without_one(
    client: Client, services: Services
) -> None:
    for path in ("/marks", "/emails", "/blueprints", "/directory"):
        resp = await client.post(API + path, json=[], headers={"Authorization": "wrong"})
        assert resp.status == 401
    resp = await client.delete(f"{API}/directory/company/Corp", headers={})
    assert resp.status == 401
    resp = await client.delete(f"{API}/directory/company/Corp", headers=admin())
    assert resp.status == 404 and "not in the directory" in (await resp.json())["error"]
    resp = await client.delete(f"{API}/directory/planet/Mars", headers=admin())
    assert resp.status == 404
    await post(client, "/directory", {"companies": DIRECTORY["companies"]})
    assert (await client.delete(f"{API}/directory/company/Corp", headers=admin())).status == 204
    assert (await client.delete(f"{API}/directory/company/Corp", headers=admin())).status == 404
    settings = with_settings(services.settings, secret_key="")
    async with TestClient(TestServer(init_app(settings))) as keyless:
        for path in ("/marks", "/emails", "/blueprints", "/directory"):
            resp = await keyless.post(API + path, json=[], headers={"Authorization": ""})
            assert resp.status == 404 and await resp.json() == {"error": "not found"}
        assert (await keyless.delete(f"{API}/directory/company/OldCo")).status == 404
        assert (await keyless.get(f"{API}/stats/companies?release=all")).status == 200


async def test_reads_answer_get_only(client: Client) -> None:
    for path in ("/stats/modules", "/activity", "/contribution", "/releases", "/users"):
        resp = await client.post(API + path)
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
