"""``init_app()`` builds the gateway: resources in ``cleanup_ctx``, routes in ``setup_routes``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway import keys
from services.gateway.contributions_routes import setup_contributions_routes
from services.gateway.health_routes import setup_health_routes
from services.gateway.heartbeat_routes import setup_heartbeat_routes, stats_document
from services.gateway.links_routes import setup_links_routes
from services.gateway.middleware import error_middleware, metrics_middleware, request_id_middleware
from services.gateway.writes import ProjectionWatch, subscribe_notices
from services.gateway.ws import StatsFeed
from shared.bus import close, connect
from shared.db import create_pool
from shared.settings import Settings


def setup_routes(app: web.Application, settings: Settings) -> None:
    setup_health_routes(app)
    setup_heartbeat_routes(app, settings.device_routes_enabled)
    setup_links_routes(app, settings)
    setup_contributions_routes(app, settings)


async def _nats(app: web.Application) -> AsyncIterator[None]:
    nc = await connect(app[keys.SETTINGS].nats_url, "usagehub-gateway")
    app[keys.NATS] = nc
    yield
    await close(nc)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[keys.SETTINGS].database_url, max_size=20)
    app[keys.POOL] = pool
    app[keys.WATCH] = ProjectionWatch(pool)
    await subscribe_notices(app[keys.NATS], app[keys.WATCH])
    yield
    await pool.close()


async def _stats_feed(app: web.Application) -> AsyncIterator[None]:
    pool = app[keys.POOL]
    feed = StatsFeed(lambda: stats_document(pool), app[keys.SETTINGS].stats_interval)
    app[keys.FEED] = feed
    task = asyncio.create_task(feed.run())
    yield
    await feed.close_all()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def init_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, error_middleware],
        client_max_size=64 * 1024,
    )
    app[keys.SETTINGS] = settings
    app.cleanup_ctx.extend([_nats, _postgres, _stats_feed])
    setup_routes(app, settings)
    return app
