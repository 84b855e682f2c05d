"""Security headers on every response, with a Content-Security-Policy made for the dashboard.

The dashboard has one inline ``<script>`` and one inline ``<style>``; the policy allows exactly
those two (by their SHA-256, computed here from the template) and nothing else: no other script,
style, frame or form target; images (its favicon), WebSockets and fetches only from the page's
own origin; and no page may frame it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

TEMPLATES = resources.files("services.gateway").joinpath("templates")
PAGE_TEMPLATE = TEMPLATES.joinpath("index.html").read_text("utf-8")
FAVICON = TEMPLATES.joinpath("favicon.svg").read_text("utf-8")


def inline_hashes(page: str, tag: str) -> list[str]:
    """CSP source expressions (``'sha256-…'``) of every inline ``<tag>`` block of ``page``."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


def content_security_policy(page: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(inline_hashes(page, "script")),
            "style-src " + " ".join(inline_hashes(page, "style")),
            # 'self' covers ws:// and wss:// to the same host (CSP level 3): the live feed.
            "connect-src 'self'",
            # The favicon (/favicon.svg); the charts are inline SVG, not images.
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": content_security_policy(PAGE_TEMPLATE),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response of the app, errors and 404s included. A page with a
    policy of its own (the API reference at ``/docs``) keeps it."""
    own_policy = response.headers.get("Content-Security-Policy")
    response.headers.update(SECURITY_HEADERS)
    if own_policy is not None:
        response.headers["Content-Security-Policy"] = own_policy
