"""Heartbeat commands: devices, their tokens, beats and page visits."""

from __future__ import annotations

from shared.commands.envelope import Command


class RegisterDevice(Command, tag="RegisterDevice", frozen=True):
    name: str


class RegenerateDeviceToken(Command, tag="RegenerateDeviceToken", frozen=True):
    device_id: int


class RecordBeat(Command, tag="RecordBeat", frozen=True):
    # Plaintext only in transit: ingest hashes it and never stores or logs it.
    token: str


class RecordPageVisit(Command, tag="RecordPageVisit", frozen=True):
    path: str
    # Hashes naming the visitor (see PageVisited); the gateway sends one only when a session starts.
    visitor: str = ""
    cookie_visitor: str = ""


HeartbeatCommand = RegisterDevice | RegenerateDeviceToken | RecordBeat | RecordPageVisit
