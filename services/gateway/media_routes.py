"""The media-usage API, as the original service (the Grid's ``usage``) answers it: its routes, status
codes and Argo documents (``application/vnd.argo+json``), errors as ``{"errorKey", "errorMessage"}``.

Views decode the request and send its command; ingest validates the body, so intake messages get the
same answers. Writes need the admin secret; reads are open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from services.gateway import keys, media_read
from services.gateway.requests import BodyTooLarge, decode_json, read_body, require_admin
from services.gateway.writes import idempotency_key, send_command
from shared.commands import (
    Command,
    DeleteMediaUsage,
    DeleteMediaUsages,
    UpdateMediaUsageStatus,
)
from shared.commands.media import MAX_BODY, MAX_DEPTH, json_depth, recording_command
from shared.settings import Settings

ARGO = "application/vnd.argo+json"
READ_BY = ("media_usage",)
View = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The errorKey of each refusal that is not a body's own (a bad body has its route's key).
_KEYS = {
    400: "bad-request",
    401: "authentication-failure",
    404: "not-found",
    408: "request-timeout",
    413: "request-entity-too-large",
    422: "unprocessable-request",
    503: "service-unavailable",
    504: "gateway-timeout",
}
_encoder = msgspec.json.Encoder()


class MediaError(Exception):
    """A refusal in the original's shape; ``key`` None takes the route's or the status's key."""

    def __init__(self, status: int, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.key = key


def argo(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type=ARGO)


def argo_error(status: int, key: str, message: str) -> web.Response:
    return argo({"errorKey": key, "errorMessage": message}, status)


def _message_of(exc: web.HTTPException) -> str:
    """The message of an error raised by a shared helper (``{"error": "..."}``), or its reason."""
    try:
        return str(msgspec.json.decode(exc.text or "")["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return exc.reason


def argo_errors(parse_key: str | None = None) -> Callable[[View], View]:
    """Answer every refusal of the view in the original's error shape (``parse_key`` for bad bodies)."""

    def wrap(view: View) -> View:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await view(request)
            except MediaError as exc:
                key = exc.key or (parse_key if exc.status == 400 and parse_key else None)
                return argo_error(exc.status, key or _KEYS.get(exc.status, "error"), exc.message)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                key = parse_key if exc.status == 400 and parse_key else _KEYS.get(exc.status, "error")
                response = argo_error(exc.status, key, _message_of(exc))
                for name in ("Retry-After", "Allow"):
                    if name in exc.headers:
                        response.headers[name] = exc.headers[name]
                return response

        return wrapped

    return wrap


# --- requests -----------------------------------------------------------------------------------


async def json_body(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The whole body as a JSON object: 413 beyond ``limit`` bytes, 408 when it stalls, else 400."""
    try:
        body = decode_json(await read_body(request, limit))
    except BodyTooLarge:
        raise MediaError(413, f"request body is larger than {limit} bytes") from None
    except ValueError as exc:
        raise MediaError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise MediaError(400, "request body must be a JSON object")
    if json_depth(body) > MAX_DEPTH:
        raise MediaError(400, f"request body is nested more than {MAX_DEPTH} deep")
    return body


async def _send(request: web.Request, cmd: Command) -> None:
    settings = request.app[keys.SETTINGS]
    reply = await send_command(
        request.app[keys.COMMANDS],
        request.app[keys.WATCH],
        cmd,
        read_by=READ_BY,
        read_timeout=settings.read_your_writes_timeout,
    )
    if reply.status >= 400:
        raise MediaError(reply.status, reply.error or "refused")


def _idempotency_key(request: web.Request) -> str | None:
    try:
        return idempotency_key(request)
    except web.HTTPException as exc:
        raise MediaError(400, _message_of(exc), "invalid-idempotency-key") from None


def _settings(request: web.Request) -> Settings:
    return request.app[keys.SETTINGS]


# --- writes -------------------------------------------------------------------------------------


@argo_errors("digital-usage-parse-failed")
async def record_digital(request: web.Request) -> web.Response:
    require_admin(request)
    key = _idempotency_key(request)
    body = await json_body(request)
    await _send(request, recording_command("digital", body, idempotency_key=key))
    return web.Response(status=202)


@argo_errors("print-usage-request-parse-failed")
async def record_print(request: web.Request) -> web.Response:
    require_admin(request)
    key = _idempotency_key(request)
    body = await json_body(request, _settings(request).media_print_max_kb * 1024)
    await _send(request, recording_command("print", body, idempotency_key=key))
    return web.Response(status=202)


def _record_data(kind: str) -> View:
    """Syndication, front and download bodies are ``{"data": {...}}``."""

    async def view(request: web.Request) -> web.Response:
        require_admin(request)
        key = _idempotency_key(request)
        body = await json_body(request)
        await _send(request, recording_command(kind, body, idempotency_key=key))
        return web.Response(status=202)

    return view


record_syndication = argo_errors("syndication-usage-parse-failed")(_record_data("syndication"))
record_front = argo_errors("front-usage-parse-failed")(_record_data("front"))
record_download = argo_errors("download-usage-parse-failed")(_record_data("download"))


@argo_errors("update-image-usage-status-failed")
async def update_status(request: web.Request) -> web.Response:
    require_admin(request)
    key = _idempotency_key(request)
    body = await json_body(request)
    info = request.match_info
    cmd = UpdateMediaUsageStatus(
        media_id=info["mediaId"], usage_id=info["usageId"], data=body.get("data"), idempotency_key=key
    )
    await _send(request, cmd)
    return web.Response(status=200)


@argo_errors()
async def delete_media_usages(request: web.Request) -> web.Response:
    require_admin(request)
    cmd = DeleteMediaUsages(media_id=request.match_info["mediaId"], idempotency_key=_idempotency_key(request))
    await _send(request, cmd)
    return web.Response(status=200)


@argo_errors()
async def delete_usage(request: web.Request) -> web.Response:
    require_admin(request)
    info = request.match_info
    cmd = DeleteMediaUsage(
        media_id=info["mediaId"], usage_id=info["usageId"], idempotency_key=_idempotency_key(request)
    )
    await _send(request, cmd)
    return web.Response(status=200)


# --- reads --------------------------------------------------------------------------------------


@argo_errors()
async def get_media_usages(request: web.Request) -> web.Response:
    media_id, settings = request.match_info["mediaId"], _settings(request)
    async with request.app[keys.POOL].acquire() as conn:
        rows = await media_read.all_usages(conn, media_id)
    document = media_read.media_usages_document(
        media_id, rows, settings.public_base_url, settings.media_api_base_url
    )
    if not document["data"]:
        raise MediaError(404, "No usages found.")
    return argo(document)


@argo_errors()
async def get_usage(request: web.Request) -> web.Response:
    settings = _settings(request)
    async with request.app[keys.POOL].acquire() as conn:
        row = await media_read.usage(conn, request.match_info["usageId"])
    if row is None:
        raise MediaError(404, "No usages found.")
    return argo(media_read.usage_response(row, settings.public_base_url, settings.media_api_base_url))


@argo_errors()
async def get_media(request: web.Request) -> web.Response:
    media_id, settings = request.match_info["mediaId"], _settings(request)
    async with request.app[keys.POOL].acquire() as conn:
        rows = await media_read.all_usages(conn, media_id)
    if not rows:
        raise MediaError(404, "No such image: it has no usages here.")
    return argo(
        media_read.media_document(media_id, rows, settings.public_base_url, settings.media_api_base_url)
    )


@argo_errors()
async def _absent(request: web.Request) -> web.Response:
    raise MediaError(404, "not found")


def setup_media_routes(app: web.Application, settings: Settings) -> None:
    # Without a secret key the write routes do not exist (as every admin route): they answer 404.
    def admin(view: View) -> View:
        return view if settings.secret_key else _absent

    router = app.router
    # Routes that check the admin key: their 2xx proves it to the failed-authentication limits.
    checked = app[keys.CREDENTIAL_ROUTES]
    checked.add(router.add_post("/usages/digital", admin(record_digital)))
    checked.add(router.add_post("/usages/print", admin(record_print)))
    checked.add(router.add_post("/usages/syndication", admin(record_syndication)))
    checked.add(router.add_post("/usages/front", admin(record_front)))
    checked.add(router.add_post("/usages/download", admin(record_download)))
    checked.add(router.add_put("/usages/status/update/{mediaId}/{usageId:.+}", admin(update_status)))
    router.add_get("/usages/media/{mediaId}", get_media_usages)
    checked.add(router.add_delete("/usages/media/{mediaId}", admin(delete_media_usages)))
    checked.add(router.add_delete("/usages/media/{mediaId}/{usageId:.+}", admin(delete_usage)))
    router.add_get("/usages/{usageId}", get_usage)
    router.add_get("/images/{mediaId}", get_media)
