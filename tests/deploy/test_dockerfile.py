"""The container image: hadolint, the image rules, the dependency lock, .dockerignore, the health check."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .checks import (
    REPO_ROOT,
    dockerfile_problems,
    dockerignore_excludes,
    dockerignore_problems,
    hadolint_problems,
    lockfile_problems,
    project_scripts,
    runtime_dependencies,
)

DOCKERFILE = REPO_ROOT / "Dockerfile"
HEALTHCHECK_SCRIPT = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"


def broken(text: str, old: str, new: str) -> str:
    assert old in text, f"the broken copy needs {old!r} in the original"
    return text.replace(old, new, 1)


def test_hadolint_finds_nothing() -> None:
    assert hadolint_problems(DOCKERFILE) == []


def test_hadolint_reports_a_broken_copy(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    text = broken(
        text, "FROM python:3.11-slim AS runtime", "FROM python:latest AS runtime\nRUN apt-get install -y gcc"
    )
    text = broken(text, "USER 10001:10001", "USER root")
    copy = tmp_path / "Dockerfile"
    copy.write_text(text)

    codes = {problem.split()[0] for problem in hadolint_problems(copy)}

    # latest tag, unpinned apt package, no --no-install-recommends, last USER root
    assert {"DL3007", "DL3008", "DL3015", "DL3002"} <= codes


def test_image_rules_hold(env_vars: frozenset[str]) -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), project_scripts(), env_vars) == []


def test_image_rules_report_a_broken_copy(tmp_path: Path, env_vars: frozenset[str]) -> None:
    text = DOCKERFILE.read_text()
    text = broken(text, "FROM python:3.11-slim AS runtime", "FROM python:3.11 AS runtime")
    text = broken(text, "USER 10001:10001", "USER usagehub")
    text = broken(
        text, 'CMD ["python", "/opt/usagehub/healthcheck.py"]', "CMD curl -f http://127.0.0.1:8080/healthz"
    )
    text = broken(text, 'CMD ["usagehub-gateway"]', 'CMD ["usagehub-ingest"]')
    text = broken(
        text, "USAGEHUB_LOG_FORMAT=json", "USAGEHUB_LOG_FORMAT=json \\\n    USAGEHUB_NOT_A_SETTING=1"
    )
    text = broken(
        text, "RUN groupadd", "RUN apt-get install -y --no-install-recommends build-essential && groupadd"
    )
    (tmp_path / "Dockerfile").write_text(text)

    problems = "\n".join(
        dockerfile_problems((tmp_path / "Dockerfile").read_text(), project_scripts(), env_vars)
    )

    assert "final stage must be FROM python:3.11-slim" in problems
    assert "must be numeric" in problems
    assert "HEALTHCHECK must use python" in problems
    assert "default command must be usagehub-gateway" in problems
    assert "USAGEHUB_NOT_A_SETTING is not a setting" in problems
    assert "the final stage installs packages" in problems
    single_stage = 'FROM python:3.11-slim\nCMD ["usagehub-gateway"]\n'
    assert dockerfile_problems(single_stage, project_scripts(), env_vars) == [
        "not a multi-stage build (a builder stage and a runtime stage are required)"
    ]


def test_lock_pins_every_runtime_dependency() -> None:
    assert lockfile_problems((REPO_ROOT / "requirements.lock").read_text(), runtime_dependencies()) == []


def test_lock_check_reports_a_broken_copy(tmp_path: Path) -> None:
    lines = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    kept = [line for line in lines if not line.lower().startswith(("aiohttp==", "asyncpg==", "msgspec=="))]
    kept += ["asyncpg>=0.29", "msgspec==0.1.0", "msgspec==0.1.0"]
    copy = tmp_path / "requirements.lock"
    copy.write_text("\n".join(kept) + "\n")

    problems = "\n".join(lockfile_problems(copy.read_text(), runtime_dependencies()))

    assert "runtime dependency aiohttp" in problems
    assert "'asyncpg>=0.29' is not an exact pin" in problems
    assert "msgspec==0.1.0 does not satisfy" in problems
    assert "msgspec is pinned twice" in problems


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    assert dockerignore_problems((REPO_ROOT / ".dockerignore").read_text(), DOCKERFILE.read_text()) == []


def test_dockerignore_check_reports_a_broken_copy(tmp_path: Path) -> None:
    copy = tmp_path / ".dockerignore"
    copy.write_text("deploy/docker\n**/*.pyc\n")

    problems = "\n".join(dockerignore_problems(copy.read_text(), DOCKERFILE.read_text()))

    assert "deploy/docker/healthcheck.py is copied by the Dockerfile but excluded" in problems
    assert ".git/HEAD would be sent" in problems
    assert ".env would be sent" in problems


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = "*\n!services/\n**/__pycache__\n"
    assert dockerignore_excludes(patterns, "tests/x.py")
    assert not dockerignore_excludes(patterns, "services/gateway/app.py")
    assert dockerignore_excludes(patterns, "services/gateway/__pycache__/app.cpython-311.pyc")


# ----------------------------------------------------------------------- the image's health check


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _check(*ports: int, env: dict[str, str] | None = None) -> int:
    base = {k: v for k, v in os.environ.items() if not k.startswith("USAGEHUB_")}
    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT), *map(str, ports)],
        env={**base, **(env or {})},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


def test_healthcheck_passes_only_on_200(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    assert _check(port) == 0
    handler.status = 503
    assert _check(port) == 1
    assert _check(_closed_port()) == 1


def test_healthcheck_defaults_to_the_gateway_or_metrics_port(
    health_server: tuple[int, type[_Health]],
) -> None:
    port, _ = health_server
    closed = str(_closed_port())
    assert _check(env={"USAGEHUB_HTTP_PORT": closed, "USAGEHUB_METRICS_PORT": str(port)}) == 0
    assert _check(env={"USAGEHUB_HTTP_PORT": str(port), "USAGEHUB_METRICS_PORT": closed}) == 0
    assert _check(env={"USAGEHUB_HTTP_PORT": closed, "USAGEHUB_METRICS_PORT": closed}) == 1


def test_image_healthcheck_runs_the_copied_script() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY deploy/docker/healthcheck.py /opt/usagehub/healthcheck.py" in text
    assert 'CMD ["python", "/opt/usagehub/healthcheck.py"]' in text
