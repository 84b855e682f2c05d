"""The heartbeat API: devices, beats, statistics, the status page and the stats WebSocket."""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template

import asyncpg
from aiohttp import web

from services.gateway import keys
from services.gateway.errors import http_error
from services.gateway.heartbeat_read import read_snapshot, stats_view
from services.gateway.requests import json_object, path_id, presented_token, require_admin, send
from services.gateway.writes import idempotency_key
from shared.commands import RecordBeat, RecordPageVisit, RegenerateDeviceToken, RegisterDevice
from shared.events import now
from shared.secrets import hash_token, new_token

READ_BY = ("heartbeat",)
MAX_BODY = 4096


async def register_device(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        body = await json_object(request, MAX_BODY)
    except ValueError as exc:
        raise http_error(400, str(exc)) from None
    name = body.get("name")
    if not isinstance(name, str):
        raise http_error(400, "name must be a non-empty string")
    # The token is made here and only its hash crosses the bus: the plaintext is in this answer only.
    token = new_token()
    cmd = RegisterDevice(name=name, token_hash=hash_token(token), idempotency_key=idempotency_key(request))
    reply = await send(request, cmd, READ_BY)
    return web.json_response({**reply.result, "token": token})


async def generate_token(request: web.Request) -> web.Response:
    require_admin(request)
    token = new_token()
    cmd = RegenerateDeviceToken(device_id=path_id(request, "device"), token_hash=hash_token(token))
    reply = await send(request, cmd, READ_BY)
    return web.json_response({**reply.result, "token": token})


async def beat(request: web.Request) -> web.Response:
    token = presented_token(request)
    cmd = RecordBeat(token_hash=hash_token(token), idempotency_key=idempotency_key(request))
    reply = await send(request, cmd, READ_BY)
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
    await send(request, RecordPageVisit(path=request.path), READ_BY)
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
