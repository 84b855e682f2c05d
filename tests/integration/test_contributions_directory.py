"""``usagehub import directory FILE``: a Stackalytics ``default_data.json``-shaped file saved entry by
entry (only what changed), with clear errors for a bad file."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.commands.contributions import SaveDirectory, UserData, split_directory
from tests.conftest import Services
from tests.integration.helpers import run_usagehub

Client = TestClient[web.Request, web.Application]

DEFAULT_DATA = {
    "users": [
        {
            "launchpad_id": "foo",
            "user_name": "Pupkin",
            "emails": ["user@test.org"],
            "gerrit_id": "ignored",
            "companies": [
                {"company_name": "Uno", "end_date": "2013-Jan-01"},
                {"company_name": "Duo", "end_date": None},
            ],
        }
    ],
    "companies": [{"company_name": "Duo", "domains": ["duo.com"], "aliases": ["Duo Inc"]}],
    "releases": [
        {"release_name": "prehistory", "end_date": "2010-Jan-01"},
        {"release_name": "Havana", "end_date": "2013-Oct-17"},
    ],
    "repos": [{"module": "glance", "organization": "openstack", "uri": "git://x/glance.git", "releases": []}],
    "module_groups": [{"module_group_name": "glance-group", "modules": ["glance"]}],
    "project_types": [{"id": "openstack", "title": "OpenStack", "modules": ["glance-group"]}],
    "mail_lists": ["http://lists.example.org/"],
}


async def test_a_default_data_file_is_saved_once(client: Client, services: Services, tmp_path: Path) -> None:
    path = tmp_path / "default_data.json"
    path.write_text(json.dumps(DEFAULT_DATA))
    cli = services.settings
    code, out, err = await run_usagehub("import", "directory", str(path), settings=cli)
    assert code == 0, err
    assert json.loads(out) == {"saved": 7, "unchanged": 0}
    assert err.splitlines() == [err.splitlines()[0]] and " 100% 7/7 entries  " in err, err
    code, out, err = await run_usagehub("import", "directory", str(path), settings=cli)
    assert (code, json.loads(out)) == (0, {"saved": 0, "unchanged": 7}), err
    resp = await client.get("/api/1.0/releases")
    assert (await resp.json())["data"] == [
        {"id": "all", "text": "All"},
        {"id": "havana", "text": "Havana"},
        {"id": "prehistory", "text": "Prehistory"},
    ]
    resp = await client.get("/api/1.0/project_types")
    assert {"id": "openstack", "text": "OpenStack", "child": False} in (await resp.json())["data"]


async def test_a_bad_file_is_a_clear_error(services: Services, tmp_path: Path) -> None:
    cli = services.settings
    cases = {
        "missing.json": (None, "cannot read"),
        "text.json": ("not json", "is not JSON"),
        "shape.json": (json.dumps({"users": [{"emails": "one@x.org"}]}), "$.users[0].emails"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        code, out, err = await run_usagehub("import", "directory", str(path), settings=cli)
        assert (code, out) == (2, "") and reason in err, (name, err)
    path = tmp_path / "refused.json"
    path.write_text(json.dumps({"users": [{"user_name": "nobody"}]}))
    code, _, err = await run_usagehub("import", "directory", str(path), settings=cli)
    assert code == 1 and "launchpad_id" in err and "(400)" in err


def test_a_large_directory_is_cut_into_commands_that_fit_a_message() -> None:
    users = [UserData(launchpad_id=f"user{i}", emails=[f"u{i}@x.org"]) for i in range(100)]
    cmd = SaveDirectory(users=users, request_id="r")
    parts = split_directory(cmd, 1000)
    assert len(parts) > 3
    assert [u for p in parts for u in p.users] == users
    assert all(p.request_id == "r" for p in parts)
    assert split_directory(SaveDirectory(), 1000) == [SaveDirectory()]
