"""The heartbeat API: devices, beats, statistics, the status page and the stats WebSocket."""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template
from typing import Any

import asyncpg
from aiohttp import web

from services.gateway import keys
from services.gateway.errors import http_error
from services.gateway.stats import read_snapshot, stats_view
from services.gateway.writes import idempotency_key, raise_for_reply, send_command
from shared.commands import Command, RecordBeat, RecordPageVisit, RegenerateDeviceToken, RegisterDevice, Reply
from shared.events import now
from shared.secrets import same_secret

READ_BY = ("heartbeat",)
MAX_BODY = 4096


async def _send(request: web.Request, cmd: Command) -> Reply:
    settings = request.app[keys.SETTINGS]
    reply = await send_command(
        request.app[keys.NATS],
        request.app[keys.WATCH],
        cmd,
        read_by=READ_BY,
        command_timeout=settings.command_timeout,
        read_timeout=settings.read_your_writes_timeout,
    )
    raise_for_reply(reply)
    return reply


def _require_admin(request: web.Request) -> None:
    if not same_secret(request.headers.get("Authorization"), request.app[keys.SETTINGS].secret_key):
        raise http_error(401, "invalid or missing Authorization header")


async def _json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise http_error(400, "request body too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise http_error(400, "request body too large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise http_error(400, "request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise http_error(400, "request body must be a JSON object")
    return body


async def register_device(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await _json_object(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise http_error(400, "name must be a non-empty string")
    reply = await _send(request, RegisterDevice(name=name, idempotency_key=idempotency_key(request)))
    return web.json_response(reply.result)


def _device_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise http_error(404, f"device {raw} does not exist")
    return int(raw)


async def generate_token(request: web.Request) -> web.Response:
    _require_admin(request)
    reply = await _send(request, RegenerateDeviceToken(device_id=_device_id(request)))
    return web.json_response(reply.result)


async def beat(request: web.Request) -> web.Response:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token or len(token) > 512:
        raise http_error(401, "invalid or missing Authorization header")
    reply = await _send(request, RecordBeat(token=token, idempotency_key=idempotency_key(request)))
    return web.Response(text=str(reply.result["timestamp"]), content_type="text/plain")


async def stats_document(pool: asyncpg.Pool) -> str:
    """The statistics as sent by ``GET /api/stats`` and, once a second, by the WebSocket feed."""
    return json.dumps(stats_view(await read_snapshot(pool), now()))


async def stats(request: web.Request) -> web.Response:
    return web.Response(text=await stats_document(request.app[keys.POOL]), content_type="application/json")


async def stats_ws(request: web.Request) -> web.WebSocketResponse:
    return await request.app[keys.FEED].serve(request)


_PAGE = Template(resources.files("services.gateway").joinpath("templates/index.html").read_text("utf-8"))


async def index(request: web.Request) -> web.Response:
    # Every view of the page is a visit; API calls never are.
    await _send(request, RecordPageVisit(path=request.path))
    view = stats_view(await read_snapshot(request.app[keys.POOL]), now())
    rows = "".join(
        f'<tr data-id="{d["id"]}"><td>{d["id"]}</td><td>{html.escape(d["name"])}</td>'
        f'<td class="ts" data-ts="{d["last_beat"] or ""}"></td><td>{d["num_beats"]}</td></tr>'
        for d in view["devices"]
    )
    page = _PAGE.substitute(
        last_seen=view["last_seen"] or "",
        last_seen_relative="" if view["last_seen_relative"] is None else view["last_seen_relative"],
        longest_absence=view["longest_absence"],
        num_visits=view["num_visits"],
        total_beats=view["total_beats"],
        uptime=view["uptime"],
        device_rows=rows,
    )
    return web.Response(text=page, content_type="text/html")


def setup_heartbeat_routes(app: web.Application, device_routes: bool) -> None:
    app.router.add_get("/", index)
    if device_routes:  # the document: without a secret key these routes do not exist
        app.router.add_post("/api/devices", register_device)
        app.router.add_post("/api/devices/{id}/token/generate", generate_token)
    app.router.add_post("/api/beat", beat)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/stats/ws", stats_ws)
