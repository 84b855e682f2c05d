"""The words an API's contract is written in: operations, their parameters and their answers.

Each ``<domain>_contract.py`` lists its operations with the msgspec types its routes decode and answer
with; ``openapi.py`` turns the lists into the OpenAPI document served at ``GET /openapi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# Security schemes, by the name the document gives them.
ADMIN = "AdminKey"
DEVICE = "DeviceToken"
ORG_KEY = "OrgKey"
SESSION = "SessionId"
ANYONE = ""  # in an operation's security: no credential is needed either

# A path id the routes read as at most nine digits; anything else names nothing (404).
PathId = Annotated[str, msgspec.Meta(description="an id; anything that is not one answers 404")]
IdempotencyKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="retry safely")
]


class Error(msgspec.Struct):
    """Every refusal of every API but the media-usage one."""

    error: Annotated[str, msgspec.Meta(description="what is wrong, for a person to read")]


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    type: Any
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a later operation fed by this answer (``{param: runtime expression}``)."""

    operation_id: str
    parameters: dict[str, str]
    description: str = ""


@dataclass(frozen=True)
class Answer:
    status: int
    description: str
    type: Any = None  # None: no body
    media_types: tuple[str, ...] = (JSON,)
    headers: tuple[str, ...] = ()
    links: dict[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post", "put", "patch", "delete"]
    path: str  # as in the document: ``{name}`` without aiohttp's regex
    operation_id: str
    summary: str
    tag: str
    answers: tuple[Answer, ...]
    parameters: tuple[Param, ...] = ()
    body: Any = None  # the request body's type; None: no body
    body_media_types: tuple[str, ...] = (JSON,)
    body_required: bool = True
    security: tuple[str, ...] = ()  # any one of these schemes; () is open to all
    description: str = ""
    admin_route: bool = False  # exists only when USAGEHUB_SECRET_KEY is set
    error_type: Any = Error
    error_media_type: str = JSON


def idempotency_param() -> Param:
    return Param("Idempotency-Key", "header", IdempotencyKey, "the same key again is the same write")


def error_answer(status: int, description: str) -> Answer:
    """An ``{"error": ...}`` answer; ``openapi.py`` gives it the operation's own error type."""
    return Answer(status, description, Error)
