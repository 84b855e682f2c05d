"""Typed application keys: what the gateway's views find on ``request.app``."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from nats.aio.client import Client

from services.gateway.answer_cache import AnswerCache
from services.gateway.auth_limits import AuthLimits
from services.gateway.command_batches import CommandBatches
from services.gateway.heartbeat_read import LastDevicesJson
from services.gateway.heartbeat_visits import RecentVisitors
from services.gateway.links_read import UsageFilter
from services.gateway.writes import ProjectionWatch
from services.gateway.ws import StatsFeed
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
NATS = web.AppKey("nats", Client)
POOL = web.AppKey("pool", asyncpg.Pool)
WATCH = web.AppKey("watch", ProjectionWatch)
# Every command goes to ingest through it (coalesced with those that arrive together).
COMMANDS = web.AppKey("commands", CommandBatches)
FEED = web.AppKey("feed", StatsFeed)
# USAGEHUB_HTTP_BODY_TIMEOUT: how long a request body may take to arrive (readers of bodies use it).
HTTP_BODY_TIMEOUT = web.AppKey("http_body_timeout", float)
AUTH_LIMITS = web.AppKey("auth_limits", AuthLimits)
VISITORS = web.AppKey("visitors", RecentVisitors)
# The heartbeat devices' JSON, kept for GET /api/stats and the feed while the read model is unchanged.
STATS_DEVICES = web.AppKey("stats_devices", LastDevicesJson)
# Routes that check a credential on every request: only their 2xx answers prove one.
CREDENTIAL_ROUTES = web.AppKey("credential_routes", set[web.AbstractRoute])
# GET /api/links/:id/usage as JSON, by (link, page, read-model version): body and whether more follow.
USAGE_ANSWERS = web.AppKey(
    "usage_answers", AnswerCache[tuple[int, UsageFilter, tuple[int, int]], tuple[bytes, bool]]
)
