"""The yardstick: the smallest aiohttp app that answers a POST, on the same machine as usagehub."""

from __future__ import annotations

import sys

from aiohttp import web


async def beat(_: web.Request) -> web.Response:
    return web.Response(text="0", content_type="text/plain")


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/beat", beat)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
