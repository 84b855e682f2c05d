"""What every route module needs from a request: admin auth, a JSON object body, a path id, and
sending a command with read-your-writes."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from services.gateway import keys
from services.gateway.errors import http_error
from services.gateway.writes import raise_for_reply, send_command
from shared import metrics
from shared.commands import Command, Reply
from shared.secrets import same_secret


def require_admin(request: web.Request) -> None:
    """``Authorization`` must equal ``USAGEHUB_SECRET_KEY`` (constant time); admin routes do not
    exist without a key (404), so an empty key is never compared."""
    secret = request.app[keys.SETTINGS].secret_key
    if not secret:
        raise http_error(404, "not found")
    if not same_secret(request.headers.get("Authorization"), secret):
        raise http_error(401, "invalid or missing Authorization header")


_TOKEN = re.compile(r"^[\x21-\x7e]{1,512}$")


def presented_token(request: web.Request) -> str:
    """The credential in ``Authorization`` (``Bearer`` optional): printable ASCII, or 401. Bytes
    that are not valid UTF-8 arrive as surrogates and are refused here, never hashed."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not _TOKEN.match(token):
        raise http_error(401, "invalid or missing Authorization header")
    return token


class BodyTooLarge(ValueError):
    """The body is longer than the route accepts (a ValueError: routes answer 400 or 413)."""


async def read_body(request: web.Request, max_body: int) -> bytes:
    """The whole body, however many TCP segments it arrives in, bounded by ``max_body`` bytes and by
    ``USAGEHUB_HTTP_BODY_TIMEOUT`` (408 when it stalls: a ``Content-Length`` never sent in full)."""
    if request.content_length is not None and request.content_length > max_body:
        raise BodyTooLarge("request body too large")
    try:
        # To the end (also cached for request.post()); the server's body deadline
        # (USAGEHUB_HTTP_BODY_TIMEOUT) ends a stalled read with 408.
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("request body too large") from None
    if len(raw) > max_body:
        raise BodyTooLarge("request body too large")
    return raw


async def read_form(
    request: web.Request, max_body: int
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """A form body (urlencoded or multipart), whole, bounded and timed as ``read_body``."""
    if request.content_length is not None and request.content_length > max_body:
        raise BodyTooLarge("request body too large")
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("request body too large") from None
    except ValueError:
        raise ValueError("request body is not a valid UTF-8 form") from None
    except HttpProcessingError:  # a multipart part whose headers are not HTTP headers
        raise ValueError("request body is not a valid form: a part's headers are malformed") from None


def decode_json(raw: bytes) -> Any:
    """JSON from bytes; anything malformed (bad bytes, nesting too deep, numbers out of range) is a
    ValueError with the reason, never an exception the client could turn into a 500."""
    try:
        # msgspec refuses lone surrogates, which could never be encoded into a command.
        return msgspec.json.decode(raw)
    except RecursionError:
        raise ValueError("request body is nested too deeply") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None


async def json_object(request: web.Request, max_body: int) -> dict[str, Any]:
    """The body as a JSON object; raises ValueError with the reason otherwise."""
    raw = await read_body(request, max_body)
    try:
        body = decode_json(raw)
    except ValueError as exc:
        raise ValueError(f"request body must be a JSON object ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def path_id(request: web.Request, what: str) -> int:
    """The ``{id}`` of the path; anything that cannot be an id names nothing that exists (404)."""
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise http_error(404, f"{what} {raw} does not exist")
    return int(raw)


async def send(request: web.Request, cmd: Command, read_by: tuple[str, ...]) -> Reply:
    """Send ``cmd`` to ingest and wait until ``read_by`` show it; refusals become HTTP errors."""
    settings = request.app[keys.SETTINGS]
    metrics.GATEWAY_COMMANDS.labels(type(cmd).__name__).inc()
    reply = await send_command(
        request.app[keys.COMMANDS],
        request.app[keys.WATCH],
        cmd,
        read_by=read_by,
        read_timeout=settings.read_your_writes_timeout,
    )
    raise_for_reply(reply)
    return reply
