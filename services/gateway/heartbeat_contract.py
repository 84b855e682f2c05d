"""The heartbeat API's contract: devices, beats, statistics and the stats WebSocket."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.gateway.contract import (
    ADMIN,
    DEVICE,
    Answer,
    NumericId,
    Operation,
    Param,
    error_answer,
    idempotency_param,
    rule,
)

TAG = "heartbeat"
DeviceName = Annotated[str, rule("not blank, at most 200 characters, no control characters", maxLength=200)]


class RegisterDeviceBody(msgspec.Struct):
    name: DeviceName


class DeviceWithToken(msgspec.Struct):
    id: Annotated[int, msgspec.Meta(ge=0)]
    name: str
    token: Annotated[str, msgspec.Meta(description="the device's secret, shown in this answer only")]


class DeviceStats(msgspec.Struct):
    id: int
    name: str
    last_beat: int | None
    num_beats: int


class Stats(msgspec.Struct):
    """The statistics, as ``GET /api/stats`` answers them and the WebSocket sends them."""

    last_seen: int | None
    last_seen_relative: int | None
    longest_absence: int
    num_visits: int
    total_beats: int
    devices: list[DeviceStats]
    uptime: int


_DEVICE_ID = Param("id", "path", NumericId, "a device id", required=True)
_NO_DEVICE = error_answer(404, "no such device (or no secret key: the route does not exist)")
_NO_KEY = error_answer(401, "wrong or missing Authorization")

OPERATIONS = (
    Operation(
        "post",
        "/api/devices",
        "registerDevice",
        "Register a device and make its token",
        TAG,
        (
            Answer(200, "the device and its token", DeviceWithToken),
            _NO_KEY,
            error_answer(404, "no secret key is set: the route does not exist"),
        ),
        parameters=(idempotency_param(),),
        body=RegisterDeviceBody,
        security=(ADMIN,),
        admin_route=True,
    ),
    Operation(
        "post",
        "/api/devices/{id}/token/generate",
        "generateDeviceToken",
        "Make a device a new token, revoking its old one",
        TAG,
        (
            Answer(200, "the device and its new token (the old one is revoked)", DeviceWithToken),
            _NO_KEY,
            _NO_DEVICE,
        ),
        parameters=(_DEVICE_ID,),
        security=(ADMIN,),
        admin_route=True,
    ),
    Operation(
        "post",
        "/api/beat",
        "beat",
        "Record a beat of the device whose token is presented",
        TAG,
        (
            Answer(200, "the Unix time at which the beat was accepted", int, ("text/plain",)),
            error_answer(401, "missing, unknown or revoked token"),
        ),
        parameters=(idempotency_param(),),
        security=(DEVICE,),
    ),
    Operation("get", "/api/stats", "stats", "The statistics", TAG, (Answer(200, "the statistics", Stats),)),
    Operation(
        "get",
        "/api/stats/ws",
        "statsWebSocket",
        "The statistics, live, over a WebSocket",
        TAG,
        (
            Answer(
                101,
                "Switching Protocols: the server then sends the `Stats` document as a text message"
                " once a second; clients send nothing. A client that cannot keep up is disconnected.",
                Stats,
            ),
            error_answer(403, "a browser's Origin that is neither this gateway's nor an allowed one"),
            error_answer(503, "too many live statistics clients (with Retry-After)"),
        ),
        parameters=(
            Param("Origin", "header", str, "a browser's origin; none for other clients"),
            Param("Upgrade", "header", str, "websocket", required=True),
            Param("Connection", "header", str, "Upgrade", required=True),
            Param("Sec-WebSocket-Key", "header", str, "as RFC 6455", required=True),
            Param("Sec-WebSocket-Version", "header", str, "13", required=True),
        ),
        description="A GET that upgrades to a WebSocket (RFC 6455); without the upgrade headers"
        " it answers 400.",
    ),
)
