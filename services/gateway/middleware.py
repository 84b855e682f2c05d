"""Middlewares: request ids, JSON errors for everything (404 and 405 included), and HTTP metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from services.gateway.errors import json_error
from services.gateway.http_server import BodyReadTimeout
from shared import metrics
from shared.logging import get_logger, new_request_id, request_id_var

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.match(given) else new_request_id()
    token = request_id_var.set(rid)
    try:
        response = await handler(request)
    finally:
        request_id_var.reset(token)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after", "www-authenticate"}
        }
        response = json_error(exc.status, exc.reason if exc.status != 404 else "not found")
        response.headers.update(headers)
        return response
    except BodyReadTimeout as exc:
        response = json_error(408, str(exc))
        response.force_close()  # the rest of the body may still come: the connection cannot be reused
        return response
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError):
        log.warning("database unavailable", path=request.path, method=request.method, exc_info=True)
        response = json_error(503, "the database is unavailable, try again")
        response.headers["Retry-After"] = "1"
        return response
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return json_error(500, "internal error")


# Label values come from fixed sets, so no request can add a time series: a route is one the router
# has registered (its pattern, never the path) or "unmatched", a method one of these or "OTHER".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route, method = route_label(request), method_label(request.method)
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
