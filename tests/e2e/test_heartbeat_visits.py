"""A visit is a visitor's session: reloads append nothing, each visitor counts once per session."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from shared.events import PageVisited
from tests.conftest import Services, gateway
from tests.integration.helpers import all_events, raw_stream_bytes

Client = TestClient[web.Request, web.Application]


async def visits(js: JetStreamContext) -> list[PageVisited]:
    return [e for _, e in await all_events(js) if isinstance(e, PageVisited)]


async def num_visits(client: Client) -> int:
    n: int = (await (await client.get("/api/stats")).json())["num_visits"]
    return n


async def test_50_reloads_by_one_visitor_are_one_event_and_one_visit(
    client: Client, js: JetStreamContext
) -> None:
    first = await client.get("/")
    assert first.status == 200
    cookie = first.cookies["uh_visitor"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert cookie["max-age"] == str(365 * 24 * 3600)
    for _ in range(49):
        resp = await client.get("/")
        assert resp.status == 200 and "uh_visitor" not in resp.cookies  # kept, not renewed
    events = await visits(js)
    assert len(events) == 1 and len(events[0].visitor) == 64
    assert await num_visits(client) == 1
    # Only hashes reach the stream: neither the cookie nor the address and User-Agent.
    raw = await raw_stream_bytes(js, "USAGEHUB_EVENTS", "usagehub.events.>")
    assert cookie.value.encode() not in raw and b"Python/3" not in raw


async def test_two_visitors_are_two_visits(client: Client, js: JetStreamContext) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        for _ in range(3):
            assert (await client.get("/")).status == 200
            async with other.get(client.make_url("/"), headers={"User-Agent": "other"}) as resp:
                assert resp.status == 200
    assert len({e.visitor for e in await visits(js)}) == 2
    assert await num_visits(client) == 2


async def test_a_client_without_cookies_is_one_visitor_by_address_and_user_agent(
    client: Client, js: JetStreamContext
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as curl:
        for agent in ("curl/8", "curl/8", "curl/8", "wget"):
            async with curl.get(client.make_url("/"), headers={"User-Agent": agent}) as resp:
                assert resp.status == 200 and "uh_visitor" in resp.cookies  # offered every time
    assert len(await visits(js)) == 2
    assert await num_visits(client) == 2


async def test_a_first_view_and_the_reloads_with_its_new_cookie_are_one_visit(
    client: Client, js: JetStreamContext
) -> None:
    for _ in range(5):
        assert (await client.get("/", headers={"User-Agent": "browser"})).status == 200
    assert len(await visits(js)) == 1 and await num_visits(client) == 1


async def test_a_restarted_gateway_appends_but_the_session_is_counted_once(
    services: Services, js: JetStreamContext
) -> None:
    cookie = ""
    for _ in range(2):  # two gateway processes in turn, each knowing nothing of the other's views
        async with TestClient(gateway(services.settings), cookie_jar=aiohttp.DummyCookieJar()) as client:
            for _ in range(3):
                resp = await client.get("/", headers={"Cookie": f"uh_visitor={cookie}"} if cookie else {})
                assert resp.status == 200
                cookie = cookie or resp.cookies["uh_visitor"].value
            assert await num_visits(client) == 1
    events = await visits(js)
    # The first view (no cookie yet) and the restarted gateway's first view of this visitor.
    assert len(events) == 2 and events[0].cookie_visitor == events[1].visitor
