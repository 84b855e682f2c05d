"""One error shape for every route: ``{"error": "..."}`` with the right status."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def http_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    """An exception carrying a JSON body, for raising from deep inside a view."""
    cls: type[web.HTTPException] = web.HTTPException
    for candidate in (
        web.HTTPBadRequest,
        web.HTTPUnauthorized,
        web.HTTPForbidden,
        web.HTTPNotFound,
        web.HTTPRequestTimeout,
        web.HTTPConflict,
        web.HTTPRequestEntityTooLarge,
        web.HTTPUnprocessableEntity,
        web.HTTPTooManyRequests,
        web.HTTPUnsupportedMediaType,
        web.HTTPServiceUnavailable,
        web.HTTPGatewayTimeout,
    ):
        if candidate.status_code == status:
            cls = candidate
            break
    exc = cls(
        text=web.json_response({"error": message}).text, content_type="application/json", headers=headers
    )
    if cls is web.HTTPException:
        exc.set_status(status)
    return exc
