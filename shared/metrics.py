"""Prometheus metrics shared by every service (each process exposes its own registry at /metrics)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
STATS_FEED_COMPUTATIONS = Counter(
    "usagehub_stats_feed_computations_total", "Statistics computed for the WebSocket feed (once per tick)"
)
WEBSOCKET_CLIENTS = Gauge("usagehub_websocket_clients", "Connected WebSocket clients")


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
