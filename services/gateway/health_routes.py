"""Probes and metrics: /healthz (alive), /readyz (dependencies, ingest, projections), /metrics.

Ready means a write would be served: NATS and Postgres answer, no migration is pending, an ingest
answers a ping, and no projection is too far behind or stuck (events waiting while its checkpoint
has not moved for ``USAGEHUB_READY_STUCK_AFTER`` seconds). Quarantined events are reported, but do
not make the gateway unready: the projection goes on without them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from services.gateway import keys
from services.projector.projections import PROJECTIONS
from shared.bus import COMMANDS_PREFIX, EVENTS_STREAM, PING
from shared.db import checkpoints, pending_migrations
from shared.ops_http import healthz, metrics_response, readiness_handler


async def _ingest_answers(nc: NATS) -> bool:
    try:
        await nc.request(COMMANDS_PREFIX + PING, b"", timeout=2)
    except (NoRespondersError, NatsTimeout):
        return False
    return True


class StuckWatch:
    """When each projection's checkpoint last moved, as seen by this gateway's readiness checks."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def stuck_for(self, name: str, position: int, lag: int, at: float) -> float:
        """Seconds the projection has had events waiting without its checkpoint moving."""
        last = self._seen.get(name)
        if last is None or last[0] != position or lag == 0:
            self._seen[name] = (position, at)
            return 0.0
        return at - last[1]


async def readiness(app: web.Application) -> tuple[bool, dict[str, Any]]:
    settings = app[keys.SETTINGS]
    nc = app[keys.NATS]
    detail: dict[str, Any] = {"nats": nc.is_connected}
    positions: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    try:
        async with app[keys.POOL].acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
            if not pending:
                positions = await checkpoints(conn)
                rows = await conn.fetch(
                    "SELECT projection, count(*) AS n FROM projection_quarantine GROUP BY 1"
                )
                quarantined = {r["projection"]: int(r["n"]) for r in rows}
        detail["postgres"] = True
        detail["pending_migrations"] = pending
    except Exception as exc:  # any failure to reach Postgres means "not ready", with the reason
        detail["postgres"] = False
        detail["postgres_error"] = type(exc).__name__
        pending = ["unknown"]
    detail["ingest"] = detail["nats"] and await _ingest_answers(nc)
    lag: dict[str, int | None] = {}
    stuck: dict[str, float] = {}
    if detail["nats"]:
        js = nc.jetstream()
        at = asyncio.get_running_loop().time()
        for name in PROJECTIONS:
            try:
                info = await js.consumer_info(EVENTS_STREAM, name, timeout=2)
                lag[name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            except (NotFoundError, TimeoutError):
                lag[name] = None  # the projector has not started yet
                continue
            seconds = app[STUCK].stuck_for(name, positions.get(name, 0), lag[name] or 0, at)
            if seconds >= settings.ready_stuck_after:
                stuck[name] = round(seconds, 1)
    detail["projection_lag"] = lag
    detail["stuck"] = stuck
    detail["quarantined"] = {name: quarantined.get(name, 0) for name in PROJECTIONS}
    limit = settings.ready_max_lag
    projections_ok = bool(lag) and all(v is not None and v <= limit for v in lag.values()) and not stuck
    ok = detail["nats"] and detail["postgres"] and not pending and detail["ingest"] and projections_ok
    return ok, detail


STUCK = web.AppKey("stuck", StuckWatch)


def setup_health_routes(app: web.Application) -> None:
    app[STUCK] = StuckWatch()

    async def check() -> tuple[bool, dict[str, Any]]:
        return await readiness(app)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readiness_handler(check))
    app.router.add_get("/metrics", metrics_response)
