"""docker-compose.yml: the Compose Specification schema, the service rules, and the NATS configuration."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .checks import (
    COMPOSE_SCHEMA,
    INFRA_SERVICES,
    REPO_ROOT,
    check_jsonschema_problems,
    code_services,
    compose_problems,
    compose_secret_problems,
    nats_config_problems,
    project_scripts,
    service_environment,
)

COMPOSE = REPO_ROOT / "docker-compose.yml"
NATS_CONF = REPO_ROOT / "deploy" / "nats" / "nats.conf"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def broken(text: str, old: str, new: str) -> str:
    assert old in text, f"the broken copy needs {old!r} in the original"
    return text.replace(old, new, 1)


def test_compose_file_matches_the_compose_specification() -> None:
    assert check_jsonschema_problems(COMPOSE_SCHEMA, COMPOSE) == []


def test_schema_check_reports_a_broken_copy(tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    bad_condition = tmp_path / "bad-condition.yml"
    bad_condition.write_text(broken(text, "condition: service_healthy", "condition: service_ready"))
    typo = tmp_path / "typo.yml"
    typo.write_text(broken(text, "    healthcheck:", "    healthchek:"))

    assert check_jsonschema_problems(COMPOSE_SCHEMA, bad_condition) != []
    assert check_jsonschema_problems(COMPOSE_SCHEMA, typo) != []


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


def test_every_service_named_in_the_code_is_in_compose() -> None:
    services = set(load(COMPOSE)["services"])
    assert {"gateway", "ingest", "projector"} <= set(code_services())
    assert {*code_services(), *INFRA_SERVICES} <= services


def test_compose_rules_hold(env_vars: frozenset[str]) -> None:
    assert compose_problems(load(COMPOSE), code_services(), project_scripts(), env_vars) == []


def test_compose_rules_report_a_broken_copy(tmp_path: Path, env_vars: frozenset[str]) -> None:
    text = COMPOSE.read_text()
    text = broken(
        text, "  USAGEHUB_LOG_FORMAT: json\n", "  USAGEHUB_LOG_FORMAT: json\n  USAGEHUB_NOT_A_SETTING: x\n"
    )
    text = broken(text, "  projector:\n", "  projektor:\n")
    text = broken(text, "/healthz?js-enabled-only=true", "/varz")
    text = broken(text, "postgres-data:/var/lib/postgresql", "postgres-data:/var/lib/postgresql/data")
    text = broken(
        text,
        "USAGEHUB_SECRET_KEY: ${USAGEHUB_SECRET_KEY:?set USAGEHUB_SECRET_KEY (docs/operations.md)}",
        "USAGEHUB_SECRET_KEY: hunter2",
    )
    text = broken(
        text,
        "    migrate:\n      condition: service_completed_successfully",
        "    migrate:\n      condition: service_started",
    )
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text)

    problems = "\n".join(compose_problems(load(copy), code_services(), project_scripts(), env_vars))

    assert "USAGEHUB_NOT_A_SETTING is not a setting" in problems
    assert "service projector (named in the code) is missing" in problems
    assert "/healthz?js-enabled-only=true" in problems
    assert "/var/lib/postgresql" in problems
    assert "USAGEHUB_SECRET_KEY must come from the host environment" in problems
    assert "depends on migrate without waiting for it" in problems


def test_services_get_their_settings_and_secret_from_the_environment(env_vars: frozenset[str]) -> None:
    services = load(COMPOSE)["services"]
    for name in code_services():
        env = service_environment(services[name])
        assert env["USAGEHUB_NATS_URL"] == "nats://nats:4222"
        assert str(env["USAGEHUB_DATABASE_URL"]).startswith("postgresql://")
        assert "@postgres:5432/" in str(env["USAGEHUB_DATABASE_URL"])
        assert env["USAGEHUB_LOG_FORMAT"] == "json"
        assert env["USAGEHUB_HTTP_HOST"] == "0.0.0.0"
    assert str(service_environment(services["gateway"])["USAGEHUB_SECRET_KEY"]).startswith(
        "${USAGEHUB_SECRET_KEY:?"
    )


def test_compose_refuses_to_start_without_its_secrets_and_gives_each_service_its_nats_user(
    bus_permissions: ModuleType,
) -> None:
    assert compose_secret_problems(load(COMPOSE), bus_permissions.ROLES) == []


def test_secret_check_reports_a_broken_copy(tmp_path: Path, bus_permissions: ModuleType) -> None:
    text = COMPOSE.read_text()
    for old, new in (
        (
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?",
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-dev}${UNUSED:?",
        ),
        (
            "USAGEHUB_SECRET_KEY: ${USAGEHUB_SECRET_KEY:?set",
            "USAGEHUB_SECRET_KEY: ${USAGEHUB_SECRET_KEY:-}${X:?set",
        ),
        (
            "      NATS_OPERATOR_PASSWORD: ${NATS_OPERATOR_PASSWORD:?",
            "      NATS_OPERATOR: ${NATS_OPERATOR_PASSWORD:?",
        ),
        ("USAGEHUB_NATS_USER: projector", "USAGEHUB_NATS_USER: ingest"),
        (
            "USAGEHUB_NATS_PASSWORD: ${NATS_INGEST_PASSWORD:?",
            "USAGEHUB_NATS_PASSWORD: ${NATS_GATEWAY_PASSWORD:?",
        ),
    ):
        text = broken(text, old, new)
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text)

    problems = "\n".join(compose_secret_problems(load(copy), bus_permissions.ROLES))

    assert "postgres: POSTGRES_PASSWORD must be required" in problems
    assert "gateway: USAGEHUB_SECRET_KEY must be required" in problems
    assert "nats: NATS_OPERATOR_PASSWORD must be required" in problems
    assert "projector: USAGEHUB_NATS_USER must be projector" in problems
    assert "ingest: USAGEHUB_NATS_PASSWORD must be ${NATS_INGEST_PASSWORD:?message}" in problems


def test_app_healthchecks_run_the_image_script_on_the_service_port() -> None:
    services = load(COMPOSE)["services"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY deploy/docker/healthcheck.py /opt/usagehub/healthcheck.py" in dockerfile
    for name in code_services():
        env = service_environment(services[name])
        port = env["USAGEHUB_HTTP_PORT"] if name == "gateway" else env["USAGEHUB_METRICS_PORT"]
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "python",
            "/opt/usagehub/healthcheck.py",
            port,
        ]


AUTHORIZATION = {"authorization.conf": (NATS_CONF.parent / "authorization.conf").read_text()}


def test_nats_configuration_is_valid_and_fsyncs_every_write(tmp_path: Path) -> None:
    problems = nats_config_problems(NATS_CONF.read_text(), tmp_dir=tmp_path, files=AUTHORIZATION)
    assert problems == []


def test_nats_configuration_check_reports_a_broken_copy(tmp_path: Path) -> None:
    text = NATS_CONF.read_text()
    no_fsync = broken(text, "  sync_interval: always\n", "")
    typo = broken(text, "max_file_store", "max_file_stor")
    anonymous = broken(text, "include ./authorization.conf", "")

    def problems(config: str) -> str:
        return "\n".join(nats_config_problems(config, tmp_dir=tmp_path, files=AUTHORIZATION))

    assert "sync_interval: always" in problems(no_fsync)
    assert "nats-server -t rejects" in problems(typo)
    assert "NATS accepts clients without credentials" in "\n".join(
        nats_config_problems(anonymous, tmp_dir=tmp_path)
    )


def test_the_nats_users_are_rendered_from_the_permission_table(bus_permissions: ModuleType) -> None:
    """compose's and Kubernetes' copies are what `usagehub nats-authorization` prints now; the embedded
    server renders the same table itself (services/local/servers.py)."""
    for copy in (NATS_CONF.parent, REPO_ROOT / "deploy" / "k8s" / "base"):
        assert (copy / "authorization.conf").read_text() == bus_permissions.authorization_file(), (
            f"run: usagehub nats-authorization > {copy.relative_to(REPO_ROOT)}/authorization.conf"
        )
