"""The contract of the contract: the OpenAPI document and the interactive reference at ``/docs``."""

from __future__ import annotations

from typing import Any, Literal

from services.gateway.contract import Answer, Operation, Param, error_answer

TAG = "operations"
# The files the reference page loads, all served from the package (no CDN).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "docs.js": "text/javascript",
    "LICENSE": "text/plain",
}
AssetName = Literal["swagger-ui-bundle.js", "swagger-ui.css", "docs.js", "LICENSE"]

OPERATIONS = (
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document (OpenAPI 3.1)",
        TAG,
        (Answer(200, "the document", dict[str, Any]),),
    ),
    Operation(
        "get",
        "/docs",
        "docs",
        "An interactive reference of this document (Swagger UI)",
        TAG,
        (Answer(200, "the page", str, ("text/html",)),),
    ),
    Operation(
        "get",
        "/docs/assets/{name}",
        "docsAsset",
        "A file of the reference page",
        TAG,
        (
            Answer(200, "the file", str, tuple(sorted(set(ASSETS.values())))),
            error_answer(404, "no such file"),
        ),
        parameters=(Param("name", "path", AssetName, required=True),),
    ),
)
