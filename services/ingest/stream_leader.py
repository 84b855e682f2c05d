"""Which NATS server leads the event stream, as this ingest sees it, for ``/metrics``: a change of
leader is a pause in writes, and no leader at all is an event log that cannot store."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext

from shared import metrics
from shared.bus import EVENTS_STREAM

REFRESH_EVERY = 2.0


async def current_leader(js: JetStreamContext) -> str:
    """The leader's server name, or "" when there is none or the cluster does not answer in time."""
    try:
        info = await js.stream_info(EVENTS_STREAM)
    except Exception:  # no quorum, no connection: no leader this ingest can name
        return ""
    return (info.cluster.leader if info.cluster else None) or ""


async def watch_stream_leader(js: JetStreamContext, stop: asyncio.Event) -> None:
    shown, last_known = "", ""
    while not stop.is_set():
        leader = await current_leader(js)
        if leader != shown:
            if shown:
                metrics.STREAM_LEADER.labels(shown).set(0)
            if leader:
                metrics.STREAM_LEADER.labels(leader).set(1)
                if last_known and leader != last_known:
                    metrics.STREAM_LEADER_CHANGES.inc()
                last_known = leader
            shown = leader
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_EVERY)
