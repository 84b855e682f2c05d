"""The metering API's contract: TR50 over HTTP, its REST twin, and the admin routes for orgs, keys
and principals."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from services.gateway.contract import (
    ADMIN,
    ANYONE,
    ORG_KEY,
    SESSION,
    Answer,
    Link,
    Operation,
    Param,
    error_answer,
    idempotency_param,
    rule,
)

TAG = "metering"
MAX_PAGE = 1000
OrgId = Annotated[str, rule("lowercase letters, digits, _ and -", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Flag = Literal["true", "false"]
# Path ids the routes check themselves: anything else names nothing (404).
OrgIdInPath = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="else 404")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^key_[0-9a-f]{16}$", description="else 404")]


class NewOrg(msgspec.Struct, forbid_unknown_fields=True):
    id: OrgId
    name: str
    time_zone: Annotated[
        str,
        rule("an IANA time zone", examples=["Europe/Paris", "UTC"]),
    ]
    parent: OrgId | None = None


class Org(msgspec.Struct):
    id: str
    name: str
    time_zone: str
    parent: str | None
    created_at: str


class OrgsPage(msgspec.Struct):
    items: list[Org]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    principal: str | None = None
    name: str | None = None


class IssuedKey(msgspec.Struct):
    id: str
    org: str
    principal: str | None
    name: str
    created_at: str
    key: Annotated[str, msgspec.Meta(description="the secret, shown in this answer only")]


class KeyInfo(msgspec.Struct):
    id: str
    principal: str | None
    name: str
    created_at: str
    revoked_at: str | None


class KeysPage(msgspec.Struct):
    items: list[KeyInfo]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class NewPrincipal(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[
        str,
        rule(
            "1-128 letters, digits or . _ @ + -, from a letter or digit",
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$",
        ),
    ]
    super_ops: bool | None = None


class Principal(msgspec.Struct):
    id: str
    super_ops: bool
    created_at: str


class History(msgspec.Struct):
    """``usage.api.history``'s ``params``: counters per service (or per org, then per service)."""

    counters: dict[str, Any]
    total: int
    ts: list[str]


class Tr50Command(msgspec.Struct, forbid_unknown_fields=True):
    command: Annotated[str, msgspec.Meta(description="api.authenticate or usage.api.history")]
    params: dict[str, Any] = {}


class Tr50Reply(msgspec.Struct, omit_defaults=True):
    success: bool
    params: dict[str, Any] | None = None
    errorCodes: list[int] | None = None
    errorMessages: list[str] | None = None


Tr50Envelope = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description='commands by the caller\'s ids, `{"<id>": {"command": ..., "params": {...}}}` (at most'
        ' 50), and optionally `"auth": {"sessionId": ...}`',
        min_length=1,
        examples=[{"1": {"command": "usage.api.history", "params": {"last": "24h"}}}],
    ),
]
Tr50Replies = Annotated[dict[str, Tr50Reply], msgspec.Meta(description="a reply under each command's id")]

_ORG_ID = Param("id", "path", OrgIdInPath, "an org id", required=True)
_NO_KEY = error_answer(401, "wrong or missing Authorization")
_NO_ORG = error_answer(404, "no such org, or no secret key is set (the admin routes do not exist)")
_NO_ADMIN = error_answer(404, "no secret key is set: the admin routes do not exist")
_PAGE = (
    Param("limit", "query", Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)], "default 50"),
    Param("offset", "query", Annotated[int, msgspec.Meta(ge=0, le=999_999_999)], "default 0"),
)
_TO_ORG = {"id": "$response.body#/id"}

OPERATIONS = (
    Operation(
        "post",
        "/api",
        "tr50",
        "TR50 commands: api.authenticate and usage.api.history",
        TAG,
        (
            Answer(200, "a reply per command (a refused command is a reply with success false)", Tr50Replies),
            error_answer(429, "too many failed authentications"),
        ),
        body=Tr50Envelope,
        security=(ORG_KEY, SESSION, ANYONE),
    ),
    Operation(
        "get",
        "/api/usage/history",
        "usageHistory",
        "The REST twin of usage.api.history",
        TAG,
        (
            Answer(200, "the counters", History),
            error_answer(401, "no, an unknown or a revoked key or session"),
            error_answer(403, "showAll without the super-ops role"),
        ),
        parameters=(
            Param("start", "query", str, "with end: ISO 8601, e.g. 2014-03-27T00:00:00.000-05:00"),
            Param("end", "query", str, "with start"),
            Param(
                "last", "query", Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,8}[smhd]$")], "e.g. 24h"
            ),
            Param("series", "query", Literal["hour", "day"], "default hour"),
            Param("includeSubOrgs", "query", Flag),
            Param("showAll", "query", Flag),
            Param("dimension", "query", Literal["org"]),
        ),
        security=(ORG_KEY, SESSION),
    ),
    Operation(
        "get",
        "/api/orgs",
        "listOrgs",
        "A page of orgs",
        TAG,
        (Answer(200, "the page", OrgsPage), _NO_KEY, _NO_ADMIN),
        parameters=_PAGE,
        security=(ADMIN,),
    ),
    Operation(
        "post",
        "/api/orgs",
        "createOrg",
        "Create an org",
        TAG,
        (
            Answer(
                201,
                "the org",
                Org,
                links={
                    "getOrg": Link("getOrg", _TO_ORG),
                    "listKeys": Link("listKeys", _TO_ORG),
                    "issueKey": Link("issueKey", _TO_ORG),
                },
            ),
            _NO_KEY,
            _NO_ORG,
            error_answer(409, "an org with this id already exists"),
        ),
        parameters=(idempotency_param(),),
        body=NewOrg,
        security=(ADMIN,),
    ),
    Operation(
        "get",
        "/api/orgs/{id}",
        "getOrg",
        "An org",
        TAG,
        (Answer(200, "the org", Org), _NO_KEY, _NO_ORG),
        parameters=(_ORG_ID,),
        security=(ADMIN,),
    ),
    Operation(
        "get",
        "/api/orgs/{id}/keys",
        "listKeys",
        "A page of an org's keys (never their secrets), revoked ones included",
        TAG,
        (Answer(200, "the page", KeysPage), _NO_KEY, _NO_ORG),
        parameters=(_ORG_ID, *_PAGE),
        security=(ADMIN,),
    ),
    Operation(
        "post",
        "/api/orgs/{id}/keys",
        "issueKey",
        "Issue a key of an org",
        TAG,
        (
            Answer(
                201,
                "the key",
                IssuedKey,
                links={"revokeKey": Link("revokeKey", {"id": "$response.body#/id"})},
            ),
            _NO_KEY,
            _NO_ORG,
            error_answer(409, "a retry (same Idempotency-Key) of a key revoked since"),
        ),
        parameters=(_ORG_ID, idempotency_param()),
        body=NewKey,
        body_required=False,
        security=(ADMIN,),
    ),
    Operation(
        "delete",
        "/api/keys/{id}",
        "revokeKey",
        "Revoke a key",
        TAG,
        (Answer(204, "revoked"), _NO_KEY, error_answer(404, "no such key, or no secret key is set")),
        parameters=(Param("id", "path", KeyId, "a key id", required=True),),
        security=(ADMIN,),
    ),
    Operation(
        "post",
        "/api/principals",
        "addPrincipal",
        "Add a principal",
        TAG,
        (
            Answer(201, "the principal", Principal),
            _NO_KEY,
            _NO_ADMIN,
            error_answer(409, "a principal with this id already exists"),
        ),
        parameters=(idempotency_param(),),
        body=NewPrincipal,
        security=(ADMIN,),
    ),
)
