"""The contract, served: ``GET /openapi.json`` and an interactive reference at ``GET /docs``, built
from files in the package (Swagger UI is vendored, never loaded from a CDN)."""

from __future__ import annotations

from importlib import resources

import msgspec
from aiohttp import web

from services.gateway.docs_contract import ASSETS
from services.gateway.errors import http_error
from services.gateway.openapi import openapi_document
from shared.settings import Settings

_STATIC = resources.files("services.gateway").joinpath("static")
_FILES = {
    "swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui/swagger-ui.css",
    "LICENSE": "swagger-ui/LICENSE",
    "docs.js": "docs.js",
}
# The reference page's own policy: its scripts and styles from this origin only (docs.js starts it;
# nothing inline), Swagger UI's icons as data: images, and fetches of the document (and "try it
# out") to this origin. Framing is refused as everywhere else.
DOCS_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


def setup_docs_routes(app: web.Application, settings: Settings) -> None:
    document = msgspec.json.encode(openapi_document(admin_routes=settings.device_routes_enabled))
    page = _STATIC.joinpath("docs.html").read_bytes()
    assets = {name: _STATIC.joinpath(path).read_bytes() for name, path in _FILES.items()}

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        response = web.Response(body=page, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = DOCS_POLICY
        return response

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise http_error(404, f"no file {name} in the reference page")
        return web.Response(
            body=assets[name],
            content_type=ASSETS[name],
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/assets/{name}", asset)
