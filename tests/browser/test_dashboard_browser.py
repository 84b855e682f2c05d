"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a live gateway.

It sees the charts filled, a beat posted during the test appear without a reload (over the
WebSocket), a link and a media usage too (the other panels' refresh), and no console error;
screenshots go to ``.ci/artifacts/`` for CI to keep. Run by ``make browser-test`` (``make test``
does not collect this folder: it needs a browser).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import ConsoleMessage, Error, Page, async_playwright, expect

from tests.conftest import admin

Client = TestClient[web.Request, web.Application]

ARTIFACTS = Path(__file__).resolve().parents[2] / ".ci" / "artifacts"
# The system's browser (apt-get install chromium), never one Playwright downloads.
CHROMIUM = os.environ.get("USAGEHUB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FRONT = {
    "addedBy": "e@example.com",
    "front": "uk/sport",
    "mediaId": "53b2098571e4e9f1d22e98b74db9a8bc5d060331",
    "dateAdded": "2018-01-02T03:04:05Z",
}


async def _register(client: Client, name: str) -> str:
    resp = await client.post("/api/devices", json={"name": name}, headers=admin())
    assert resp.status == 200, await resp.text()
    token: str = (await resp.json())["token"]
    return token


async def _beat(client: Client, token: str) -> None:
    assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200


async def _chart_total(page: Page, chart_id: str) -> int:
    total: int = await page.eval_on_selector_all(
        f"#{chart_id} rect", "rs => rs.reduce((sum, r) => sum + Number(r.dataset.v), 0)"
    )
    return total


async def test_the_dashboard_fills_and_goes_live_without_errors(client: Client) -> None:
    laptop = await _register(client, "Laptop")
    await _register(client, "Phone")  # registered, never beats: offline
    for _ in range(4):
        await _beat(client, laptop)
    resp = await client.post(
        "/api/links", json={"name": "Docs", "url": "https://example.org"}, headers=admin()
    )
    link = (await resp.json())["id"]
    for user in ("ada", "bob"):
        assert (await client.post(f"/api/links/{link}/usage", json={"user": user})).status < 300

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_page_error(error: Error) -> None:
        errors.append(str(error))

    async with async_playwright() as pw:
        # Chromium's sandbox cannot start as root (CI containers); it is not what is under test.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            await page.goto(str(client.make_url("/")))
            await expect(page.locator("#live")).to_contain_text("live · updated", timeout=10_000)

            row = page.locator('tr[data-id="0"]')
            await expect(row.locator(".status")).to_have_text("online")
            await expect(page.locator('tr[data-id="1"] .status')).to_have_text("offline")
            await expect(row.locator(".beats")).to_have_text("4")
            # The charts are filled: the last hour's and the last day's hold the four beats.
            assert await _chart_total(page, "bpm-0") == 4 and await _chart_total(page, "bph-0") == 4
            assert await page.locator("#bpm-0 rect[height]:not([height='0'])").count() >= 1
            assert await _chart_total(page, f"link-{link}") == 2
            await page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

            await _beat(client, laptop)  # while the page is open: it must show without a reload
            await expect(row.locator(".beats")).to_have_text("5", timeout=10_000)
            await expect(page.locator("#total_beats")).to_have_text("5")
            assert await _chart_total(page, "bpm-0") == 5 and await _chart_total(page, "bph-0") == 5
            assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
            await page.screenshot(path=ARTIFACTS / "dashboard-after-beat.png", full_page=True)

            # A device registered while the page is open appears, beats and charts included.
            tablet = await _register(client, "Tablet")
            await _beat(client, tablet)
            added = page.locator('tr[data-id="2"]')
            await expect(added.locator(".beats")).to_have_text("1", timeout=10_000)
            await expect(added.locator(".status")).to_have_text("online")
            assert await _chart_total(page, "bpm-2") == 1 and await _chart_total(page, "bph-2") == 1

            # Keyboard: the first Tab reaches the panel links.
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.getAttribute('href')") == "#heartbeat"

            # The other panels refresh too (every 5 s): a media usage and a link usage posted now
            # show without a reload, except in the panel holding the focus until it is left.
            stats_link = page.locator(f'#links a[href="/api/links/{link}/stats"]')
            await stats_link.focus()
            assert (await client.post(f"/api/links/{link}/usage", json={"user": "cy"})).status < 300
            resp = await client.post("/usages/front", json={"data": FRONT}, headers=admin())
            assert resp.status == 202, await resp.text()
            await expect(page.locator("#media")).to_contain_text("front", timeout=15_000)
            await expect(stats_link).to_be_focused()  # the same element: its panel was kept
            assert await _chart_total(page, f"link-{link}") == 2
            await stats_link.blur()
            await expect(page.locator(f"#link-{link}-d")).to_contain_text("3 usages in all", timeout=15_000)
            assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
            await page.screenshot(path=ARTIFACTS / "dashboard-panels-live.png", full_page=True)
        finally:
            await browser.close()
    assert errors == []


async def test_a_new_users_first_device_appears_on_the_open_page(client: Client) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with async_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(str(client.make_url("/")))
            await expect(page.locator("#no-devices")).to_contain_text("usagehub devices add")
            await expect(page.locator("#live")).to_contain_text("live · updated", timeout=10_000)
            await page.screenshot(path=ARTIFACTS / "dashboard-empty.png", full_page=True)

            await _beat(client, await _register(client, "Laptop"))  # as the empty state says
            row = page.locator('tr[data-id="0"]')
            await expect(row.locator(".beats")).to_have_text("1", timeout=10_000)
            await expect(row.locator(".status")).to_have_text("online")
            await expect(page.locator("#no-devices")).to_have_count(0)
            assert await _chart_total(page, "bpm-0") == 1
            await page.screenshot(path=ARTIFACTS / "dashboard-first-device.png", full_page=True)
        finally:
            await browser.close()
    assert errors == []
