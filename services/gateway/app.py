"""``init_app()`` builds the gateway: resources in ``cleanup_ctx``, routes in ``setup_routes``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway import keys
from services.gateway.answer_cache import AnswerCache
from services.gateway.auth_limits import AuthLimits
from services.gateway.command_batches import CommandBatches
from services.gateway.contributions_routes import setup_contributions_routes
from services.gateway.dashboard_routes import setup_dashboard_routes
from services.gateway.docs_routes import setup_docs_routes
from services.gateway.health_routes import setup_health_routes
from services.gateway.heartbeat_read import LastDevicesJson
from services.gateway.heartbeat_routes import setup_heartbeat_routes, stats_document
from services.gateway.heartbeat_visits import MAX_TRACKED_VISITORS, RecentVisitors
from services.gateway.links_routes import USAGE_ANSWERS_MAX_BYTES, setup_links_routes
from services.gateway.media_routes import setup_media_routes
from services.gateway.metering_routes import setup_metering_routes
from services.gateway.middleware import (
    auth_limit_middleware,
    error_middleware,
    metrics_middleware,
    request_id_middleware,
)
from services.gateway.security_headers import add_security_headers
from services.gateway.writes import ProjectionWatch, subscribe_notices
from services.gateway.ws import StatsFeed
from services.projector.heartbeat import VISIT_SESSION
from shared.bus import close, connect
from shared.db import create_pool
from shared.settings import Settings


def setup_routes(app: web.Application, settings: Settings) -> None:
    setup_health_routes(app)
    setup_dashboard_routes(app)
    setup_heartbeat_routes(app, settings.device_routes_enabled)
    setup_links_routes(app, settings)
    setup_media_routes(app, settings)
    setup_metering_routes(app, settings)
    setup_contributions_routes(app, settings)
    setup_docs_routes(app, settings)


async def _nats(app: web.Application) -> AsyncIterator[None]:
    nc = await connect(app[keys.SETTINGS], "usagehub-gateway")
    app[keys.NATS] = nc
    commands = CommandBatches(nc, app[keys.SETTINGS].command_timeout)
    app[keys.COMMANDS] = commands
    commands.start()
    yield
    await commands.close()
    await close(nc)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    # The gateway only reads and runs short transactions: nothing of a session outlives a request.
    pool = await create_pool(app[keys.SETTINGS].database_url, max_size=20, reset_sessions=False)
    app[keys.POOL] = pool
    app[keys.WATCH] = ProjectionWatch(pool)
    await subscribe_notices(app[keys.NATS], app[keys.WATCH])
    yield
    await pool.close()


async def _stats_feed(app: web.Application) -> AsyncIterator[None]:
    pool = app[keys.POOL]
    settings = app[keys.SETTINGS]
    devices = app[keys.STATS_DEVICES]
    feed = StatsFeed(lambda: stats_document(pool, devices), settings.stats_interval, settings.ws_max_clients)
    app[keys.FEED] = feed
    task = asyncio.create_task(feed.run())
    yield
    await feed.close_all()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def init_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, auth_limit_middleware, error_middleware],
        # The largest body any route takes; each route reads with its own, smaller or equal, limit.
        client_max_size=max(64 * 1024, settings.media_print_max_kb * 1024),
    )
    app[keys.SETTINGS] = settings
    app[keys.HTTP_BODY_TIMEOUT] = settings.http_body_timeout
    app[keys.AUTH_LIMITS] = AuthLimits.of(settings)
    app[keys.CREDENTIAL_ROUTES] = set()
    app[keys.VISITORS] = RecentVisitors(MAX_TRACKED_VISITORS, VISIT_SESSION.total_seconds())
    app[keys.STATS_DEVICES] = LastDevicesJson()
    app[keys.USAGE_ANSWERS] = AnswerCache(USAGE_ANSWERS_MAX_BYTES, USAGE_ANSWERS_MAX_BYTES // 8)
    app.on_response_prepare.append(add_security_headers)
    app.cleanup_ctx.extend([_nats, _postgres, _stats_feed])
    setup_routes(app, settings)
    return app
