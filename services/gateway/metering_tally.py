"""The gateway's own metering: calls tallied in memory per (org, service, quarter hour) and sent to
ingest in batches, about once a second and at shutdown, so counting never waits on the event log.

A batch keeps its idempotency key until ingest has acknowledged it: a batch whose answer was lost is
sent again with the same key and counted once. While one is unacknowledged, new calls keep adding to
the open tallies, so memory stays bounded by the distinct (org, service, quarter hour) seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from shared.commands import Reply
from shared.commands.metering import ApiCalls, CountApiCalls
from shared.events import now
from shared.logging import get_logger

log = get_logger(__name__)

FLUSH_INTERVAL = 1.0
# Bounds the final flush at shutdown; what is still unsent then is logged as lost.
CLOSE_TIMEOUT = 5.0
MAX_COUNTS_PER_BATCH = 5000
QUARTER = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Send = Callable[[CountApiCalls], Awaitable[Reply]]


class ApiCallTally:
    def __init__(self, send: Send, interval: float = FLUSH_INTERVAL) -> None:
        self._send = send
        self._interval = interval
        self._open: Counter[tuple[str, str, datetime]] = Counter()
        self._unacknowledged: list[CountApiCalls] = []
        # Batch keys are this gateway's own: several gateways never share one.
        self._instance = uuid.uuid4().hex
        self._batches = 0
        self._lock = asyncio.Lock()

    def add(self, org_id: str, service: str, at: datetime | None = None) -> None:
        """Count one call; never waits."""
        at = now() if at is None else at
        self._open[org_id, service, at - (at - _EPOCH) % QUARTER] += 1

    @property
    def pending(self) -> int:
        """Calls counted here and not yet acknowledged by ingest."""
        sent = sum(c.count for batch in self._unacknowledged for c in batch.counts)
        return sent + sum(self._open.values())

    def _cut(self) -> None:
        items = sorted(self._open.items())
        self._open.clear()
        for i in range(0, len(items), MAX_COUNTS_PER_BATCH):
            self._batches += 1
            counts = tuple(
                ApiCalls(org_id=org, service=service, at=at, count=n)
                for (org, service, at), n in items[i : i + MAX_COUNTS_PER_BATCH]
            )
            key = f"gateway-{self._instance}-{self._batches}"
            self._unacknowledged.append(CountApiCalls(counts=counts, idempotency_key=key))

    async def flush(self) -> bool:
        """Send what is counted; True when ingest has acknowledged everything."""
        async with self._lock:
            while True:
                if not self._unacknowledged:
                    if not self._open:
                        return True
                    self._cut()
                batch = self._unacknowledged[0]
                try:
                    reply = await self._send(batch)
                except Exception as exc:  # unreachable or no answer: the same batch goes again later
                    log.warning("api-call counts not sent yet", calls=self.pending, error=repr(exc))
                    return False
                if reply.status >= 500:
                    log.warning("api-call counts not sent yet", calls=self.pending, error=reply.error)
                    return False
                if reply.status >= 400:  # refused: sending it again would be refused again
                    lost = sum(c.count for c in batch.counts)
                    log.error("api-call counts refused by ingest", calls=lost, error=reply.error)
                self._unacknowledged.pop(0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._open or self._unacknowledged:
                await self.flush()

    async def close(self) -> None:
        """The last flush, bounded: a stopping gateway loses nothing while ingest answers."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                for _ in range(int(CLOSE_TIMEOUT / 0.2)):
                    if await self.flush():
                        break
                    await asyncio.sleep(0.2)
        if self.pending:
            log.error("api-call counts lost at shutdown", calls=self.pending)
