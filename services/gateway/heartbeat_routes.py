"""The heartbeat API: devices, beats, statistics and the stats WebSocket (its status page, ``/``, is
the dashboard: dashboard_routes.py)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from services.gateway import keys
from services.gateway.contract import decode_fields
from services.gateway.errors import http_error
from services.gateway.heartbeat_contract import RegisterDeviceBody
from services.gateway.heartbeat_read import LastDevicesJson, read_stats_json
from services.gateway.requests import json_object, path_id, presented_token, require_admin, send
from services.gateway.writes import idempotency_key
from services.gateway.ws import origin_allowed
from shared.commands import RecordBeat, RegenerateDeviceToken, RegisterDevice
from shared.events import now
from shared.secrets import hash_token, new_token

READ_BY = ("heartbeat",)
MAX_BODY = 4096


async def register_device(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        name = decode_fields(await json_object(request, MAX_BODY), RegisterDeviceBody).name
    except ValueError as exc:
        raise http_error(400, str(exc)) from None
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


async def stats_document(pool: asyncpg.Pool, devices: LastDevicesJson) -> str:
    """The statistics as sent by ``GET /api/stats`` and, once a second, by the WebSocket feed."""
    return await read_stats_json(pool, devices, now())


async def stats(request: web.Request) -> web.Response:
    document = await stats_document(request.app[keys.POOL], request.app[keys.STATS_DEVICES])
    return web.Response(text=document, content_type="application/json")


async def stats_ws(request: web.Request) -> web.WebSocketResponse:
    # A page elsewhere must not open the feed with its visitors' browsers (nor count against the cap).
    allowed = request.app[keys.SETTINGS].ws_allowed_origin_set
    if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), allowed):
        raise http_error(403, "WebSocket connections are not allowed from this origin")
    return await request.app[keys.FEED].serve(request)


def setup_heartbeat_routes(app: web.Application, device_routes: bool) -> None:
    checked = app[keys.CREDENTIAL_ROUTES]
    if device_routes:  # the document: without a secret key these routes do not exist
        checked.add(app.router.add_post("/api/devices", register_device))
        checked.add(app.router.add_post("/api/devices/{id}/token/generate", generate_token))
    checked.add(app.router.add_post("/api/beat", beat))
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/stats/ws", stats_ws)
