"""Prometheus metrics shared by every service (each process exposes its own registry at /metrics).

Gateway workers that share one port (``usagehub up`` with ``USAGEHUB_HTTP_WORKERS`` above 1) run in
prometheus_client's multiprocess mode: the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` for them, each
worker writes its values to files there, and whichever worker a scrape reaches answers the sum of all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Set in the environment before the process starts: prometheus_client reads it once, when first imported.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "usagehub_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "usagehub_http_request_duration_seconds", "HTTP request latency", ["route", "method"]
)
EVENTS_APPENDED = Counter("usagehub_events_appended_total", "Events appended to the stream", ["type"])
COMMANDS = Counter("usagehub_commands_total", "Commands handled by ingest", ["command", "status"])
INTAKE_REJECTED = Counter("usagehub_intake_rejected_total", "Intake messages rejected", ["kind"])
PROJECTION_LAG = Gauge(
    "usagehub_projection_lag",
    "Events of the projection's subjects stored but not yet applied",
    ["projection"],
)
PROJECTION_POSITION = Gauge("usagehub_projection_position", "Projection checkpoint", ["projection"])
EVENTS_PROJECTED = Counter("usagehub_events_projected_total", "Events applied", ["projection"])
PROJECTION_QUARANTINED = Counter(
    "usagehub_projection_quarantined_total",
    "Events a projection could not decode or apply, set aside in projection_quarantine",
    ["projection"],
)
REDELIVERIES = Counter(
    "usagehub_consumer_redeliveries_total", "Messages delivered more than once", ["projection"]
)
# The server names come from the NATS configuration (server_name), a set as small as the cluster.
STREAM_LEADER = Gauge(
    "usagehub_stream_leader",
    "1 for the NATS server leading the event stream as ingest last saw it, 0 for the others",
    ["server"],
)
STREAM_LEADER_CHANGES = Counter(
    "usagehub_stream_leader_changes_total", "Times ingest saw another server lead the event stream"
)
STATS_FEED_COMPUTATIONS = Counter(
    "usagehub_stats_feed_computations_total", "Statistics computed for the WebSocket feed (once per tick)"
)
# livesum: with several workers, the clients of the workers alive now, added up.
WEBSOCKET_CLIENTS = Gauge(
    "usagehub_websocket_clients", "Connected WebSocket clients", multiprocess_mode="livesum"
)
# reason: header_timeout | body_timeout | over_capacity (a fixed set, chosen by the gateway).
HTTP_CONNECTIONS_DROPPED = Counter(
    "usagehub_http_connections_dropped_total",
    "Connections closed or requests failed by the gateway's limits",
    ["reason"],
)
# command: a command type name (a fixed set, from shared/commands).
GATEWAY_COMMANDS = Counter(
    "usagehub_gateway_commands_total", "Commands the gateway sent to ingest over NATS", ["command"]
)


def _multiprocess_registry() -> CollectorRegistry | None:
    """A registry that reads every worker's files, or None for a process of its own."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not directory:
        return None
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # unannotated upstream
    return registry


# Built once: the collector reads the directory's files afresh at every scrape.
_REGISTRY = _multiprocess_registry()


def render() -> tuple[bytes, str]:
    if _REGISTRY is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    return generate_latest(_REGISTRY), CONTENT_TYPE_LATEST
