"""The Stackalytics JSON API v1.0 (contribution statistics) and its admin routes: thin views that read
the common parameters, ask ``contributions_read``, and answer JSON, or JSONP with ``callback``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from services.gateway import contributions_read as read
from services.gateway import keys
from services.gateway.contributions_contract import StatsAnswer
from services.gateway.errors import http_error
from services.gateway.requests import BodyTooLarge, decode_json, read_body, require_admin, send
from shared.commands import Command
from shared.commands.contributions import (
    BlueprintData,
    EmailData,
    MarkData,
    RecordBlueprints,
    RecordEmails,
    RecordMarks,
    RemoveDirectoryEntry,
    SaveDirectory,
)
from shared.db import Conn
from shared.settings import Settings

READ_BY = ("contributions",)
# A command must fit one NATS message (1 MiB), so one request is one command: all of it or none.
MAX_BODY = 512 * 1024
CALLBACK = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,7}$")
DEFAULT_PAGE, MAX_PAGE = 10, 1000
DEFAULT_LIST_PAGE, MAX_LIST_PAGE = 1000, 10_000
MAX_QUERY = 200
MAX_PARAM = 1000
MAX_UNIX = 10**11
View = Callable[[web.Request], Awaitable[web.StreamResponse]]

# --- parameters -------------------------------------------------------------------------------------


def param(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once, as printable text of at most 1000 characters."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise http_error(400, f"give {name} at most once")
    if not values:
        return None
    value = values[0]
    if len(value) > MAX_PARAM or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise http_error(400, f"{name} must be printable text of at most {MAX_PARAM} characters")
    return value


def _unix(request: web.Request, name: str) -> int | None:
    raw = param(request, name)
    if raw is None or raw == "":
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits.isascii() or not digits.isdigit() or abs(int(raw)) > MAX_UNIX:
        raise http_error(400, f"{name} must be a Unix time (whole seconds), e.g. 1420070400")
    return int(raw)


def _count(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = param(request, name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise http_error(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _callback(request: web.Request) -> str | None:
    """A JSONP callback: a JavaScript name or dotted path, nothing that could be anything else."""
    name = param(request, "callback")
    if name is not None and not CALLBACK.match(name):
        raise http_error(400, "callback must be a JavaScript name such as myCallback or ns.handle")
    return name


def metric_of(request: web.Request) -> str:
    metric = (param(request, "metric") or "commits").lower()
    if metric not in read.METRICS:
        raise http_error(400, f"unknown metric {metric!r}; one of {', '.join(read.METRICS)}")
    return metric


def _known_list(values: list[str]) -> str:
    return ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")


async def _one_of(conn: Conn, what: str, query: str, value: str) -> str:
    found = await conn.fetchval(query, value)
    if found is None:
        raise http_error(400, f"unknown {what} {value!r}")
    return str(found)


# Exact name first, else any case (Stackalytics compares them lower-cased).
_MODULE = (
    "SELECT module FROM (SELECT module FROM contribution_modules WHERE lower(module) = lower($1)"
    " UNION SELECT module FROM contribution_month_sums WHERE rollup = 1 AND lower(module) = lower($1)) m"
    " ORDER BY module = $1 DESC, module LIMIT 1"
)
_COMPANY = (
    "SELECT company FROM (SELECT company_name AS company FROM contribution_companies"
    " WHERE lower(company_name) = lower($1) UNION SELECT company FROM contribution_month_sums"
    " WHERE rollup = 2 AND lower(company) = lower($1)) c ORDER BY company = $1 DESC, company LIMIT 1"
)
_PROJECT_TYPE = (
    "SELECT project_type FROM contribution_project_types WHERE lower(project_type) = lower($1)"
    " ORDER BY project_type = $1 DESC, project_type LIMIT 1"
)


async def selection(request: web.Request, conn: Conn) -> read.Selection:
    """The common parameters: release (default the current one) intersected with start/end dates,
    project type, module, company and user; an unknown value is 400."""
    start, end = _unix(request, "start_date"), _unix(request, "end_date")
    releases = await read.releases(conn)
    release = (param(request, "release") or (releases[-1].name if releases else "all")).lower()
    lo, hi = start, end
    if release != "all":
        if release not in {r.name for r in releases}:
            known = ["all", *(r.name for r in reversed(releases))]
            raise http_error(400, f"unknown release {release!r}; known: {_known_list(known)}")
        r_lo, r_hi = read.release_span(releases, release)
        lo = r_lo if lo is None else (lo if r_lo is None else max(lo, r_lo))
        hi = r_hi if hi is None else (hi if r_hi is None else min(hi, r_hi))
    project_type, modules = None, None
    if (given := param(request, "project_type")) is not None:
        found = await conn.fetchval(_PROJECT_TYPE, given)
        if found is None and given.lower() != "all":
            raise http_error(400, f"unknown project_type {given!r}")
        if found is not None:
            project_type = str(found)
            rows = await conn.fetch(
                "SELECT module FROM contribution_project_type_modules WHERE project_type = $1", project_type
            )
            modules = frozenset(r["module"] for r in rows)
    module = param(request, "module")
    if module is not None:
        module = await _one_of(conn, "module", _MODULE, module)
    company = param(request, "company")
    if company is not None:
        company = await _one_of(conn, "company", _COMPANY, company)
    user_id = param(request, "user_id")
    if user_id is not None:
        user_id = await _one_of(
            conn, "user_id", "SELECT user_id FROM contribution_users WHERE user_id = lower($1)", user_id
        )
    return read.Selection(lo, hi, project_type, modules, module, company, user_id)


# --- answers ----------------------------------------------------------------------------------------


def _answer(callback: str | None, document: dict[str, Any] | msgspec.Struct) -> web.Response:
    body = msgspec.json.encode(document)
    if callback is None:
        return web.Response(body=body, content_type="application/json")
    return web.Response(
        body=callback.encode() + b"(" + body + b");",
        content_type="application/javascript",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@contextlib.asynccontextmanager
async def _snapshot(request: web.Request) -> AsyncIterator[Conn]:
    async with (
        request.app[keys.POOL].acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        yield conn


def _stats(group: str) -> View:
    async def view(request: web.Request) -> web.Response:
        callback, metric = _callback(request), metric_of(request)
        async with _snapshot(request) as conn:
            sel = await selection(request, conn)
            stats = await read.stats(conn, sel, metric, group)
        return _answer(callback, StatsAnswer(stats))

    return view


async def get_activity(request: web.Request) -> web.Response:
    callback, metric = _callback(request), metric_of(request)
    page_size = _count(request, "page_size", DEFAULT_PAGE, 1, MAX_PAGE)
    start_record = _count(request, "start_record", 0, 0, 999_999_999)
    async with _snapshot(request) as conn:
        sel = await selection(request, conn)
        records = await read.activity(conn, sel, metric, start_record, page_size)
    return _answer(callback, {"activity": records})


async def get_contribution(request: web.Request) -> web.Response:
    callback = _callback(request)
    metric_of(request)  # validated like everywhere; the summary has every metric
    async with _snapshot(request) as conn:
        sel = await selection(request, conn)
        summary = await read.contribution(conn, sel)
    return _answer(callback, {"contribution": summary})


async def get_releases(request: web.Request) -> web.Response:
    callback = _callback(request)
    async with _snapshot(request) as conn:
        releases = await read.releases(conn)
    data = [{"id": "all", "text": "All"}] + [
        {"id": r.name, "text": r.name.capitalize()} for r in reversed(releases)
    ]
    return _answer(callback, {"data": data, "default": releases[-1].name if releases else "all"})


async def get_project_types(request: web.Request) -> web.Response:
    callback = _callback(request)
    async with _snapshot(request) as conn:
        rows = await conn.fetch(
            "SELECT project_type, title, child FROM contribution_project_types ORDER BY project_type"
        )
    data = [{"id": r["project_type"], "text": r["title"], "child": r["child"]} for r in rows]
    if not any(d["id"].lower() == "all" for d in data):
        data.insert(0, {"id": "all", "text": "All", "child": False})
    return _answer(callback, {"data": data, "default": "all"})


def _paged(request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    page_size = _count(request, "page_size", DEFAULT_LIST_PAGE, 1, MAX_LIST_PAGE)
    start_record = _count(request, "start_record", 0, 0, 999_999_999)
    return items[start_record : start_record + page_size]


def _query(request: web.Request) -> str | None:
    query = param(request, "query")
    if query is not None and len(query) > MAX_QUERY:
        raise http_error(400, f"query must be at most {MAX_QUERY} characters")
    return query.lower() if query else None


def _list(group: str) -> View:
    """Modules, companies or users with records under the other filters (as Stackalytics builds its
    filter lists), optionally those whose id or name contains ``query``."""

    async def view(request: web.Request) -> web.Response:
        callback, metric, query = _callback(request), metric_of(request), _query(request)
        async with _snapshot(request) as conn:
            sel = await selection(request, conn)
            sel = read.Selection(
                sel.lo,
                sel.hi,
                sel.project_type,
                sel.modules,
                None if group == "module" else sel.module,
                None if group == "company" else sel.company,
                None if group == "user_id" else sel.user_id,
            )
            found = await read.keys_with(conn, sel, metric, group)
        items = [{"id": key, "text": name} for key, name in found]
        if query:
            items = [i for i in items if query in i["id"].lower() or query in i["text"].lower()]
        items.sort(key=lambda i: (i["text"].lower(), i["id"]))
        return _answer(callback, {"data": _paged(request, items)})

    return view


# --- admin writes -----------------------------------------------------------------------------------


async def _body(request: web.Request) -> Any:
    """The whole JSON body: 400 when larger than one command can be (as every route answers a body
    over its limit) or not JSON."""
    try:
        # These routes take larger bodies than the gateway's default (a list of records).
        raw = await read_body(request.clone(client_max_size=MAX_BODY), MAX_BODY)
    except BodyTooLarge:
        raise http_error(400, f"request body too large: at most {MAX_BODY} bytes per request") from None
    try:
        return decode_json(raw)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None


def _records(body: Any, what: str, data_type: type[msgspec.Struct]) -> list[Any]:
    if not isinstance(body, list):
        raise http_error(400, f"request body must be a JSON list of {what}")
    out = []
    for i, item in enumerate(body):
        try:
            out.append(msgspec.convert(item, data_type))
        except msgspec.ValidationError as exc:
            raise http_error(400, f"{what}[{i}]: {exc}") from None
    return out


async def _write(request: web.Request, cmd: Command) -> web.Response:
    reply = await send(request, cmd, READ_BY)
    return web.json_response(reply.result)


async def post_marks(request: web.Request) -> web.Response:
    require_admin(request)
    return await _write(request, RecordMarks(marks=_records(await _body(request), "marks", MarkData)))


async def post_emails(request: web.Request) -> web.Response:
    require_admin(request)
    return await _write(request, RecordEmails(emails=_records(await _body(request), "emails", EmailData)))


async def post_blueprints(request: web.Request) -> web.Response:
    require_admin(request)
    items = _records(await _body(request), "blueprints", BlueprintData)
    return await _write(request, RecordBlueprints(blueprints=items))


async def post_directory(request: web.Request) -> web.Response:
    require_admin(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise http_error(400, "request body must be a JSON object shaped as Stackalytics' default_data.json")
    body = {k: v for k, v in body.items() if k not in {"command", "idempotency_key", "request_id"}}
    try:
        cmd = msgspec.convert(body, SaveDirectory)
    except msgspec.ValidationError as exc:
        raise http_error(400, str(exc)) from None
    return await _write(request, cmd)


async def delete_directory_entry(request: web.Request) -> web.Response:
    require_admin(request)
    kind, key = request.match_info["kind"], request.match_info["key"]
    await send(request, RemoveDirectoryEntry(kind=kind, key=key), READ_BY)
    return web.Response(status=204)


async def _absent(request: web.Request) -> web.Response:
    raise http_error(404, "not found")


def setup_contributions_routes(app: web.Application, settings: Settings) -> None:
    # Without a secret key the admin routes do not exist (as the device and link admin routes).
    def admin(view: View) -> View:
        return view if settings.secret_key else _absent

    api = "/api/1.0"
    app.router.add_get(f"{api}/stats/modules", _stats("module"))
    app.router.add_get(f"{api}/stats/companies", _stats("company"))
    app.router.add_get(f"{api}/stats/engineers", _stats("user_id"))
    app.router.add_get(f"{api}/activity", get_activity)
    app.router.add_get(f"{api}/contribution", get_contribution)
    app.router.add_get(f"{api}/releases", get_releases)
    app.router.add_get(f"{api}/project_types", get_project_types)
    app.router.add_get(f"{api}/modules", _list("module"))
    app.router.add_get(f"{api}/companies", _list("company"))
    app.router.add_get(f"{api}/users", _list("user_id"))
    app.router.add_post(f"{api}/marks", admin(post_marks))
    app.router.add_post(f"{api}/emails", admin(post_emails))
    app.router.add_post(f"{api}/blueprints", admin(post_blueprints))
    app.router.add_post(f"{api}/directory", admin(post_directory))
    app.router.add_delete(f"{api}/directory/{{kind}}/{{key}}", admin(delete_directory_entry))
