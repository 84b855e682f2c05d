"""Kubernetes manifests: kustomize renders the base and both overlays (kubectl kustomize), every object
matches the Kubernetes schema (kubernetes-validate, strict), the CloudNativePG Cluster is checked
structurally, and the workloads follow the rules (probes, resources, restricted security context,
settings from the environment, secrets only from Secrets, a consistent NATS cluster)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .checks import (
    CRD_KINDS,
    Rendered,
    cert_manager_problems,
    cnpg_cluster_problems,
    code_services,
    configmaps,
    env_problems,
    find_objects,
    nats_credentials_problems,
    nats_problems,
    network_policy_problems,
    render_kustomization,
    schema_problems,
    secret_reference_problems,
    secrets,
    tls_problems,
    wiring_problems,
    workload_problems,
)

OVERLAYS = ("base", "dev", "prod")
# Secrets that production operators create by hand (docs/operations.md); everything else must be
# rendered or come from CloudNativePG.
OPERATOR_SECRETS = {
    "usagehub-secrets": {"secret-key"},
    "nats-credentials": {"ingest", "gateway", "projector", "publisher", "operator"},
}


def broken(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"the broken copy needs {old!r} in {path.name}"
    path.write_text(text.replace(old, new, 1))


def edit_yaml(path: Path, kind: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    targets = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(targets) == 1, f"{kind}/{name} not in {path.name}"
    change(targets[0])
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def render_ok(path: Path) -> list[dict[str, Any]]:
    result = render_kustomization(path)
    assert result.problems == []
    return result.objects


def container(obj: dict[str, Any], index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][index]
    return found


# ---------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_without_errors_or_warnings(rendered: dict[str, Rendered], overlay: str) -> None:
    assert rendered[overlay].problems == []
    assert rendered[overlay].objects


def test_kustomize_reports_a_broken_copy(k8s_copy: Path) -> None:
    broken(
        k8s_copy / "base" / "kustomization.yaml",
        "  - projector.yaml\n",
        "  - projector.yaml\n  - missing.yaml\n",
    )

    result = render_kustomization(k8s_copy / "overlays" / "dev")

    assert result.returncode != 0
    assert "missing.yaml" in "\n".join(result.problems)


# ------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schema(rendered: dict[str, Rendered], overlay: str) -> None:
    objects = rendered[overlay].objects
    problems, custom = schema_problems(objects)
    assert problems == []
    # Only prod's custom resources (CloudNativePG, cert-manager) are left to the structural checks.
    expected = [o for o in objects if o["kind"] in {"Cluster", "Certificate", "Issuer"}]
    assert custom == expected
    assert (overlay == "prod") == bool(expected)
    for obj in custom:
        assert (obj["apiVersion"], obj["kind"]) in CRD_KINDS
        if obj["kind"] == "Cluster":
            assert cnpg_cluster_problems(obj) == []
        else:
            assert cert_manager_problems(obj, objects) == []


def test_schema_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    def typo(deployment: dict[str, Any]) -> None:
        deployment["spec"]["replica"] = 2

    def wrong_type(deployment: dict[str, Any]) -> None:
        container(deployment)["ports"][0]["containerPort"] = "9100"

    edit_yaml(k8s_copy / "base" / "ingest.yaml", "Deployment", "ingest", typo)
    edit_yaml(k8s_copy / "base" / "projector.yaml", "Deployment", "projector", wrong_type)
    broken(
        k8s_copy / "overlays" / "prod" / "postgres-cluster.yaml",
        "postgresql.cnpg.io/v1",
        "postgresql.cnpg.io/v2",
    )

    problems, custom = schema_problems(render_ok(k8s_copy / "overlays" / "prod"))
    text = "\n".join(problems)

    assert "Deployment/ingest" in text and "'replica' was unexpected" in text
    assert "Deployment/projector" in text and "'9100' is not of type 'integer'" in text
    # A custom resource that is not explicitly allowed is a failure, not a silent skip.
    assert "Couldn't find schema for kind Cluster with api version postgresql.cnpg.io/v2" in text
    assert sorted(o["kind"] for o in custom) == ["Certificate", "Certificate", "Issuer", "Issuer"]


def test_cloudnativepg_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    path = k8s_copy / "overlays" / "prod" / "postgres-cluster.yaml"
    broken(path, "instances: 3", "instances: three")
    broken(path, "  storage:\n    size: 50Gi", "  storag:\n    size: 50Gi")
    broken(
        path,
        "imageName: ghcr.io/cloudnative-pg/postgresql:18",
        "imageName: ghcr.io/cloudnative-pg/postgresql",
    )
    broken(path, "      owner: usagehub\n", "")

    objects = render_ok(k8s_copy / "overlays" / "prod")
    _, custom = schema_problems(objects)
    (cluster,) = [o for o in custom if o["kind"] == "Cluster"]
    problems = "\n".join(cnpg_cluster_problems(cluster))

    assert "spec.instances must be a positive integer" in problems
    assert "unknown field spec.storag" in problems
    assert "spec.storage is missing" in problems
    assert "spec.imageName must be a pinned image" in problems
    assert "spec.bootstrap.initdb needs database and owner" in problems


# ---------------------------------------------------------------------------------------- workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_have_probes_resources_and_a_restricted_security_context(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    objects = rendered[overlay].objects
    assert find_objects(objects, "Deployment") and find_objects(objects, "StatefulSet")
    assert workload_problems(objects) == []


def test_workload_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    def weaken_projector(deployment: dict[str, Any]) -> None:
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        del c["readinessProbe"]
        del c["resources"]["limits"]
        c["securityContext"]["readOnlyRootFilesystem"] = False
        c["securityContext"]["allowPrivilegeEscalation"] = True
        c["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
        del c["securityContext"]["runAsNonRoot"]
        del pod["securityContext"]["runAsNonRoot"]
        c["volumeMounts"] = []

    def wrong_probe(deployment: dict[str, Any]) -> None:
        container(deployment)["livenessProbe"]["httpGet"]["path"] = "/readyz"

    def unpinned_image(statefulset: dict[str, Any]) -> None:
        container(statefulset)["image"] = "nats:latest"

    edit_yaml(k8s_copy / "base" / "projector.yaml", "Deployment", "projector", weaken_projector)
    edit_yaml(k8s_copy / "base" / "ingest.yaml", "Deployment", "ingest", wrong_probe)
    edit_yaml(k8s_copy / "base" / "nats.yaml", "StatefulSet", "nats", unpinned_image)

    problems = "\n".join(workload_problems(render_ok(k8s_copy / "base")))

    for expected in (
        "Deployment/projector container projector: no readinessProbe",
        "Deployment/projector container projector: needs cpu and memory requests and limits",
        "Deployment/projector container projector: readOnlyRootFilesystem must be true",
        "Deployment/projector container projector: allowPrivilegeEscalation must be false",
        "Deployment/projector container projector: capabilities must drop ALL",
        "Deployment/projector container projector: runAsNonRoot must be true",
        "Deployment/projector: pod securityContext.runAsNonRoot must be true",
        "Deployment/projector container projector: /tmp must be an emptyDir",
        "StatefulSet/nats container nats: image 'nats:latest' must have a pinned tag",
        "Deployment/ingest container ingest: livenessProbe must GET /healthz",
    ):
        assert expected in problems


# --------------------------------------------------------------------------- settings and secrets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_known_and_secrets_come_from_secrets(
    rendered: dict[str, Rendered], overlay: str, env_vars: frozenset[str]
) -> None:
    assert env_problems(rendered[overlay].objects, env_vars) == []


def test_env_check_reports_a_broken_copy(k8s_copy: Path, env_vars: frozenset[str]) -> None:
    broken(
        k8s_copy / "base" / "kustomization.yaml",
        "      - USAGEHUB_LOG_LEVEL=info\n",
        "      - USAGEHUB_LOG_LEVEL=info\n"
        "      - USAGEHUB_NOT_A_SETTING=1\n"
        "      - USAGEHUB_SECRET_KEY=oops\n",
    )

    def literal_database_url(deployment: dict[str, Any]) -> None:
        env = container(deployment)["env"]
        env[:] = [{"name": "USAGEHUB_DATABASE_URL", "value": "postgresql://u:pw@db/usagehub"}]

    edit_yaml(k8s_copy / "base" / "projector.yaml", "Deployment", "projector", literal_database_url)

    problems = "\n".join(env_problems(render_ok(k8s_copy / "overlays" / "dev"), env_vars))

    assert "USAGEHUB_NOT_A_SETTING is not a setting" in problems
    assert "USAGEHUB_SECRET_KEY is a secret and must come from a Secret" in problems
    assert (
        "container projector: USAGEHUB_DATABASE_URL must come from a Secret through secretKeyRef" in problems
    )


def test_secret_references_resolve(rendered: dict[str, Rendered]) -> None:
    dev, prod = rendered["dev"].objects, rendered["prod"].objects
    assert secret_reference_problems(dev, {}) == []
    assert secret_reference_problems(prod, OPERATOR_SECRETS) == []
    # No secret material in the production render: the operator and CloudNativePG create them.
    assert secrets(prod) == {}
    gateway = find_objects(prod, "Deployment", "gateway")[0]
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container(gateway)["env"] if "valueFrom" in v}
    (cluster,) = find_objects(prod, "Cluster")
    assert refs["USAGEHUB_DATABASE_URL"] == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}
    assert refs["USAGEHUB_SECRET_KEY"] == {"name": "usagehub-secrets", "key": "secret-key"}
    dev_secrets = secrets(dev)
    assert any("dev-only" in data.get("secret-key", "") for data in dev_secrets.values())


def test_secret_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    broken(
        k8s_copy / "overlays" / "dev" / "kustomization.yaml",
        "      - uri=postgresql://",
        "      - url=postgresql://",
    )
    broken(
        k8s_copy / "overlays" / "prod" / "postgres-cluster.yaml", "name: usagehub-db\n", "name: usagehub-pg\n"
    )

    dev = "\n".join(secret_reference_problems(render_ok(k8s_copy / "overlays" / "dev"), {}))
    prod = "\n".join(secret_reference_problems(render_ok(k8s_copy / "overlays" / "prod"), OPERATOR_SECRETS))

    assert "has no key uri" in dev
    assert "Secret usagehub-db-app is neither rendered nor created by an operator" in prod


# -------------------------------------------------------------------------------------- the wiring


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_code_service_is_deployed_and_the_gateway_is_exposed(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    assert wiring_problems(rendered[overlay].objects, code_services()) == []


def test_wiring_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    gateway = k8s_copy / "base" / "gateway.yaml"
    docs = [
        d for d in yaml.safe_load_all(gateway.read_text()) if d["kind"] not in {"HorizontalPodAutoscaler"}
    ]
    for doc in docs:
        if doc["kind"] == "Service":
            doc["spec"]["selector"] = {"app.kubernetes.io/name": "gateways"}
    gateway.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    broken(k8s_copy / "base" / "kustomization.yaml", "  - projector.yaml\n", "")
    broken(
        k8s_copy / "overlays" / "dev" / "kustomization.yaml", "  - path: patches/small-workloads.yaml\n", ""
    )

    problems = "\n".join(wiring_problems(render_ok(k8s_copy / "overlays" / "dev"), code_services()))

    assert "no Deployment projector" in problems
    assert "Service/gateway selects no pods" in problems
    assert "the gateway has no Service" in problems
    assert "the gateway has no autoscaling/v2 HorizontalPodAutoscaler" in problems
    assert "Deployment/gateway: no replicas and no HorizontalPodAutoscaler" in problems
    assert "no Ingress routes to the gateway Service" in problems


# ------------------------------------------------------------------------------------ NATS and data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_statefulset_config_and_stream_replicas_agree(
    rendered: dict[str, Rendered], overlay: str, tmp_path: Path
) -> None:
    assert nats_problems(rendered[overlay].objects, tmp_path) == []


def test_dev_runs_one_fsyncing_nats_and_prod_an_r3_cluster(rendered: dict[str, Rendered]) -> None:
    def stream_replicas(objects: list[dict[str, Any]]) -> str:
        (config,) = [d for n, d in configmaps(objects).items() if n.startswith("usagehub-config")]
        return config["USAGEHUB_STREAM_REPLICAS"]

    dev, prod = rendered["dev"].objects, rendered["prod"].objects
    assert find_objects(dev, "StatefulSet", "nats")[0]["spec"]["replicas"] == 1
    assert stream_replicas(dev) == "1"
    assert find_objects(prod, "StatefulSet", "nats")[0]["spec"]["replicas"] == 3
    assert stream_replicas(prod) == "3"
    prod_nats = find_objects(prod, "StatefulSet", "nats")[0]["spec"]["template"]["spec"]
    assert prod_nats["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_nats_check_reports_a_broken_copy(k8s_copy: Path, tmp_path: Path) -> None:
    broken(k8s_copy / "overlays" / "dev" / "nats-single.conf", "  sync_interval: always\n", "")
    broken(
        k8s_copy / "overlays" / "dev" / "kustomization.yaml",
        "USAGEHUB_STREAM_REPLICAS=1",
        "USAGEHUB_STREAM_REPLICAS=3",
    )
    broken(k8s_copy / "base" / "nats-cluster.conf", "    nats://nats-2.nats-headless:6222\n", "")
    broken(k8s_copy / "overlays" / "prod" / "nats-cluster-tls.conf", "include ./authorization.conf\n", "")
    broken(k8s_copy / "overlays" / "prod" / "nats-cluster-tls.conf", "  sync_interval: always\n", "")

    dev = "\n".join(nats_problems(render_ok(k8s_copy / "overlays" / "dev"), tmp_path))
    base = "\n".join(nats_problems(render_ok(k8s_copy / "base"), tmp_path))
    prod = "\n".join(nats_problems(render_ok(k8s_copy / "overlays" / "prod"), tmp_path))

    assert "sync_interval: always" in dev
    assert "USAGEHUB_STREAM_REPLICAS=3 but NATS has only 1 server(s)" in dev
    assert "do not match the 3 StatefulSet pods" in base
    assert "NATS accepts clients without credentials" in prod
    assert "sync_interval: always" in prod


def test_dev_postgres_is_a_statefulset_and_prod_uses_cloudnativepg(rendered: dict[str, Rendered]) -> None:
    (postgres,) = find_objects(rendered["dev"].objects, "StatefulSet", "postgres")
    c = container(postgres)
    assert c["image"] == "postgres:18"
    # postgres 18 images keep PGDATA in /var/lib/postgresql/18/docker
    assert {"name": "data", "mountPath": "/var/lib/postgresql"} in c["volumeMounts"]
    assert not find_objects(rendered["prod"].objects, "StatefulSet", "postgres")
    (cluster,) = find_objects(rendered["prod"].objects, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"


# ------------------------------------------------------------------- who reaches NATS and Postgres


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_has_a_user_per_role_and_each_service_connects_as_its_own(
    rendered: dict[str, Rendered], overlay: str, bus_permissions: ModuleType
) -> None:
    objects = rendered[overlay].objects
    assert nats_credentials_problems(objects, bus_permissions.ROLES) == []
    config = configmaps(objects)
    (nats_config,) = [data for name, data in config.items() if name.startswith("nats-config")]
    assert nats_config["authorization.conf"] == bus_permissions.authorization_file()


def test_nats_credentials_check_reports_a_broken_copy(k8s_copy: Path, bus_permissions: ModuleType) -> None:
    def wrong_user(deployment: dict[str, Any]) -> None:
        for var in container(deployment)["env"]:
            if var["name"] == "USAGEHUB_NATS_USER":
                var["value"] = "ingest"

    edit_yaml(k8s_copy / "base" / "projector.yaml", "Deployment", "projector", wrong_user)
    broken(
        k8s_copy / "base" / "nats.yaml", "- name: NATS_OPERATOR_PASSWORD", "- name: NATS_OPERATOR_PASSWORT"
    )

    problems = "\n".join(
        nats_credentials_problems(render_ok(k8s_copy / "overlays" / "dev"), bus_permissions.ROLES)
    )

    assert "container projector: USAGEHUB_NATS_USER must be projector" in problems
    assert "NATS_OPERATOR_PASSWORD must come from a Secret's key operator" in problems


def test_prod_speaks_tls_to_nats_and_guards_nats_and_postgres(rendered: dict[str, Rendered]) -> None:
    prod = rendered["prod"].objects
    assert tls_problems(prod) == []
    assert network_policy_problems(prod) == []
    # dev is one namespace on a laptop cluster: neither TLS nor policies.
    assert tls_problems(rendered["dev"].objects)
    assert find_objects(rendered["dev"].objects, "NetworkPolicy") == []


def test_tls_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    prod = k8s_copy / "overlays" / "prod"
    broken(
        prod / "kustomization.yaml",
        "USAGEHUB_NATS_URL=tls://nats:4222",
        "USAGEHUB_NATS_URL=nats://nats-client:4222",
    )
    broken(prod / "nats-cluster-tls.conf", "    verify: true\n", "")
    broken(
        prod / "patches" / "nats-ca.yaml", "              - key: ca.crt\n                path: ca.crt\n", ""
    )

    problems = "\n".join(tls_problems(render_ok(prod)))

    assert "USAGEHUB_NATS_URL 'nats://nats-client:4222' must be a tls:// URL" in problems
    assert "Certificate/nats-server does not name nats-client" in problems
    assert "NATS: the routes must verify their peers" in problems
    assert "mount only ca.crt of nats-tls" in problems


def test_network_policy_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    path = k8s_copy / "overlays" / "prod" / "network-policies.yaml"
    broken(path, "values: [gateway, ingest, projector]", "values: [gateway, ingest]")
    broken(path, "values: [gateway, ingest, projector]", "values: [gateway, ingest, projector, nats]")
    text = path.read_text()
    path.write_text(
        text.replace(
            "        - namespaceSelector: {}\n          podSelector:",
            "        - namespaceSelector: {}\n          podSelecto:",
            1,
        )
    )

    problems = "\n".join(network_policy_problems(render_ok(k8s_copy / "overlays" / "prod")))

    assert "NATS: ['projector'] cannot reach port 4222" in problems
    assert "NetworkPolicy/nats: NATS port 4222 is open to any pod" in problems
    assert "NetworkPolicy/postgres: ['nats'] may reach Postgres port 5432" in problems


def test_cert_manager_check_reports_a_broken_copy(k8s_copy: Path) -> None:
    path = k8s_copy / "overlays" / "prod" / "nats-tls.yaml"
    broken(path, "  duration: 2160h # 90 days", "  duration: 90 days")
    broken(path, "    - client auth\n", "    - client authentication\n")
    broken(path, "    name: nats-ca\n    kind: Issuer", "    name: nats-ca-issuer\n    kind: Issuer")
    objects = render_ok(k8s_copy / "overlays" / "prod")
    (server,) = [o for o in find_objects(objects, "Certificate") if o["metadata"]["name"] == "nats-server"]

    problems = "\n".join(cert_manager_problems(server, objects))

    assert "spec.duration must be a duration" in problems
    assert "unknown usage 'client authentication'" in problems
    assert "spec.issuerRef names no Issuer in the render" in problems
