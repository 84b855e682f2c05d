"""The gateway's HTTP server: a cap on connections, header and body deadlines, parser limits.

aiohttp has no header or body timeout of its own (only an idle keep-alive timer), so a socket that
sends nothing, half a request line, or a body that stops half-way would hold a connection for an
hour. ``GatewayRunner`` is an ``AppRunner`` whose protocol factory (``GatewayServer``) refuses
connections beyond ``USAGEHUB_HTTP_MAX_CONNECTIONS`` and whose protocol (``GatewayRequestHandler``)
closes a connection whose headers do not arrive within ``USAGEHUB_HTTP_HEADER_TIMEOUT``, and fails
the body of a request that does not arrive within ``USAGEHUB_HTTP_BODY_TIMEOUT`` (answered 408).
Production (``__main__``) and the tests' server both run through ``gateway_runner``.

The protocol hooks lean on ``aiohttp.web_protocol.RequestHandler`` internals (its message queue and
the future its request loop parks on); tests/e2e/test_gateway_limits.py pins the behaviour.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from services.gateway import keys
from services.gateway.security_headers import SECURITY_HEADERS
from shared import metrics
from shared.settings import Settings

# aiohttp's parser limits, set explicitly: a request line (method, path and query) and each header
# line at most 8 KiB, at most 64 header lines. Anything longer is answered 400 and closed.
MAX_REQUEST_LINE = 8190
MAX_HEADER_LINE = 8190
MAX_HEADERS = 64
# An idle kept-alive connection is closed after this long (aiohttp's default is an hour).
KEEPALIVE_TIMEOUT = 75.0


class BodyReadTimeout(TimeoutError):
    """The request's body did not arrive within ``USAGEHUB_HTTP_BODY_TIMEOUT``.

    A ``TimeoutError`` so that aiohttp, which drains an unread body after the response, stops quietly
    when it meets it; the error middleware answers it 408 before aiohttp could call it a 504.
    """


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(settings.http_header_timeout, settings.http_body_timeout, settings.http_max_connections)


class GatewayRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a deadline on each request's headers and on its body."""

    def __init__(self, manager: web.Server, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()  # a socket that never sends a byte is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._awaiting_request():
            # The first bytes of a next request on a kept-alive connection: its headers start now.
            self._arm_header_deadline()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # headers complete (or refused by the parser)
            self._cancel_header_deadline()
            for _, payload in itertools.islice(self._messages, queued, None):
                self._arm_body_deadline(payload)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Errors aiohttp answers itself (a malformed request, a line too long) in the API's shape."""
        response = super().handle_error(request, status, exc, message)
        if isinstance(response, web.Response):
            known = status in HTTPStatus._value2member_map_
            response.text = json.dumps({"error": HTTPStatus(status).phrase.lower() if known else "error"})
            response.content_type = "application/json"
        # Sent before any route runs, so the app's own hook never sees it.
        response.headers.update(SECURITY_HEADERS)
        return response

    def _awaiting_request(self) -> bool:
        # The request loop parks on ``_waiter`` while it waits for the next request's headers.
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self._loop.call_later(self._limits.header_timeout, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport is None or self._messages or self._request_in_progress:
            return
        metrics.HTTP_CONNECTIONS_DROPPED.labels("header_timeout").inc()
        self.force_close()

    def _arm_body_deadline(self, payload: StreamReader) -> None:
        if payload.is_eof():
            return
        deadline = self._loop.call_later(self._limits.body_timeout, self._body_late, payload)
        payload.on_eof(deadline.cancel)

    def _body_late(self, payload: StreamReader) -> None:
        if payload.is_eof() or payload.exception() is not None or self.transport is None:
            return
        metrics.HTTP_CONNECTIONS_DROPPED.labels("body_timeout").inc()
        # The view reading the body gets the error (answered 408); the rest of the body is never
        # read, so the connection closes after that answer.
        late = BodyReadTimeout(f"request body not received within {self._limits.body_timeout:g} s")
        payload.set_exception(late)


_REFUSAL_BODY = json.dumps({"error": "too many connections, try again"}).encode()


class RefusedConnection(RequestHandler):
    """A connection over the cap: answered 503 at once and closed, without reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.HTTP_CONNECTIONS_DROPPED.labels("over_capacity").inc()
        head = [
            "HTTP/1.1 503 Service Unavailable",
            "Content-Type: application/json",
            f"Content-Length: {len(_REFUSAL_BODY)}",
            "Retry-After: 1",
            "Connection: close",
            *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
        ]
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + _REFUSAL_BODY)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass  # never registered with the server, nothing to release


class GatewayServer(web.Server):
    """aiohttp's protocol factory, with a cap on the connections open at once."""

    def __init__(self, handler: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        # From the factory call to connection_lost; weak, so a connection that never completed
        # cannot hold a slot.
        self._open: weakref.WeakSet[RequestHandler] = weakref.WeakSet()

    def __call__(self) -> RequestHandler:
        if len(self._open) >= self._limits.max_connections:
            return RefusedConnection(self, loop=self._loop)
        handler = GatewayRequestHandler(self, loop=self._loop, limits=self._limits, **self._kwargs)
        self._open.add(handler)
        return handler

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.discard(handler)
        super().connection_lost(handler, exc)


class GatewayRunner(web.AppRunner):
    """``AppRunner`` serving through ``GatewayServer``, with the parser limits set."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        kwargs.update(max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_LINE, max_headers=MAX_HEADERS)
        super().__init__(app, **kwargs)
        self._limits = HttpLimits.of(app[keys.SETTINGS])

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the app and builds aiohttp's own Server
        # The same handler, request factory and protocol arguments, behind the cap and deadlines.
        return GatewayServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            **made._kwargs,
        )


def gateway_runner(app: web.Application, **kwargs: Any) -> GatewayRunner:
    """The runner every gateway serves through: ``__main__`` and the tests' ``TestServer``."""
    return GatewayRunner(app, **kwargs)
