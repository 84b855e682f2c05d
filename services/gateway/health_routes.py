"""Probes and metrics: /healthz (alive), /readyz (dependencies and projections), /metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from nats.js.errors import NotFoundError

from services.gateway import keys
from services.projector.projections import PROJECTIONS
from shared.bus import EVENTS_STREAM
from shared.db import pending_migrations
from shared.ops_http import healthz, metrics_response, readiness_handler


async def readiness(app: web.Application) -> tuple[bool, dict[str, Any]]:
    detail: dict[str, Any] = {"nats": app[keys.NATS].is_connected}
    try:
        async with app[keys.POOL].acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
        detail["postgres"] = True
        detail["pending_migrations"] = pending
    except Exception as exc:  # any failure to reach Postgres means "not ready", with the reason
        detail["postgres"] = False
        detail["postgres_error"] = type(exc).__name__
        pending = ["unknown"]
    lag: dict[str, int | None] = {}
    if detail["nats"]:
        js = app[keys.NATS].jetstream()
        for name in PROJECTIONS:
            try:
                info = await js.consumer_info(EVENTS_STREAM, name, timeout=2)
                lag[name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            except (NotFoundError, TimeoutError):
                lag[name] = None  # the projector has not started yet
    detail["projection_lag"] = lag
    limit = app[keys.SETTINGS].ready_max_lag
    projections_ok = bool(lag) and all(v is not None and v <= limit for v in lag.values())
    ok = detail["nats"] and detail["postgres"] and not pending and projections_ok
    return ok, detail


def setup_health_routes(app: web.Application) -> None:
    async def check() -> tuple[bool, dict[str, Any]]:
        return await readiness(app)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readiness_handler(check))
    app.router.add_get("/metrics", metrics_response)
