"""The words an API's contract is written in: operations, their parameters and their answers.

Each ``<domain>_contract.py`` lists its operations with the msgspec types its routes decode and answer
with; ``openapi.py`` turns the lists into the OpenAPI document served at ``GET /openapi.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

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

# Ids the routes read as at most nine digits (links, devices).
NumericId = Annotated[int, msgspec.Meta(ge=0, le=999_999_999, description="anything else answers 404")]
IdempotencyKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="retry safely")
]


T = TypeVar("T")


def rule(description: str, **schema: Any) -> msgspec.Meta:
    """A rule ingest enforces (with its own message): in the document only, never checked on decoding,
    so a body is refused once, for the same reason whichever way it arrives (HTTP or the bus)."""
    return msgspec.Meta(description=description, extra_json_schema=schema)


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_WRONG_TYPE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>\w+)` - at `\$\.(?P<field>[^`]+)`$")
_TYPE_NAMES = {"str": "string", "bool": "boolean", "int": "integer"}


def decode_fields(body: dict[str, Any], kind: type[T]) -> T:
    """A JSON object body as the contract's ``kind``; ValueError with the field and what is wrong
    (``name is required``, ``name must be a string``, ``unknown fields [...]``)."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if found := _MISSING.match(message):
            raise ValueError(f"{found['field']} is required") from None
        if found := _UNKNOWN.match(message):
            known = sorted(getattr(kind, "__struct_fields__", ()))
            raise ValueError(f"unknown fields [{found['field']!r}]; expected {known}") from None
        if found := _WRONG_TYPE.match(message):
            if found["got"] == "null":
                raise ValueError(f"{found['field']} is required") from None
            want = found["want"].split(" | ")[0]
            raise ValueError(f"{found['field']} must be a {_TYPE_NAMES.get(want, want)}") from None
        raise ValueError(message) from None


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
