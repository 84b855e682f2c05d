"""The dashboard: the page at ``/`` (the heartbeat document's status page, grown to every API), its
icon, and the fragment its script refreshes the other panels from. A view of the page is a visit."""

from __future__ import annotations

import time
from string import Template

from aiohttp import web

from services.gateway import keys
from services.gateway.auth_limits import client_address
from services.gateway.dashboard_page import (
    ONLINE_WITHIN,
    dashboard_body,
    etag_matches,
    live_panels,
    panels_etag,
)
from services.gateway.dashboard_read import read_board
from services.gateway.heartbeat_read import read_snapshot, stats_view
from services.gateway.heartbeat_visits import (
    COOKIE,
    COOKIE_MAX_AGE,
    cookie_visitor,
    fallback_visitor,
    is_visitor_cookie,
    new_cookie_value,
)
from services.gateway.requests import send
from services.gateway.security_headers import FAVICON, PAGE_TEMPLATE
from shared.commands import RecordPageVisit
from shared.events import now

# Visits are counted by the heartbeat projection (the document's page-visit statistics).
READ_BY = ("heartbeat",)


# The page's inline script and style are allowed by hash in the Content-Security-Policy.
_PAGE = Template(PAGE_TEMPLATE)


def _visitor(request: web.Request) -> tuple[str, str | None]:
    """The visitor viewing the page, and the cookie to give them when they brought none."""
    cookie = request.cookies.get(COOKIE)
    if is_visitor_cookie(cookie):
        return cookie_visitor(cookie), None
    limits = request.app[keys.AUTH_LIMITS]
    address = client_address(request.remote, request.headers.get("X-Forwarded-For"), limits.proxies)
    key = request.app[keys.SETTINGS].secret_key.encode()
    return fallback_visitor(address, request.headers.get("User-Agent", ""), key), new_cookie_value()


async def index(request: web.Request) -> web.Response:
    # A visit is a visitor's session (API calls never are): only a view that may start one is sent.
    visitors = request.app[keys.VISITORS]
    visitor, new_cookie = _visitor(request)
    at = time.monotonic()
    if visitors.starts_session(visitor, at):
        # Its next views bring the new cookie: the same visitor, in the same session, here and
        # (through the event) in the projection, whichever gateway they reach.
        given = "" if new_cookie is None else cookie_visitor(new_cookie)
        cmd = RecordPageVisit(path=request.path, visitor=visitor, cookie_visitor=given)
        await send(request, cmd, READ_BY)
        if given:
            visitors.viewed(given, at)
    visitors.viewed(visitor, at)
    pool = request.app[keys.POOL]
    board = await read_board(pool, now())
    view = stats_view(await read_snapshot(pool), board.now)
    page = _PAGE.substitute(
        online_within=int(ONLINE_WITHIN.total_seconds()),
        body=dashboard_body(board, view, f"{request.scheme}://{request.host}"),
    )
    response = web.Response(text=page, content_type="text/html")
    if new_cookie is not None:
        response.set_cookie(
            COOKIE,
            new_cookie,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
    return response


async def dashboard_panels(request: web.Request) -> web.Response:
    """The page's panels after the heartbeat one, as the page renders them, for its script to swap
    in; 304 when they are what the page has (``If-None-Match``). Not a visit: the page was one."""
    board = await read_board(request.app[keys.POOL], now(), with_devices=False)
    fragment = live_panels(board, f"{request.scheme}://{request.host}")
    etag = panels_etag(fragment)
    # no-cache: a browser's cache must ask each time (the panels change with every write).
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(text=fragment, content_type="text/html", headers=headers)


async def favicon(request: web.Request) -> web.Response:
    return web.Response(
        text=FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


def setup_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/favicon.svg", favicon)
    app.router.add_get("/dashboard/panels", dashboard_panels)
