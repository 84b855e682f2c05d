"""Heartbeat commands: devices, their tokens, beats and page visits.

Tokens never travel in plaintext: the gateway creates new tokens itself and hashes presented ones
before anything leaves its process; commands carry only ``token_hash`` (SHA-256, hex).
"""

from __future__ import annotations

from typing import ClassVar

from shared.commands.envelope import Command


class RegisterDevice(Command, tag="RegisterDevice", frozen=True):
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"token_hash"})

    name: str
    # The hash of the token the gateway made for this device (a retry makes another).
    token_hash: str


class RegenerateDeviceToken(Command, tag="RegenerateDeviceToken", frozen=True):
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"token_hash"})

    device_id: int
    token_hash: str


class RecordBeat(Command, tag="RecordBeat", frozen=True):
    # The credential names the device (the key's principal), so it is no part of the request.
    UNFINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"token_hash"})

    token_hash: str


class RecordPageVisit(Command, tag="RecordPageVisit", frozen=True):
    path: str


HeartbeatCommand = RegisterDevice | RegenerateDeviceToken | RecordBeat | RecordPageVisit
