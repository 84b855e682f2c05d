"""The table of every command's handler, assembled from each domain's ``HANDLERS``, and dispatch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest import (
    contributions_handlers,
    heartbeat_handlers,
    links_handlers,
    media_handlers,
    metering_handlers,
)
from services.ingest.context import Ingest
from services.ingest.rejected import Rejected
from shared import metrics
from shared.commands import AnyCommand, Command, Reply

# A new domain adds its table here.
HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    **heartbeat_handlers.HANDLERS,
    **links_handlers.HANDLERS,
    **media_handlers.HANDLERS,
    **metering_handlers.HANDLERS,
    **contributions_handlers.HANDLERS,
}


async def handle(ingest: Ingest, cmd: AnyCommand) -> Reply:
    """Dispatch one command; domain refusals become replies, anything else propagates."""
    try:
        reply = await HANDLERS[type(cmd)](ingest, cmd)
    except Rejected as exc:
        reply = Reply(status=exc.status, error=exc.message)
    metrics.COMMANDS.labels(type(cmd).__name__, str(reply.status)).inc()
    return reply
