"""The OpenAPI document: valid OpenAPI 3.1, and exactly the routes the gateway registers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from services.gateway.app import init_app
from services.gateway.openapi import openapi_document
from shared.settings import Settings

SECRET = "test-admin-secret-key-0123456789abcdef"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(params=[SECRET, ""], ids=["with-secret-key", "without-secret-key"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Gateway settings with and without an admin key (admin routes exist only with one)."""
    return Settings(nats_url="nats://127.0.0.1:1", secret_key=request.param)


def registered_routes(settings: Settings) -> set[tuple[str, str]]:
    """(method, path) of every route ``init_app`` registers, ``{name:regex}`` written ``{name}``."""
    app = init_app(settings)
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one to every GET
            continue
        path = route.resource.canonical if route.resource is not None else ""
        found.add((route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return found


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, item in document["paths"].items() for m in item if m in METHODS}


def test_the_document_is_valid_openapi_3_1(settings: Settings) -> None:
    document = openapi_document(admin_routes=settings.device_routes_enabled)
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_the_validator_refuses_a_broken_document() -> None:
    """The test above can fail: an answer without its description is not OpenAPI."""
    document = openapi_document(admin_routes=True)
    del document["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(document)


def test_every_registered_route_is_documented_and_nothing_else(settings: Settings) -> None:
    document = openapi_document(admin_routes=settings.device_routes_enabled)
    registered = registered_routes(settings)
    documented = documented_routes(document)
    assert registered - documented == set(), "routes missing from the document"
    assert documented - registered == set(), "documented routes the gateway does not have"


def test_device_admin_routes_exist_only_with_a_secret_key() -> None:
    with_key = documented_routes(openapi_document(admin_routes=True))
    without = documented_routes(openapi_document(admin_routes=False))
    assert with_key - without == {("post", "/api/devices"), ("post", "/api/devices/{id}/token/generate")}


def test_every_operation_answers_errors_in_its_api_shape() -> None:
    document = openapi_document(admin_routes=True)
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) < 400 or path == "/readyz":  # not ready: the readiness document
                    continue
                schemas = {c["schema"].get("$ref") for c in answer["content"].values()}
                if path.startswith(("/usages/", "/images/")):
                    # Its own refusals are Argo; the middleware's (429, 503) are {"error"}.
                    assert schemas, (method, path, status)
                    assert schemas <= {"#/components/schemas/Error", "#/components/schemas/MediaError"}
                else:
                    assert schemas == {"#/components/schemas/Error"}, (method, path, status)


def test_schemas_come_from_the_types() -> None:
    schemas = openapi_document(admin_routes=True)["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["NewLink"]["properties"]["name"]["maxLength"] == 200
    assert schemas["MarkData"]["required"]  # the command's own record type, as ingest decodes it


def test_the_websocket_is_a_get_answering_101() -> None:
    op = openapi_document(admin_routes=True)["paths"]["/api/stats/ws"]["get"]
    assert "101" in op["responses"]
    assert "once a second" in op["responses"]["101"]["description"]
    assert op["responses"]["101"]["x-websocket-messages"]["server"] == {"$ref": "#/components/schemas/Stats"}


def test_security_schemes() -> None:
    document = openapi_document(admin_routes=True)
    schemes = document["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == {"Authorization", "X-Api-Key", "X-Session-Id"}
    assert document["paths"]["/api/links"]["post"]["security"] == [{"AdminKey": []}]
    assert document["paths"]["/api/beat"]["post"]["security"] == [{"DeviceToken": []}]
