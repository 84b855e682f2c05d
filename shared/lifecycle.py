"""Running a service process: signals -> an asyncio.Event -> graceful drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shared.bus import BusRefused
from shared.logging import configure_logging, get_logger
from shared.settings import Settings, SettingsError, load_settings, require_servers

T = TypeVar("T")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (everywhere but Windows): every hop of a write is a few
    socket reads and writes, which it does in C; otherwise asyncio's own, or with
    ``USAGEHUB_EVENT_LOOP=asyncio`` (to compare the two, or should uvloop misbehave somewhere)."""
    if os.environ.get("USAGEHUB_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop the services run on (the CLI's imports and rebuilds too)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)


def run_service(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Validate configuration, then run ``main`` until SIGINT/SIGTERM sets the stop event."""
    try:
        settings = load_settings()
        missing = require_servers(settings)
        if missing:
            raise SettingsError("invalid configuration: " + "; ".join(missing))
    except SettingsError as exc:
        print(f"usagehub-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(name, settings.log_format, settings.log_level)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    try:
        run_async(runner())
    except BusRefused as exc:  # wrong credentials: a traceback would only hide the one line that matters
        get_logger(name).error(str(exc))
        raise SystemExit(1) from None
    except Exception:
        get_logger(name).exception("service failed")
        raise SystemExit(1) from None
