"""The table of every command's handler, assembled from each domain's ``HANDLERS``, and dispatch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from services.ingest import contributions_handlers, heartbeat_handlers, links_handlers
from services.ingest.context import Ingest
from services.ingest.rejected import Rejected
from shared import metrics
from shared.commands import AnyCommand, Command, Reply

# A new domain adds its table here.
HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    **heartbeat_handlers.HANDLERS,
    **links_handlers.HANDLERS,
    **contributions_handlers.HANDLERS,
}


def scoped_key(cmd: Command) -> Command:
    """The client's key, prefixed with the command: one key used on two routes is two writes."""
    if cmd.idempotency_key is None:
        return cmd
    return msgspec.structs.replace(cmd, idempotency_key=f"{type(cmd).__name__}:{cmd.idempotency_key}")


async def handle(ingest: Ingest, cmd: AnyCommand) -> Reply:
    """Dispatch one command; domain refusals become replies, anything else propagates."""
    cmd = scoped_key(cmd)  # type: ignore[assignment]
    try:
        reply = await HANDLERS[type(cmd)](ingest, cmd)
    except Rejected as exc:
        reply = Reply(status=exc.status, error=exc.message)
    metrics.COMMANDS.labels(type(cmd).__name__, str(reply.status)).inc()
    return reply
