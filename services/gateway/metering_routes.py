"""Metering: TR50 over HTTP (``POST /api``), its REST twin ``GET /api/usage/history``, the admin routes
for orgs, keys and principals, and the metering of every API family's calls made with an org key or
a session (``X-Api-Key`` / ``X-Session-Id``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from services.gateway import keys, metering_read
from services.gateway.contract import decode_fields
from services.gateway.errors import http_error
from services.gateway.metering_contract import NewKey, NewOrg, NewPrincipal
from services.gateway.metering_history import (
    MAX_ORG_CELLS,
    HistoryError,
    OrgInfo,
    buckets_for,
    history_answer,
    needs_scope,
    params_from_query,
    parse_history,
    plan_reads,
)
from services.gateway.metering_read import Caller
from services.gateway.metering_tally import ApiCallTally
from services.gateway.middleware import admit_body_credentials, body_credential_checked, credential_checks
from services.gateway.requests import json_object, require_admin, send
from services.gateway.writes import idempotency_key, send_command
from shared.commands.metering import AddPrincipal, CreateOrg, IssueApiKey, RevokeApiKey, StartSession
from shared.db import Conn
from shared.events import now
from shared.secrets import hash_token, new_token
from shared.settings import Settings

READ_BY = ("metering",)
MAX_BODY = 16 * 1024
MAX_ENVELOPE = 64 * 1024
MAX_COMMANDS = 50
DEFAULT_PAGE = 50
MAX_PAGE = 1000
DEFAULT_SESSION_TTL = 3600
MAX_SESSION_TTL = 86_400
TALLY = web.AppKey("metering_tally", ApiCallTally)
# The API family of each gateway routes module (``<domain>_routes.py``): the service calls count under.
FAMILIES = {
    "heartbeat": "heartbeat",
    "links": "lighthouse",
    "media": "media-usage",
    "contributions": "stackalytics",
    "metering": "tr50",
}
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
_CREDENTIAL = re.compile(r"^[\x21-\x7e]{1,512}$")
View = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = TypeVar("Body", NewOrg, NewKey, NewPrincipal)


# --- who is calling ---------------------------------------------------------------------------


def _credential(request: web.Request, header: str) -> str | None:
    """The header's credential: printable ASCII, or 401 (bytes that are not UTF-8 arrive as
    surrogates and are refused here, never hashed)."""
    value = request.headers.get(header)
    if value is None:
        return None
    if not _CREDENTIAL.match(value.strip()):
        raise http_error(401, f"invalid {header}")
    return value.strip()


@contextlib.asynccontextmanager
async def _snapshot(request: web.Request, *, needed: bool = True) -> AsyncIterator[Conn]:
    """A connection whose reads see one moment; ``needed=False`` for a single query (one statement
    sees one moment anyway, and the transaction would cost two round trips)."""
    async with request.app[keys.POOL].acquire() as conn:
        if not needed:
            yield conn
            return
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn


async def session_caller(request: web.Request, session_id: str) -> Caller | str:
    async with request.app[keys.POOL].acquire() as conn:
        return await metering_read.caller_by_session(conn, hash_token(session_id))


async def caller_from_headers(request: web.Request) -> Caller | None:
    """Whom ``X-Api-Key`` or ``X-Session-Id`` speaks for; ``None`` without either; 401 when wrong.

    Only the hash of what was presented is looked up: the plaintext never leaves this process.
    """
    key, session = _credential(request, "X-Api-Key"), _credential(request, "X-Session-Id")
    if key is not None and session is not None:
        raise http_error(400, "give X-Api-Key or X-Session-Id, not both")
    if key is not None:
        async with request.app[keys.POOL].acquire() as conn:
            caller = await metering_read.caller_by_key(conn, hash_token(key))
        if caller is None:
            raise http_error(401, "invalid or revoked API key")
        return caller
    if session is not None:
        found = await session_caller(request, session)
        if isinstance(found, str):
            raise http_error(401, found)
        return found
    return None


def family_of(request: web.Request) -> str | None:
    """The API family a request's route belongs to, named by its routes module; None for the rest."""
    module = getattr(request.match_info.handler, "__module__", "") or ""
    domain = module.removeprefix("services.gateway.").removesuffix("_routes")
    if domain == module or not module.endswith("_routes"):
        return None
    return FAMILIES.get(domain)


@web.middleware
async def metering_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count each call made with an org key or a session under its API family; never waits to count.
    TR50's own routes count themselves (one call per TR50 command)."""
    service = family_of(request)
    if service is not None and service != "tr50":
        caller = await caller_from_headers(request)
        if caller is not None:
            request.app[TALLY].add(caller.org_id, service)
            if "Authorization" not in request.headers:  # the org credential is all that was presented
                credential_checks(request).headers = True
    return await handler(request)


# --- usage.api.history ------------------------------------------------------------------------


async def run_history(request: web.Request, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """The answer's ``params``; raises HistoryError with the reason."""
    query = parse_history(params, now())
    if query.show_all and not caller.super_ops:
        raise HistoryError(
            403, "showAll covers every org and needs the super-ops role, which this caller lacks"
        )
    zone = zoneinfo.ZoneInfo(caller.time_zone)
    buckets = buckets_for(query, zone)
    # Without the list of orgs, the counters are one query (one source in the plan).
    async with _snapshot(request, needed=needs_scope(query)) as conn:
        if needs_scope(query):
            scope = await metering_read.scope(
                conn, caller, include_sub_orgs=query.include_sub_orgs, show_all=query.show_all
            )
        else:  # the caller's org stands for its subtree in a day series (its zone is the one asked for)
            scope = [OrgInfo(caller.org_id, caller.time_zone, (caller.org_id,))]
        if query.by_org and len(scope) * len(buckets.starts) > MAX_ORG_CELLS:
            raise HistoryError(
                400,
                f"dimension=org over {len(scope)} orgs and {len(buckets.starts)} buckets is more than"
                f" {MAX_ORG_CELLS} cells; shorten the range or use series=day",
            )
        plan = plan_reads(scope, caller.time_zone, query)
        counted = await metering_read.counters(conn, plan, caller.time_zone, buckets, by_org=query.by_org)
    return history_answer(buckets, counted, [o.org_id for o in scope] if query.by_org else ())


async def history(request: web.Request) -> web.Response:
    """The REST twin of ``usage.api.history``: the same parameters in the query string, the same
    ``params`` as the answer; a TR50 error is this status with ``{"error": ...}``."""
    caller = await caller_from_headers(request)
    if caller is None:
        raise http_error(401, "give an org key in X-Api-Key, or a session id in X-Session-Id")
    request.app[TALLY].add(caller.org_id, "tr50")
    try:
        answer = await run_history(request, caller, params_from_query(request.query.items()))
    except HistoryError as exc:
        raise http_error(exc.code, exc.message) from None
    return json_answer(answer)


def json_answer(document: dict[str, Any]) -> web.Response:
    """A history answer as JSON: a year of days by org is tens of thousands of numbers, which
    msgspec encodes several times faster than the standard library."""
    return web.Response(body=msgspec.json.encode(document), content_type="application/json")


# --- TR50 -------------------------------------------------------------------------------------


def tr50_error(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errorCodes": [code], "errorMessages": [message]}


def tr50_success(params: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "params": params}


async def authenticate(request: web.Request, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``api.authenticate``: an org key for a session id, made here; only hashes go to ingest."""
    unknown = sorted(set(params) - {"key", "ttl"})
    if unknown:
        return tr50_error(400, f"unknown parameters {unknown}; api.authenticate takes key and ttl"), None
    key, ttl = params.get("key"), params.get("ttl", DEFAULT_SESSION_TTL)
    if not isinstance(key, str) or not _CREDENTIAL.match(key):
        return tr50_error(400, "key must be the org's API key"), None
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_SESSION_TTL:
        return tr50_error(400, f"ttl must be a whole number of seconds from 1 to {MAX_SESSION_TTL}"), None
    key_hash = hash_token(key)
    # The read model first: a wrong key costs one indexed read, never a command to ingest. (Ingest
    # still decides: a key revoked since the read model was written is refused there.)
    async with request.app[keys.POOL].acquire() as conn:
        known = await metering_read.caller_by_key(conn, key_hash)
    if known is None:
        body_credential_checked(request, key, proven=False)
        return tr50_error(401, "invalid or revoked API key"), None
    session_id = new_token()
    cmd = StartSession(key_hash=key_hash, session_hash=hash_token(session_id), ttl=ttl)
    try:
        reply = await send(request, cmd, READ_BY)
    except web.HTTPException as exc:
        if exc.status == 401:
            body_credential_checked(request, key, proven=False)
        return tr50_error(exc.status, _message(exc)), None
    body_credential_checked(request, key, proven=True)
    org_id = reply.result["org"]
    answer = {"sessionId": session_id, "orgKey": org_id, "expiresAt": reply.result["expires_at"]}
    return tr50_success(answer), org_id


def _message(exc: web.HTTPException) -> str:
    """The ``error`` of a JSON error raised by ``http_error``."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(exc.text or "")["error"])
    return exc.reason


class Envelope:
    """Who an envelope's commands speak for: its ``auth`` block, else the request's headers; resolved
    once, on the first command that needs it."""

    def __init__(self, request: web.Request, auth: Any) -> None:
        self._request = request
        self.auth = auth
        self._resolved: Caller | dict[str, Any] | None = None

    async def caller(self) -> Caller | dict[str, Any]:
        if self._resolved is None:
            self._resolved = await self._resolve()
        return self._resolved

    async def _resolve(self) -> Caller | dict[str, Any]:
        if self.auth is None:
            try:
                caller = await caller_from_headers(self._request)
            except web.HTTPException as exc:
                if exc.status == 401:
                    credential_checks(self._request).headers = False
                return tr50_error(exc.status, _message(exc))
            if caller is None:
                return tr50_error(
                    401, 'not authenticated: send "auth": {"sessionId": ...} (from api.authenticate)'
                )
            credential_checks(self._request).headers = True
            return caller
        session = self.auth.get("sessionId") if isinstance(self.auth, dict) else None
        if not isinstance(session, str) or set(self.auth) != {"sessionId"}:
            return tr50_error(400, 'auth must be {"sessionId": "<id from api.authenticate>"}')
        if not _CREDENTIAL.match(session):
            body_credential_checked(self._request, session, proven=False)
            return tr50_error(401, "unknown session: authenticate again with api.authenticate")
        found = await session_caller(self._request, session)
        body_credential_checked(self._request, session, proven=not isinstance(found, str))
        return tr50_error(401, found) if isinstance(found, str) else found


async def run_command(request: web.Request, envelope: Envelope, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return tr50_error(400, 'a command is {"command": "<name>", "params": {...}}')
    if set(entry) - {"command", "params"}:
        return tr50_error(400, f"unknown fields {sorted(set(entry) - {'command', 'params'})} in a command")
    name, params = entry["command"], entry.get("params", {})
    if not isinstance(params, dict):
        return tr50_error(400, "params must be an object")
    tally = request.app[TALLY]
    if name == "api.authenticate":
        answer, org_id = await authenticate(request, params)
        if org_id is not None:
            tally.add(org_id, "tr50")
        return answer
    if name != "usage.api.history":
        return tr50_error(
            404, f"unknown command {name!r}; this server answers api.authenticate and usage.api.history"
        )
    caller = await envelope.caller()
    if not isinstance(caller, Caller):
        return caller
    tally.add(caller.org_id, "tr50")
    try:
        return tr50_success(await run_history(request, caller, params))
    except HistoryError as exc:
        return tr50_error(exc.code, exc.message)


def body_credentials(auth: Any, commands: Iterable[Any]) -> list[str]:
    """The credentials an envelope carries: its session id, and each api.authenticate's key."""
    found = [auth["sessionId"]] if isinstance(auth, dict) and isinstance(auth.get("sessionId"), str) else []
    for entry in commands:
        if not isinstance(entry, dict) or entry.get("command") != "api.authenticate":
            continue
        params = entry.get("params")
        if isinstance(params, dict) and isinstance(params.get("key"), str):
            found.append(params["key"])
    return found


async def tr50(request: web.Request) -> web.Response:
    """``POST /api``: commands keyed by the caller's ids, answered under the same ids, in order."""
    try:
        body = await json_object(request, MAX_ENVELOPE)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None
    envelope = Envelope(request, body.pop("auth", None))
    if not body:
        raise http_error(400, 'no commands: send {"<id>": {"command": "...", "params": {...}}}')
    if len(body) > MAX_COMMANDS:
        raise http_error(400, f"at most {MAX_COMMANDS} commands per request")
    # A guessed key or session id in the body is a failed authentication like a wrong header.
    refusal = admit_body_credentials(request, body_credentials(envelope.auth, body.values()))
    if refusal is not None:
        return refusal
    replies = {cid: await run_command(request, envelope, entry) for cid, entry in body.items()}
    return json_answer(replies)


# --- admin ------------------------------------------------------------------------------------


def _fields(body: dict[str, Any], kind: type[Body]) -> Body:
    """The body as the contract's type, or 400 naming the field."""
    try:
        return decode_fields(body, kind)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    if optional and request.content_length in (None, 0) and not request.body_exists:
        return {}
    try:
        return await json_object(request, MAX_BODY)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None


def _org_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not _ORG_ID.match(raw):
        raise http_error(404, f"org {raw} does not exist")
    return raw


def _paging(request: web.Request) -> tuple[int, int]:
    def number(name: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
            raise http_error(400, f"{name} must be an integer from {low} to {high}")
        return int(raw)

    return number("limit", DEFAULT_PAGE, 1, MAX_PAGE), number("offset", 0, 0, 999_999_999)


async def create_org(request: web.Request) -> web.Response:
    require_admin(request)
    body = _fields(await _body(request), NewOrg)
    cmd = CreateOrg(
        org_id=body.id,
        name=body.name,
        time_zone=body.time_zone,
        parent_id=body.parent,
        idempotency_key=idempotency_key(request),
    )
    reply = await send(request, cmd, READ_BY)
    return web.json_response(reply.result, status=201)


async def list_orgs(request: web.Request) -> web.Response:
    require_admin(request)
    limit, offset = _paging(request)
    async with _snapshot(request) as conn:
        return web.json_response(await metering_read.orgs_page(conn, limit, offset))


async def _existing_org(conn: Conn, org_id: str) -> dict[str, Any]:
    found = await metering_read.org(conn, org_id)
    if found is None:
        raise http_error(404, f"org {org_id} does not exist")
    return found


async def get_org(request: web.Request) -> web.Response:
    require_admin(request)
    org_id = _org_id(request)
    async with _snapshot(request) as conn:
        return web.json_response(await _existing_org(conn, org_id))


async def issue_key(request: web.Request) -> web.Response:
    """A new key of the org, shown in this answer only; ingest and the event log get its hash."""
    require_admin(request)
    org_id = _org_id(request)
    body = _fields(await _body(request, optional=True), NewKey)
    key = new_token()
    cmd = IssueApiKey(
        org_id=org_id,
        key_hash=hash_token(key),
        principal_id=body.principal,
        name=body.name or "",
        idempotency_key=idempotency_key(request),
    )
    reply = await send(request, cmd, READ_BY)
    return web.json_response({**reply.result, "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    org_id = _org_id(request)
    limit, offset = _paging(request)
    async with _snapshot(request) as conn:
        await _existing_org(conn, org_id)
        return web.json_response(await metering_read.keys_page(conn, org_id, limit, offset))


async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    raw = request.match_info["id"]
    if not _KEY_ID.match(raw):
        raise http_error(404, f"API key {raw} does not exist")
    await send(request, RevokeApiKey(key_id=raw), READ_BY)
    return web.Response(status=204)


async def add_principal(request: web.Request) -> web.Response:
    require_admin(request)
    body = _fields(await _body(request), NewPrincipal)
    cmd = AddPrincipal(
        principal_id=body.id,
        super_ops=bool(body.super_ops),
        idempotency_key=idempotency_key(request),
    )
    reply = await send(request, cmd, READ_BY)
    return web.json_response(reply.result, status=201)


async def _absent(request: web.Request) -> web.Response:
    raise http_error(404, "not found")


# --- wiring -----------------------------------------------------------------------------------


async def _tally(app: web.Application) -> AsyncIterator[None]:
    tally = ApiCallTally(
        lambda cmd: send_command(app[keys.COMMANDS], app[keys.WATCH], cmd, read_by=(), read_timeout=0)
    )
    app[TALLY] = tally
    task = asyncio.create_task(tally.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await tally.close()


def setup_metering_routes(app: web.Application, settings: Settings) -> None:
    """The routes, the middleware that meters every API family, and the tally's flushing."""

    def admin(view: View) -> View:
        # Without a secret key the admin routes do not exist (as the device and link admin routes).
        return view if settings.secret_key else _absent

    app.router.add_post("/api", tr50)  # settles its credentials itself (CredentialChecks)
    app[keys.CREDENTIAL_ROUTES].add(app.router.add_get("/api/usage/history", history))
    app.router.add_get("/api/orgs", admin(list_orgs))
    app.router.add_post("/api/orgs", admin(create_org))
    app.router.add_get("/api/orgs/{id}", admin(get_org))
    app.router.add_get("/api/orgs/{id}/keys", admin(list_keys))
    app.router.add_post("/api/orgs/{id}/keys", admin(issue_key))
    app.router.add_delete("/api/keys/{id}", admin(revoke_key))
    app.router.add_post("/api/principals", admin(add_principal))
    app.middlewares.append(metering_middleware)
    app.cleanup_ctx.append(_tally)
