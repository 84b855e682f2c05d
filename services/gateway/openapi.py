"""The OpenAPI 3.1 document of the gateway, built from each domain's contract (``<domain>_contract.py``):
every schema comes from the msgspec types the routes decode and answer with."""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway import (
    contributions_contract,
    dashboard_contract,
    docs_contract,
    health_contract,
    heartbeat_contract,
    links_contract,
    media_contract,
    metering_contract,
)
from services.gateway.contract import (
    ADMIN,
    ANYONE,
    DEVICE,
    JSON,
    ORG_KEY,
    SESSION,
    Answer,
    Error,
    Operation,
)

OPERATIONS: tuple[Operation, ...] = (
    *health_contract.OPERATIONS,
    *dashboard_contract.OPERATIONS,
    *docs_contract.OPERATIONS,
    *heartbeat_contract.OPERATIONS,
    *links_contract.OPERATIONS,
    *media_contract.OPERATIONS,
    *metering_contract.OPERATIONS,
    *contributions_contract.OPERATIONS,
)

SECURITY_SCHEMES = {
    ADMIN: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`USAGEHUB_SECRET_KEY`, compared in constant time. Without a key set, the admin"
        " routes do not exist (404).",
    },
    DEVICE: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A device's token (`Bearer ` optional), from `POST /api/devices`.",
    },
    ORG_KEY: {"type": "apiKey", "in": "header", "name": "X-Api-Key", "description": "An org's API key."},
    SESSION: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Session-Id",
        "description": "A session id from TR50 `api.authenticate`.",
    },
}

TAGS = [
    {"name": "operations", "description": "Probes, metrics and this document."},
    {"name": "dashboard", "description": "The page at / and what it loads."},
    {"name": "heartbeat", "description": "Devices, beats and their statistics."},
    {"name": "lighthouse", "description": "Links and who uses them."},
    {"name": "media-usage", "description": "Where media are used (errors are Argo documents)."},
    {"name": "metering", "description": "API call counting and TR50."},
    {"name": "contributions", "description": "Contribution statistics (Stackalytics JSON API v1.0)."},
]

_RETRY_AFTER = ("Retry-After",)
_WRITES = {"post", "put", "patch", "delete"}


def shared_answers(op: Operation) -> tuple[Answer, ...]:
    """What any route may answer besides its own answers (docs/api.md, "Limits every route shares")."""
    answers = [
        Answer(400, "a malformed request (or one of the operation's own bad-request answers)", Error),
        Answer(429, "too many failed authentications from this address", Error, headers=_RETRY_AFTER),
        Answer(
            503,
            "unavailable (the database, the event log, or too many connections)",
            Error,
            headers=_RETRY_AFTER,
        ),
    ]
    if op.tag != "operations":  # the API families, whose calls with an org credential are metered
        answers.append(Answer(401, "an X-Api-Key or X-Session-Id that is not valid", Error))
    if op.method in _WRITES:
        answers += [
            Answer(408, "the body did not arrive in time", Error),
            Answer(413, "the body is larger than the route takes", Error),
            Answer(422, "an Idempotency-Key already used for a different request", Error),
            Answer(
                504, "no answer from ingest in time; the write may have happened", Error, headers=_RETRY_AFTER
            ),
        ]
    return tuple(answers)


def _operations(admin_routes: bool) -> tuple[Operation, ...]:
    return tuple(op for op in OPERATIONS if admin_routes or not op.admin_route)


def _types(ops: tuple[Operation, ...]) -> list[Any]:
    found: list[Any] = [Error]
    for op in ops:
        found.append(op.error_type)
        found.extend(p.type for p in op.parameters)
        if op.body is not None:
            found.append(op.body)
        found.extend(a.type for a in op.answers if a.type is not None)
    return found


class _Schemas:
    """The schema of each type, with every Struct in ``components``."""

    def __init__(self, types: list[Any]) -> None:
        schemas, self.components = msgspec.json.schema_components(
            types, ref_template="#/components/schemas/{name}"
        )
        self._pairs = list(zip(types, schemas, strict=True))

    def of(self, kind: Any) -> dict[str, Any]:
        for known, schema in self._pairs:
            if known is kind or known == kind:
                return schema
        raise KeyError(kind)


def _content(schemas: _Schemas, kind: Any, media_types: tuple[str, ...]) -> dict[str, Any]:
    content = {}
    for media in media_types:
        structured = media.endswith("json") or media.startswith(("application/x-www-form", "multipart/"))
        schema = schemas.of(kind) if structured or kind in (int, str) else {"type": "string"}
        content[media] = {"schema": schema}
    return content


def _answer(schemas: _Schemas, op: Operation, answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.status >= 400 and answer.type in (Error, op.error_type):
        # The family's own refusals, and the ones every route shares, answered as {"error"} before
        # a route is reached (the middleware's 429 and 503, a path no route matches: 404).
        out["content"] = {JSON: {"schema": schemas.of(Error)}}
        if op.error_type is not Error:
            out["content"][op.error_media_type] = {"schema": schemas.of(op.error_type)}
    elif answer.status == 101 and answer.type is not None:
        # A WebSocket: no body, but text messages (OpenAPI has no words for them; an extension does).
        out["x-websocket-messages"] = {"server": schemas.of(answer.type), "client": "none"}
    elif answer.type is not None:
        out["content"] = _content(schemas, answer.type, answer.media_types)
    if answer.headers:
        out["headers"] = {h: {"schema": {"type": "string"}} for h in answer.headers}
    if answer.links:
        out["links"] = {
            name: {"operationId": link.operation_id, "parameters": link.parameters}
            | ({"description": link.description} if link.description else {})
            for name, link in answer.links.items()
        }
    return out


def _answers(schemas: _Schemas, op: Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for answer in (*op.answers, *shared_answers(op)):
        key = str(answer.status)
        if key not in answers:  # the operation's own description of a shared status wins
            answers[key] = _answer(schemas, op, answer)
    return dict(sorted(answers.items()))


def _operation(schemas: _Schemas, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": schemas.of(p.type),
            }
            | ({"description": p.description} if p.description else {})
            for p in op.parameters
        ]
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": _content(schemas, op.body, op.body_media_types),
        }
    out["responses"] = _answers(schemas, op)
    if op.security:
        out["security"] = [{} if name == ANYONE else {name: []} for name in op.security]
    return out


def openapi_document(*, admin_routes: bool) -> dict[str, Any]:
    """The document of the routes ``init_app`` registers; ``admin_routes``: a secret key is set."""
    ops = _operations(admin_routes)
    schemas = _Schemas(_types(ops))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = _operation(schemas, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "usagehub",
            "version": "1.0",
            "description": "Five APIs on one event-sourced platform; see docs/api.md. Every error is"
            ' `{"error": "..."}` but the media-usage API\'s, which answers as the original does.',
        },
        "tags": TAGS,
        "paths": paths,
        "components": {"schemas": schemas.components, "securitySchemes": SECURITY_SCHEMES},
    }
