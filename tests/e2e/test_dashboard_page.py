"""The dashboard at ``GET /``: every number in the HTML (no script needed), charts drawn from the
projections' counters, an empty state that says what to do, and its icon within the policy."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from tests.conftest import Services, admin
from tests.integration.contributions_repos import fast_import_repo, projected
from tests.integration.helpers import run_usagehub

Client = TestClient[web.Request, web.Application]


def bars(page: str, chart_id: str) -> list[int]:
    """The values of the bars of chart ``chart_id`` in ``page``."""
    svg = re.search(rf'<svg class="chart" id="{chart_id}".*?</svg>', page, re.S)
    assert svg, chart_id
    return [int(v) for v in re.findall(r'data-v="(\d+)"', svg.group(0))]


async def test_a_new_installation_says_what_to_do_next(client: Client) -> None:
    page = await (await client.get("/")).text()
    assert "No device yet." in page and "usagehub devices add" in page and "/api/beat" in page
    assert "No link yet." in page and "usagehub links add" in page
    assert "<h1>usagehub</h1>" in page and page.count("<h2") == 5


async def test_devices_show_status_in_words_beats_and_charts(client: Client) -> None:
    resp = await client.post("/api/devices", json={"name": "<Laptop>"}, headers=admin())
    token = (await resp.json())["token"]
    await client.post("/api/devices", json={"name": "Phone"}, headers=admin())  # never beats
    for _ in range(3):
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
    page = await (await client.get("/")).text()
    laptop = re.search(r'<tr data-id="0">.*?</tr>', page, re.S)
    phone = re.search(r'<tr data-id="1">.*?</tr>', page, re.S)
    assert laptop and phone
    assert "&lt;Laptop&gt;" in laptop.group(0) and "<Laptop>" not in page
    assert 'class="status online"' in laptop.group(0) and ">online</span>" in laptop.group(0)
    assert 'class="status offline"' in phone.group(0) and "never" in phone.group(0)
    assert "just now" in laptop.group(0) or " s ago" in laptop.group(0)
    assert 'class="num beats">3<' in laptop.group(0)
    # The last hour's and last day's charts: 60 and 24 bars, the beats in the newest one.
    minute, hour = bars(page, "bpm-0"), bars(page, "bph-0")
    assert len(minute) == 60 and sum(minute) == 3 and minute[-1] >= 1
    assert len(hour) == 24 and sum(hour) == 3 and hour[-1] >= 1
    assert '<title id="bpm-0-t">Beats per minute of &lt;Laptop&gt;, last hour</title>' in page
    assert 'id="total_beats">3<' in page
    assert "No device yet." not in page


async def test_link_usage_per_day_and_top_users(client: Client) -> None:
    resp = await client.post(
        "/api/links", json={"name": "Docs", "url": "https://example.org"}, headers=admin()
    )
    link = (await resp.json())["id"]
    for user in ("ada", "ada", "bob"):
        resp = await client.post(f"/api/links/{link}/usage", json={"user": user})
        assert resp.status < 300, await resp.text()
    page = await (await client.get("/")).text()
    row = re.search(r'<tr><th scope="row">Docs</th>.*?</tr>', page, re.S)
    assert row, page
    assert bars(page, f"link-{link}")[-1] == 2  # each user's uses within the hour are one usage
    assert "ada (1," in row.group(0) and "bob (1," in row.group(0)
    assert f'href="/api/links/{link}/stats"' in row.group(0)


async def test_each_panel_links_the_routes_that_serve_it(client: Client) -> None:
    page = await (await client.get("/")).text()
    for route in (
        "/api/stats",
        "/api/links",
        "/api/orgs",
        "/api/1.0/stats/modules",
        "/api/1.0/stats/companies",
    ):
        assert f'href="{route}"' in page, route
    assert "/usages/media/:mediaId" in page and "/api/usage/history" in page


async def test_the_favicon_is_served_and_allowed(client: Client) -> None:
    page = await (await client.get("/")).text()
    assert '<link rel="icon" href="/favicon.svg"' in page
    resp = await client.get("/favicon.svg")
    assert resp.status == 200 and resp.content_type == "image/svg+xml"
    assert (await resp.text()).startswith("<svg")
    assert "img-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_media_metering_and_contribution_panels_fill(
    client: Client, services: Services, js: JetStreamContext, tmp_path: Path
) -> None:
    media = "53b2098571e4e9f1d22e98b74db9a8bc5d060331"
    front = {
        "addedBy": "e@example.com",
        "front": "uk/sport",
        "mediaId": media,
        "dateAdded": "2018-01-02T03:04:05Z",
    }
    assert (await client.post("/usages/front", json={"data": front}, headers=admin())).status == 202
    org = {"id": "acme", "name": "Acme <Ltd>", "time_zone": "Europe/Paris"}
    assert (await client.post("/api/orgs", json=org, headers=admin())).status < 300
    key = (await (await client.post("/api/orgs/acme/keys", json={}, headers=admin())).json())["key"]
    for _ in range(3):
        assert (await client.get("/api/links", headers={"X-Api-Key": key})).status == 200
    fast_import_repo(tmp_path / "demo", commits=5, authors=2)
    code, _, err = await run_usagehub(
        "import", "git", str(tmp_path / "demo"), "--module", "demo", settings=services.settings
    )
    assert code == 0, err
    conn = await asyncpg.connect(services.settings.database_url)
    try:
        await projected(conn, js)
        for _ in range(100):  # the gateway sends its call counts every second
            if await conn.fetchval("SELECT sum(calls) FROM api_call_counts") == 3:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()

    page = await (await client.get("/")).text()
    assert '<td>unknown</td><td>front</td><td class="num">1</td>' in page
    assert f'href="/usages/media/{media}"' in page
    calls = re.search(
        r"<tr><td>Acme &lt;Ltd&gt;</td><td>lighthouse</td><td class=\"num\">3</td>.*?</tr>", page
    )
    assert calls, page
    assert bars(page, "calls-acme-lighthouse")[-1] == 3 and 'href="/api/orgs/acme"' in calls.group(0)
    # Five commits adding 1 + 2 + 3 + 4 + 5 lines, by two authors of no company.
    assert '<tr><td>demo</td><td class="num">5</td><td class="num">15</td>' in page
    assert '<tr><td>*independent</td><td class="num">5</td><td class="num">15</td>' in page


async def test_the_longest_absences_are_listed_in_human_durations(client: Client) -> None:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
    token = (await resp.json())["token"]
    assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
    page = await (await client.get("/")).text()
    assert "Longest absences" not in page  # none of a second yet
    await asyncio.sleep(1.2)
    assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
    page = await (await client.get("/")).text()
    absences = re.search(r'<ol class="absences">(.*?)</ol>', page)
    assert absences and re.fullmatch(
        r"<li><strong>1 s</strong> Laptop, until [-0-9 :]+ UTC</li>", absences.group(1)
    )


async def test_the_panels_fragment_is_the_pages_and_answers_304_until_a_write(client: Client) -> None:
    resp = await client.post(
        "/api/links", json={"name": "Docs", "url": "https://example.org"}, headers=admin()
    )
    link = (await resp.json())["id"]
    page = await (await client.get("/")).text()
    resp = await client.get("/dashboard/panels")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-cache" and "Content-Security-Policy" in resp.headers
    fragment = await resp.text()
    # The same panels as in the page, rendered once; no heartbeat panel, no page around them.
    assert fragment.startswith('<section id="links"') and fragment in page
    assert 'id="heartbeat"' not in fragment and "<html" not in fragment
    tag = resp.headers["ETag"]

    same = await client.get("/dashboard/panels", headers={"If-None-Match": tag})
    assert same.status == 304 and same.headers["ETag"] == tag and await same.read() == b""

    assert (await client.post(f"/api/links/{link}/usage", json={"user": "ada"})).status < 300
    changed = await client.get("/dashboard/panels", headers={"If-None-Match": tag})
    assert changed.status == 200 and changed.headers["ETag"] != tag
    assert bars(await changed.text(), f"link-{link}")[-1] == 1
    assert (await (await client.get("/api/stats")).json())["num_visits"] == 1  # the page's, only


async def test_the_panels_fragment_is_a_get_only_route(client: Client) -> None:
    resp = await client.post("/dashboard/panels")
    assert resp.status == 405 and "error" in await resp.json()
