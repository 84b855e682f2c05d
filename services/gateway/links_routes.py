"""The Lighthouse API: the link registry, usage posts and reads, statistics and CSV export."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from services.gateway import keys, links_read
from services.gateway.contract import decode_fields
from services.gateway.errors import http_error
from services.gateway.links_contract import LinkChange, NewLink, UsagePost
from services.gateway.requests import json_object, path_id, read_form, require_admin, send
from services.gateway.writes import idempotency_key
from shared.commands import Command, CreateLink, DeleteLink, RecordLinkUsage, Reply, UpdateLink
from shared.db import Conn
from shared.settings import Settings

READ_BY = ("links",)
MAX_BODY = 16 * 1024
DEFAULT_PAGE = 50
MAX_PAGE = 1000
# A usage list is a bare array (the Lighthouse document's clients read it whole, without paging),
# so its default page is its largest one: every link with up to 10,000 usages answers as before,
# and a longer one answers its first 10,000 with a Link: <…>; rel="next" header to the rest.
MAX_USAGE_PAGE = 10_000
DEFAULT_USAGE_PAGE = MAX_USAGE_PAGE
MAX_USER = 200
# Usage answers kept for repeated reads: a 10,000-usage page is about 800 KB, so this keeps twenty
# of the largest; kept small because a gateway keeps what it holds after a burst of reads.
USAGE_ANSWERS_MAX_BYTES = 16 * 1024 * 1024
View = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- requests ---------------------------------------------------------------------------------


def _link_id(request: web.Request) -> int:
    return path_id(request, "link")


async def _usage_user(request: web.Request) -> str:
    """The ``user`` argument, form-encoded (the document) or in a JSON object."""
    if request.content_type == "application/json":
        body = await json_object(request, MAX_BODY)
    else:
        form = await read_form(request, MAX_BODY)
        body = {"user": form["user"]} if "user" in form else {}  # a file's part is "not a string"
    try:
        return decode_fields(body, UsagePost).user
    except ValueError as exc:
        raise ValueError(f"{exc} (form-encoded, or in a JSON object)") from None


def _count(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise http_error(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise http_error(400, f"{name} must be an ISO 8601 time, e.g. 2016-03-04T14:53:25.740Z") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _usage_filter(request: web.Request, *, paged: bool) -> links_read.UsageFilter:
    user = request.query.get("user")
    if user is not None and (len(user) > MAX_USER or any(ord(c) < 32 for c in user)):
        raise http_error(400, f"user must be at most {MAX_USER} characters, without control characters")
    since, until = _time(request, "since"), _time(request, "until")
    if paged:
        limit = _count(request, "limit", DEFAULT_USAGE_PAGE, 1, MAX_USAGE_PAGE)
        offset = _count(request, "offset", 0, 0, 999_999_999) or 0
        return links_read.UsageFilter(user, since, until, limit, offset)
    return links_read.UsageFilter(user, since, until)


def _quality(accept: str, types: set[str]) -> float:
    best = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in types:
            continue
        q = 1.0
        for p in params:
            if p.lower().startswith("q="):
                with contextlib.suppress(ValueError):
                    q = float(p[2:])
        best = max(best, q)
    return best


def _wants_csv(request: web.Request) -> bool:
    chosen = request.query.get("format")
    if chosen is not None:
        if chosen not in {"json", "csv"}:
            raise http_error(400, "format must be json or csv")
        return chosen == "csv"
    accept = request.headers.get("Accept", "")
    csv_q = _quality(accept, {"text/csv"})
    return csv_q > 0 and csv_q > _quality(accept, {"application/json", "application/*", "*/*"})


# --- writes -----------------------------------------------------------------------------------


async def _send(request: web.Request, cmd: Command, problem: str | None = None) -> Reply:
    """Send ``cmd`` to ingest, which checks the link before the arguments.

    ``problem`` is what the gateway found wrong with the request; ``cmd`` then carries arguments
    ingest refuses, so the answer is still 404 for a missing link and ``problem`` for one that exists.
    """
    try:
        return await send(request, cmd, READ_BY)
    except web.HTTPBadRequest:
        if problem is not None:
            raise http_error(400, problem) from None
        raise


def _written_link(result: dict[str, Any]) -> dict[str, Any]:
    created_at = datetime.fromisoformat(result["created_at"])
    return links_read.link_json(
        result["id"], result["name"], result["url"], result["description"], created_at
    )


async def create_link(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        body = decode_fields(await json_object(request, MAX_BODY), NewLink)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None
    cmd = CreateLink(
        name=body.name,
        url=body.url,
        description=body.description or "",
        idempotency_key=idempotency_key(request),
    )
    reply = await _send(request, cmd)
    return web.json_response(_written_link(reply.result), status=201)


_UPDATABLE = ("name", "url", "description")


async def update_link(request: web.Request) -> web.Response:
    require_admin(request)
    link_id = _link_id(request)
    problem = None
    fields: dict[str, str] = {}
    try:
        change = decode_fields(await json_object(request, MAX_BODY), LinkChange)
        for name in _UPDATABLE:
            value = getattr(change, name)
            if value is not msgspec.UNSET:
                fields[name] = "" if value is None else value  # "description": null clears it
    except ValueError as exc:
        problem, fields = str(exc), {}
    reply = await _send(request, UpdateLink(link_id=link_id, **fields), problem)
    return web.json_response(_written_link(reply.result))


async def delete_link(request: web.Request) -> web.Response:
    require_admin(request)
    await _send(request, DeleteLink(link_id=_link_id(request)))
    return web.Response(status=204)


async def post_usage(request: web.Request) -> web.Response:
    link_id = _link_id(request)
    problem = None
    try:
        user = await _usage_user(request)
    except ValueError as exc:
        problem, user = str(exc), ""  # "" is refused after the link check, as ``problem``
    cmd = RecordLinkUsage(link_id=link_id, user=user, idempotency_key=idempotency_key(request))
    await _send(request, cmd, problem)
    return web.json_response({"status": "ok"}, status=201)


# --- reads ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _snapshot(request: web.Request) -> AsyncIterator[Conn]:
    async with (
        request.app[keys.POOL].acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        yield conn


async def _existing(conn: Conn, link_id: int) -> dict[str, Any]:
    found = await links_read.link(conn, link_id)
    if found is None:
        raise http_error(404, f"link {link_id} does not exist")
    return found


async def list_links(request: web.Request) -> web.Response:
    limit = _count(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
    offset = _count(request, "offset", 0, 0, 999_999_999) or 0
    async with _snapshot(request) as conn:
        page = await links_read.links_page(conn, limit, offset)
    return web.json_response(page)


async def get_link(request: web.Request) -> web.Response:
    link_id = _link_id(request)
    async with _snapshot(request) as conn:
        return web.json_response(await _existing(conn, link_id))


async def _usage_json(
    request: web.Request, conn: Conn, link_id: int, page: links_read.UsageFilter
) -> tuple[bytes, bool]:
    """The page as JSON, kept while the read model has not changed since it was read."""
    version = await links_read.version(conn)
    if version is None:  # nothing projected yet: nothing to key an answer by
        return await links_read.usage_json(conn, link_id, page)
    answers = request.app[keys.USAGE_ANSWERS]
    key = (link_id, page, version)
    found = answers.get(key)
    if found is None:
        found = await links_read.usage_json(conn, link_id, page)
        answers.put(key, found, len(found[0]))
    return found


async def get_usage(request: web.Request) -> web.Response:
    link_id = _link_id(request)
    async with _snapshot(request) as conn:
        await _existing(conn, link_id)  # before the arguments, as for POST
        wants_csv = _wants_csv(request)
        page = _usage_filter(request, paged=True)
        if wants_csv:
            items, more = await links_read.usage(conn, link_id, page)
        else:
            body, more = await _usage_json(request, conn, link_id, page)
    if wants_csv:
        response = web.Response(text=links_read.usage_csv(items), content_type="text/csv", charset="utf-8")
    else:
        response = web.Response(body=body, content_type="application/json", charset="utf-8")
    if more and page.limit:
        following = request.rel_url.update_query(offset=page.offset + page.limit, limit=page.limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


async def get_stats(request: web.Request) -> web.Response:
    link_id = _link_id(request)
    async with _snapshot(request) as conn:
        await _existing(conn, link_id)
        body = await links_read.stats(conn, link_id, _usage_filter(request, paged=False))
    return web.json_response(body)


async def _absent(request: web.Request) -> web.Response:
    raise http_error(404, "not found")


def setup_links_routes(app: web.Application, settings: Settings) -> None:
    # Without a secret key the admin routes do not exist (as the device routes): they answer 404.
    def admin(view: View) -> View:
        return view if settings.secret_key else _absent

    checked = app[keys.CREDENTIAL_ROUTES]
    app.router.add_get("/api/links", list_links)
    checked.add(app.router.add_post("/api/links", admin(create_link)))
    app.router.add_get("/api/links/{id}", get_link)
    checked.add(app.router.add_patch("/api/links/{id}", admin(update_link)))
    checked.add(app.router.add_delete("/api/links/{id}", admin(delete_link)))
    app.router.add_get("/api/links/{id}/usage", get_usage)
    app.router.add_post("/api/links/{id}/usage", post_usage)
    app.router.add_get("/api/links/{id}/stats", get_stats)
