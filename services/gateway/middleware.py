"""Middlewares: request ids, JSON errors for everything (404 and 405 included), and HTTP metrics."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from services.gateway import keys
from services.gateway.auth_limits import (
    CREDENTIAL_HEADERS,
    Admission,
    AuthLimits,
    client_address,
    credential_digest,
)
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


@dataclass(slots=True)
class CredentialChecks:
    """What a handler learnt about credentials that its status cannot tell the middleware: TR50
    answers 200 with error replies, and carries org keys and session ids in its body."""

    # The credential headers: True proven, False refused, None not checked (the status decides).
    headers: bool | None = None
    # Digests of body credentials that paid a token up front, and of those checked (proven or not).
    paid: set[bytes] = field(default_factory=set)
    outcomes: dict[bytes, bool] = field(default_factory=dict)


CREDENTIAL_CHECKS = web.RequestKey("credential_checks", CredentialChecks)


def credential_checks(request: web.Request) -> CredentialChecks:
    checks = request.get(CREDENTIAL_CHECKS)
    if checks is None:
        checks = request[CREDENTIAL_CHECKS] = CredentialChecks()
    return checks


def _client(request: web.Request, limits: AuthLimits) -> str:
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), limits.proxies)


def _over_budget(retry_after: float) -> web.Response:
    refusal = json_error(429, "too many failed authentications from this address, try again later")
    refusal.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return refusal


def admit_body_credentials(request: web.Request, values: Iterable[str]) -> web.Response | None:
    """Credentials carried in a body pay up front as header ones do, each unproven one a token:
    ``None`` to go ahead, or the 429 to answer (before any work) when one cannot pay."""
    limits = request.app[keys.AUTH_LIMITS]
    client, now = _client(request, limits), time.monotonic()
    checks = credential_checks(request)
    for value in values:
        digest = credential_digest([value])
        if digest is None or digest in checks.paid or limits.recent.proven(digest, now):
            continue
        admission = limits.budget.admit(client, now)
        if admission.refused:
            for _ in checks.paid:
                limits.budget.refund(client, now)
            checks.paid.clear()
            return _over_budget(admission.retry_after)
        if admission.paid:
            checks.paid.add(digest)
    return None


def body_credential_checked(request: web.Request, value: str, *, proven: bool) -> None:
    """A body credential was checked: a refusal is a failed authentication, charged as a 401 is."""
    digest = credential_digest([value])
    if digest is not None:
        outcomes = credential_checks(request).outcomes
        outcomes[digest] = outcomes.get(digest, True) and proven


@web.middleware
async def auth_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 at once for a client over its failure budget that presents an unproven credential.

    See auth_limits.py: every 401 and 403 counts against the client; while it has failed lately,
    its requests with an unproven credential pay up front. A credential is proven by a 2xx of a
    route that checks it (``keys.CREDENTIAL_ROUTES``), never of a public one, or when the handler
    says so (``CredentialChecks``); credentials in a body (TR50's) are settled one by one.
    """
    limits = request.app[keys.AUTH_LIMITS]
    client = _client(request, limits)
    presented = credential_digest(request.headers.get(h) for h in CREDENTIAL_HEADERS)
    admission = Admission()
    if presented is not None and not limits.recent.proven(presented, time.monotonic()):
        admission = limits.budget.admit(client, time.monotonic())
        if admission.refused:
            return _over_budget(admission.retry_after)
    checked = request.match_info.route in request.app[keys.CREDENTIAL_ROUTES]
    # A public route's answer says nothing about the credential.
    credential = presented if checked else None
    # Settled only when answered: a request that is cancelled keeps what it paid.
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _settle_all(request, limits, client, presented, credential, admission.paid, exc.status)
        raise
    _settle_all(request, limits, client, presented, credential, admission.paid, response.status)
    return response


def _settle_all(
    request: web.Request,
    limits: AuthLimits,
    client: str,
    presented: bytes | None,
    credential: bytes | None,
    paid: bool,
    status: int,
) -> None:
    checks = request.get(CREDENTIAL_CHECKS)
    if checks is not None and checks.headers is not None:
        credential = presented
        if not checks.headers and status not in (401, 403):
            status = 401  # refused in an answer that is not an error (a TR50 error reply)
    _settle(limits, client, credential, paid, status)
    if checks is None:
        return
    now = time.monotonic()
    for digest, proven in checks.outcomes.items():
        if proven:
            if digest in checks.paid:
                limits.budget.refund(client, now)
            limits.recent.remember(digest, now)
            continue
        limits.recent.forget(digest)
        if digest in checks.paid:
            limits.budget.paid_failure(client, now)
        else:
            limits.budget.charge(client, now)
    for _ in checks.paid - set(checks.outcomes):  # paid, but never checked
        limits.budget.refund(client, now)


def _settle(limits: AuthLimits, client: str, credential: bytes | None, paid: bool, status: int) -> None:
    now = time.monotonic()
    if status in (401, 403):
        if credential is not None:
            limits.recent.forget(credential)  # e.g. a revoked token: it must prove itself again
        if paid:
            limits.budget.paid_failure(client, now)
        else:
            limits.budget.charge(client, now)
        return
    if paid:
        limits.budget.refund(client, now)
    if credential is not None and 200 <= status < 300:
        limits.recent.remember(credential, now)
