"""The contract of the probes and the metrics."""

from __future__ import annotations

from typing import Literal

import msgspec

from services.gateway.contract import Answer, Operation

TAG = "operations"


class Alive(msgspec.Struct):
    alive: Literal[True]


class Readiness(msgspec.Struct):
    """Ready, and what was checked (see docs/operations.md)."""

    ready: bool
    nats: bool
    postgres: bool
    ingest: bool
    projection_lag: dict[str, int | None]
    stuck: dict[str, float]
    quarantined: dict[str, int]
    pending_migrations: list[str] | None = None
    postgres_error: str | None = None


OPERATIONS = (
    Operation("get", "/healthz", "healthz", "Alive", TAG, (Answer(200, "alive", Alive),)),
    Operation(
        "get",
        "/readyz",
        "readyz",
        "Ready to serve writes",
        TAG,
        (Answer(200, "ready", Readiness), Answer(503, "not ready", Readiness)),
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        TAG,
        (Answer(200, "the metrics, Prometheus text format", str, ("text/plain",)),),
    ),
)
