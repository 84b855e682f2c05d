"""What every route module needs from a request: admin auth, a JSON object body, a path id, and
sending a command with read-your-writes."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

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


async def json_object(request: web.Request, max_body: int) -> dict[str, Any]:
    """The body as a JSON object; raises ValueError with the reason otherwise."""
    raw = await request.content.read(max_body + 1)
    if len(raw) > max_body:
        raise ValueError("request body too large")
    try:
        # msgspec refuses lone surrogates, which could never be encoded into a command.
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise ValueError("request body must be a JSON object") from None
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
        request.app[keys.NATS],
        request.app[keys.WATCH],
        cmd,
        read_by=read_by,
        command_timeout=settings.command_timeout,
        read_timeout=settings.read_your_writes_timeout,
    )
    raise_for_reply(reply)
    return reply
