"""The Helm chart, rendered with `helm template` for each major option: what objects come out,
and that each one is a valid Kubernetes object that is secure by default."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from streamops.config import Settings
from streamops.stack import Stack
from streamops.stack.airflow import AIRFLOW_COMPONENTS, airflow_environment
from streamops.stack.redis import EVICTION_POLICY
from tests.deploy.conftest import (
    CHART_DIR,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    HelmError,
    Manifest,
    containers,
    find,
    pod_specs,
    run_helm,
    spark_pod_templates,
)

PREFIX = f"{RELEASE}-streamops"
STREAMOPS_IMAGE = "streamops:0.1.0"
# Containers whose image writes to its own root filesystem (see kafka.yaml).
WRITABLE_ROOT = {"kafka"}

EXTERNAL = {
    "kafka.enabled": False,
    "kafka.external.host": "kafka-bootstrap.kafka.svc",
    "kafka.external.port": 9094,
    "mariadb.enabled": False,
    "mariadb.external.host": "mariadb.db.svc",
    "redis.enabled": False,
    "redis.external.host": "redis.cache.svc",
    "postgresql.enabled": False,
    "airflow.metadataConnection.url": "postgresql+psycopg2://airflow:pw@pg.db.svc:5432/airflow",
}
EXISTING_SECRETS = {
    **EXTERNAL,
    "airflow.metadataConnection.url": "",
    "airflow.metadataConnection.existingSecret": "airflow-metadata",
    "airflow.metadataConnection.existingSecretKey": "url",
    "airflow.secrets.existingSecret": "airflow-keys",
    "mariadb.existingSecret": "streamops-mariadb",
    "mariadb.existingSecretPasswordKey": "password",
    "redis.auth.existingSecret": "streamops-redis",
    "redis.auth.existingSecretPasswordKey": "password",
    "kafka.auth.existingSecret": "streamops-kafka",
    "kafka.auth.existingSecretPasswordKey": "password",
}
PERSISTENCE_OFF = {
    "storage.persistence.enabled": False,
    "kafka.persistence.enabled": False,
    "mariadb.persistence.enabled": False,
    "redis.persistence.enabled": False,
    "postgresql.persistence.enabled": False,
}
EVERYTHING_ON = {
    "image.repository": "registry.example.com/streamops",
    "image.tag": "0.1.0-rc1",
    "imagePullSecrets": ["registry-credentials"],
    "storage.persistence.existingClaim": "shared-state",
    "storage.persistence.accessMode": "ReadWriteMany",
    "networkPolicy.apiServer.allowedCidrs": ["10.0.0.0/8"],
    "networkPolicy.apiServer.allowedNamespaces": ["ingress-nginx"],
    "spark.extraConf": [{"key": "spark.sql.shuffle.partitions", "value": "4"}],
    "airflow.extraEnv": [{"name": "AIRFLOW__CORE__DEFAULT_TIMEZONE", "value": "utc"}],
    "airflow.apiServer.replicas": 2,
    "airflow.baseUrl": "https://airflow.example.com",
}
SCENARIOS = {
    "defaults": {},
    "external-services": EXTERNAL,
    "existing-secrets": EXISTING_SECRETS,
    "persistence-off": PERSISTENCE_OFF,
    "everything-on": EVERYTHING_ON,
}
# Known secret values, to prove they land in Secrets and nowhere else.
SECRET_VALUES = {
    "airflow.adminPassword": "admin-pw-Zq81",
    "airflow.secrets.fernetKey": "ZmVybmV0LWtleS10ZXN0LXZhbHVlLTMyLWJ5dGVzISE=",
    "airflow.secrets.apiSecretKey": "api-secret-Kx02",
    "airflow.secrets.jwtSecret": "jwt-secret-Lm93",
    "mariadb.password": "mariadb-pw-Tt55",
    "postgresql.password": "postgres-pw-Rr17",
}

Render = Callable[..., list[Manifest]]


def kinds(manifests: list[Manifest]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for manifest in manifests:
        found.setdefault(manifest["kind"], set()).add(manifest["metadata"]["name"])
    return found


# --- lint and rendering ------------------------------------------------------------------------


def test_lint_strict_passes(helm: Path) -> None:
    output = run_helm(helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART_DIR))
    assert "0 chart(s) failed" in output


def test_lint_strict_passes_for_production_values(helm: Path) -> None:
    args = []
    for key, value in EXISTING_SECRETS.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = run_helm(
        helm, "lint", "--strict", "--kube-version", KUBE_VERSION, *args, str(CHART_DIR)
    )
    assert "0 chart(s) failed" in output


def test_default_install_has_every_component(default_manifests: list[Manifest]) -> None:
    found = kinds(default_manifests)
    assert found["Deployment"] == {
        f"{PREFIX}-api-server",
        f"{PREFIX}-scheduler",
        f"{PREFIX}-dag-processor",
        f"{PREFIX}-triggerer",
    }
    assert found["StatefulSet"] == {
        f"{PREFIX}-kafka",
        f"{PREFIX}-mariadb",
        f"{PREFIX}-redis",
        f"{PREFIX}-postgresql",
    }
    assert found["Job"] == {f"{PREFIX}-airflow-db-migrate", f"{PREFIX}-streamops-init"}
    assert found["ServiceAccount"] == {
        f"{PREFIX}-airflow",
        f"{PREFIX}-spark-launcher",
        f"{PREFIX}-spark",
    }
    assert found["Role"] == found["RoleBinding"] == {f"{PREFIX}-spark", f"{PREFIX}-spark-launcher"}
    # What each policy admits: tests/deploy/test_chart_security.py.
    assert found["NetworkPolicy"] == {
        f"{PREFIX}-{name}"
        for name in (
            "default-deny",
            "egress",
            "kubernetes-api",
            "kafka",
            "mariadb",
            "redis",
            "postgresql",
            "api-server",
            "airflow-logs",
            "spark-driver",
            "spark-executor",
        )
    }
    assert len(found["PodDisruptionBudget"]) == 4
    assert found["PersistentVolumeClaim"] == {f"{PREFIX}-state"}
    assert found["ConfigMap"] == {
        f"{PREFIX}-env",
        f"{PREFIX}-pipelines",
        f"{PREFIX}-spark",
        f"{PREFIX}-kafka",  # the broker's start script
    }
    assert found["Secret"] == {
        f"{PREFIX}-airflow",
        f"{PREFIX}-airflow-metadata",
        f"{PREFIX}-mariadb",
        f"{PREFIX}-redis",
        f"{PREFIX}-kafka",
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_for_kubernetes(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    assert manifests
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert manifest["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{scenario}: {name} is not a valid {KUBE_VERSION} object: {error}")
    for key, template in spark_pod_templates(manifests).items():
        try:
            kubernetes_validate.validate(template, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{scenario}: the Spark {key} is not a valid Pod: {error}")


def test_the_validator_catches_invalid_objects(default_manifests: list[Manifest]) -> None:
    """The check above can fail: an unknown field in a pod spec is rejected in strict mode."""
    import copy

    deployment = copy.deepcopy(find(default_manifests, "Deployment", f"{PREFIX}-scheduler"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resoures"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


# --- security and resources --------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_locked_down(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    specs = list(pod_specs(manifests)) + [
        (f"spark/{key}", template["spec"])
        for key, template in spark_pod_templates(manifests).items()
    ]
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] != 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(spec):
            name = f"{where}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["runAsNonRoot"] is True, name
            assert context.get("privileged", False) is False, name
            expected_read_only = container["name"] not in WRITABLE_ROOT
            assert context["readOnlyRootFilesystem"] is expected_read_only, name
            if expected_read_only:
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_has_requests_and_limits(render: Render, scenario: str) -> None:
    for where, spec in pod_specs(render(SCENARIOS[scenario])):
        for container in containers(spec):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                    f"{where}/{container['name']}: no {kind}"
                )


def _cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _memory(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_requests_fit_within_limits(default_manifests: list[Manifest]) -> None:
    for where, spec in pod_specs(default_manifests):
        for container in containers(spec):
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"]), where
            assert _memory(requests["memory"]) <= _memory(limits["memory"]), where


def test_long_running_containers_have_probes(default_manifests: list[Manifest]) -> None:
    for manifest in default_manifests:
        if manifest["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            name = f"{manifest['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, f"{name}: no liveness probe"
            assert "readinessProbe" in container, f"{name}: no readiness probe"


def test_airflow_probes_check_the_right_thing(default_manifests: list[Manifest]) -> None:
    api = find(default_manifests, "Deployment", f"{PREFIX}-api-server")
    container = api["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/v2/monitor/health", "port": "http"}
    for component, job_type in (
        ("scheduler", "SchedulerJob"),
        ("dag-processor", "DagProcessorJob"),
        ("triggerer", "TriggererJob"),
    ):
        deployment = find(default_manifests, "Deployment", f"{PREFIX}-{component}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command = container["livenessProbe"]["exec"]["command"]
        assert command == ["airflow", "jobs", "check", "--job-type", job_type, "--local"]
        assert container["readinessProbe"]["exec"]["command"] == command


def test_only_job_submitters_get_an_api_token(default_manifests: list[Manifest]) -> None:
    tokens = {
        name: spec.get("automountServiceAccountToken")
        for name, spec in pod_specs(default_manifests)
    }
    assert tokens.pop(f"Deployment/{PREFIX}-scheduler") is True
    assert tokens.pop(f"Deployment/{PREFIX}-triggerer") is True
    assert all(value is False for value in tokens.values()), tokens
    templates = spark_pod_templates(default_manifests)
    assert templates["driver-pod-template.yaml"]["spec"]["automountServiceAccountToken"] is True
    assert templates["executor-pod-template.yaml"]["spec"]["automountServiceAccountToken"] is False


# --- images and commands -------------------------------------------------------------------------


def test_images(render: Render) -> None:
    images = {c["image"] for _, spec in pod_specs(render()) for c in containers(spec)}
    assert images == {
        STREAMOPS_IMAGE,
        f"apache/kafka:{Settings.model_fields['kafka_version'].default}",
        "mariadb:10.11",
        "redis:7.4",
        "postgres:16",
    }
    custom = render(EVERYTHING_ON)
    ours = {
        c["image"]
        for _, spec in pod_specs(custom)
        for c in containers(spec)
        if c["name"] not in ("kafka", "mariadb", "redis", "postgresql")
    }
    assert ours == {"registry.example.com/streamops:0.1.0-rc1"}
    spark = find(custom, "ConfigMap", f"{PREFIX}-spark")["data"]["spark-defaults.conf"]
    assert re.search(
        r"spark.kubernetes.container.image\s+registry.example.com/streamops:0.1.0-rc1", spark
    )
    for _, spec in pod_specs(custom):
        assert spec.get("imagePullSecrets") in (None, [{"name": "registry-credentials"}])


def test_airflow_components_run_the_local_commands(default_manifests: list[Manifest]) -> None:
    for component in AIRFLOW_COMPONENTS:
        name = component.name.removeprefix("airflow-")
        deployment = find(default_manifests, "Deployment", f"{PREFIX}-{name}")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        # On Kubernetes the scheduler and triggerer serve their task logs (no shared volume).
        local = [a for a in component.subcommand if a != "--skip-serve-logs"]
        assert args == ["airflow", *local], name
        wait = deployment["spec"]["template"]["spec"]["initContainers"][0]
        assert wait["args"][:3] == ["airflow", "db", "check-migrations"]


def test_migration_and_init_jobs_are_hooks(default_manifests: list[Manifest]) -> None:
    for job, command in (
        (f"{PREFIX}-airflow-db-migrate", "airflow db migrate"),
        (f"{PREFIX}-streamops-init", "streamops db migrate"),
    ):
        manifest = find(default_manifests, "Job", job)
        annotations = manifest["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        script = " ".join(manifest["spec"]["template"]["spec"]["containers"][0]["args"])
        assert command in script
        assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert manifest["spec"]["backoffLimit"] >= 1


def test_api_server_service_uses_the_settings_port(default_manifests: list[Manifest]) -> None:
    service = find(default_manifests, "Service", f"{PREFIX}-api-server")
    assert service["spec"]["ports"][0]["port"] == Settings.model_fields["airflow_port"].default
    deployment = find(default_manifests, "Deployment", f"{PREFIX}-api-server")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())


# --- RBAC ----------------------------------------------------------------------------------------


def test_spark_rbac_allows_cluster_mode_submission(default_manifests: list[Manifest]) -> None:
    """The rights cluster mode needs are there (the exact sets per account, and that no other
    account has any: tests/deploy/test_chart_security.py)."""
    for role_name, account, needed in (
        (
            f"{PREFIX}-spark-launcher",
            f"{PREFIX}-spark-launcher",
            {"pods": {"create", "get", "list", "watch", "delete"}, "services": {"create", "patch"}},
        ),
        (
            f"{PREFIX}-spark",
            f"{PREFIX}-spark",
            {
                "pods": {"create", "get", "list", "watch", "delete", "deletecollection", "patch"},
                "services": {"create", "get", "list", "delete", "deletecollection"},
                "configmaps": {"create", "get", "list", "delete", "deletecollection"},
                "persistentvolumeclaims": {"create", "get", "list", "delete", "deletecollection"},
            },
        ),
    ):
        role = find(default_manifests, "Role", role_name)
        verbs: dict[str, set[str]] = {}
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""], "Spark only needs the core API group"
            for resource in rule["resources"]:
                verbs.setdefault(resource, set()).update(rule["verbs"])
        for resource, wanted in needed.items():
            assert wanted <= verbs[resource], f"{role_name}: {resource}"
        assert not any("*" in v for v in verbs.values()), "no wildcard verbs"
        assert "secrets" not in verbs, "Spark never needs to read Secrets through the API"
        binding = find(default_manifests, "RoleBinding", role_name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_name,
        }
        assert [s["name"] for s in binding["subjects"]] == [account]
    spark = find(default_manifests, "ConfigMap", f"{PREFIX}-spark")["data"]["spark-defaults.conf"]
    assert re.search(rf"serviceAccountName\s+{PREFIX}-spark\n", spark)
    assert re.search(rf"spark.kubernetes.namespace\s+{NAMESPACE}\n", spark)


def test_rbac_can_be_left_to_the_cluster_admin(render: Render) -> None:
    manifests = render({"spark.rbac.create": False, "spark.serviceAccountName": "spark-runner"})
    found = kinds(manifests)
    assert "Role" not in found and "RoleBinding" not in found
    # The scheduler and triggerer still name the launcher account; the admin binds its rights.
    assert found["ServiceAccount"] == {f"{PREFIX}-airflow", f"{PREFIX}-spark-launcher"}
    spark = find(manifests, "ConfigMap", f"{PREFIX}-spark")["data"]["spark-defaults.conf"]
    assert re.search(r"serviceAccountName\s+spark-runner\n", spark)


# --- secrets -------------------------------------------------------------------------------------


def _secret_strings(manifest: Manifest) -> str:
    values = [base64.b64decode(v).decode() for v in manifest.get("data", {}).values()]
    values += list(manifest.get("stringData", {}).values())
    return "\n".join(values)


def test_secrets_live_in_secrets_only(render: Render) -> None:
    manifests = render(SECRET_VALUES)
    secret_text = "\n".join(_secret_strings(m) for m in manifests if m["kind"] == "Secret")
    for key, value in SECRET_VALUES.items():
        assert value in secret_text, f"{key} is not in any Secret"
    for manifest in manifests:
        if manifest["kind"] == "Secret":
            continue
        text = repr(manifest)
        for key, value in SECRET_VALUES.items():
            assert value not in text, f"{key} leaks into {manifest['kind']}/{manifest['metadata']}"


def test_no_config_map_holds_credentials(render: Render) -> None:
    for scenario in SCENARIOS.values():
        for manifest in render(scenario):
            if manifest["kind"] != "ConfigMap":
                continue
            for key, value in manifest["data"].items():
                # A *_FILE variable names where a credential is, which is fine.
                if not key.endswith("_FILE"):
                    assert not re.search(r"PASSWORD|SECRET|FERNET|TOKEN|SQL_ALCHEMY_CONN", key), key
                assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{key}: URL credentials"


def test_secret_looking_variables_come_from_secrets(default_manifests: list[Manifest]) -> None:
    pattern = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$|SQL_ALCHEMY_CONN")
    found = 0
    for where, spec in pod_specs(default_manifests):
        for container in containers(spec):
            for variable in container.get("env", []):
                if pattern.search(variable["name"]):
                    assert "value" not in variable, f"{where}: {variable['name']} is a literal"
                    assert "secretKeyRef" in variable["valueFrom"], where
                    found += 1
    assert found > 20


def test_generated_metadata_url_uses_the_generated_password(render: Render) -> None:
    secret = find(render(SECRET_VALUES), "Secret", f"{PREFIX}-airflow-metadata")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["postgres-password"] == SECRET_VALUES["postgresql.password"]
    assert data["connection"] == (
        f"postgresql+psycopg2://airflow:{SECRET_VALUES['postgresql.password']}"
        f"@{PREFIX}-postgresql.{NAMESPACE}.svc:5432/airflow"
    )
    fernet = base64.b64decode(
        find(render(), "Secret", f"{PREFIX}-airflow")["data"]["fernet-key"]
    ).decode()
    assert len(base64.urlsafe_b64decode(fernet)) == 32, "a generated Fernet key must be valid"


def test_existing_secrets_are_referenced_not_created(render: Render) -> None:
    manifests = render(EXISTING_SECRETS)
    assert "Secret" not in kinds(manifests), "with existing secrets the chart creates none"
    references: dict[str, set[str]] = {}
    for _, spec in pod_specs(manifests):
        for container in containers(spec):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    references.setdefault(variable["name"], set()).add(
                        f"{ref['name']}/{ref['key']}"
                    )
    assert references["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == {"airflow-metadata/url"}
    assert references["STREAMOPS_MARIADB_PASSWORD"] == {"streamops-mariadb/password"}
    assert references["AIRFLOW__CORE__FERNET_KEY"] == {"airflow-keys/fernet-key"}
    assert references["STREAMOPS_AIRFLOW_ADMIN_PASSWORD"] == {"airflow-keys/admin-password"}
    assert references["STREAMOPS_KAFKA_SASL_PASSWORD"] == {"streamops-kafka/password"}


# --- in-cluster services versus external endpoints -----------------------------------------------


def test_external_services_replace_the_in_cluster_ones(render: Render) -> None:
    manifests = render(EXTERNAL)
    found = kinds(manifests)
    assert "StatefulSet" not in found
    # Only the release's own server keeps a Service: Airflow's api-server (the dashboard is its
    # plugin's, behind its login: tests/deploy/test_dashboard_auth.py).
    assert found["Service"] == {f"{PREFIX}-api-server"}
    env = find(manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    assert env["STREAMOPS_KAFKA_HOST"] == "kafka-bootstrap.kafka.svc"
    assert env["STREAMOPS_KAFKA_PORT"] == "9094"
    assert env["STREAMOPS_MARIADB_HOST"] == "mariadb.db.svc"
    assert env["STREAMOPS_REDIS_HOST"] == "redis.cache.svc"
    secret = find(manifests, "Secret", f"{PREFIX}-airflow-metadata")
    assert set(secret["data"]) == {"connection"}


def test_in_cluster_services_are_used_by_default(default_manifests: list[Manifest]) -> None:
    env = find(default_manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    for service, port_name in (("kafka", "kafka"), ("mariadb", "mysql"), ("redis", "redis")):
        assert env[f"STREAMOPS_{service.upper()}_HOST"] == f"{PREFIX}-{service}.{NAMESPACE}.svc"
        svc = find(default_manifests, "Service", f"{PREFIX}-{service}")
        port = next(p for p in svc["spec"]["ports"] if p["name"] == port_name)
        assert str(port["port"]) == env[f"STREAMOPS_{service.upper()}_PORT"]
        assert port["port"] == Settings.model_fields[f"{service}_port"].default


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka.enabled": False}, "kafka.external.host is required"),
        ({"mariadb.enabled": False}, "mariadb.external.host is required"),
        ({"redis.enabled": False}, "redis.external.host is required"),
        ({"postgresql.enabled": False}, "Airflow needs a metadata database"),
        (
            {"airflow.metadataConnection.existingSecret": "x"},
            "set postgresql.enabled=false",
        ),
    ],
    ids=["kafka", "mariadb", "redis", "postgresql", "both-databases"],
)
def test_incomplete_external_configuration_fails_clearly(
    render: Render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError) as error:
        render(values)
    assert message in error.value.output


def test_in_cluster_kafka_is_configured_like_compose(
    default_manifests: list[Manifest], compose: dict[str, Any]
) -> None:
    statefulset = find(default_manifests, "StatefulSet", f"{PREFIX}-kafka")
    # The SCRAM user (STREAMOPS_KAFKA_SASL_*) compose's broker reads from its env files.
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
        if not e["name"].startswith("STREAMOPS_")
    }
    compose_env = compose["services"]["kafka"]["environment"]
    differ = {
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    }
    assert set(env) == set(compose_env)
    for name, value in compose_env.items():
        if name not in differ:
            assert env[name] == str(value), name
    assert env["KAFKA_ADVERTISED_LISTENERS"] == (
        f"SASL_PLAINTEXT://{PREFIX}-kafka.{NAMESPACE}.svc:9092"
    )


def test_in_cluster_mariadb_uses_the_chart_secret(default_manifests: list[Manifest]) -> None:
    statefulset = find(default_manifests, "StatefulSet", f"{PREFIX}-mariadb")
    env = {e["name"]: e for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MARIADB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{PREFIX}-mariadb",
        "key": "mariadb-password",
    }
    config = find(default_manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    assert env["MARIADB_USER"]["value"] == config["STREAMOPS_MARIADB_USER"]
    assert env["MARIADB_DATABASE"]["value"] == config["STREAMOPS_MARIADB_DATABASE"]


def _redis_bytes(value: str) -> int:
    """A Redis memory setting ("256mb") in bytes; Redis' mb and gb are binary."""
    number, unit = re.fullmatch(r"([0-9]+)(kb|mb|gb)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"kb": 2**10, "mb": 2**20, "gb": 2**30}[unit]


def test_in_cluster_redis_is_bounded_like_the_local_stack(
    default_manifests: list[Manifest], render: Render
) -> None:
    statefulset = find(default_manifests, "StatefulSet", f"{PREFIX}-redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    options = dict(zip(container["args"][1::2], container["args"][2::2], strict=True))
    assert options["--maxmemory-policy"] == EVICTION_POLICY
    # Half the limit at most: an AOF rewrite forks, and copy-on-write pages count against it.
    limit = _memory(container["resources"]["limits"]["memory"])
    assert _redis_bytes(options["--maxmemory"]) <= limit / 2
    custom = find(
        render({"redis.maxmemory": "1gb", "redis.resources.limits.memory": "2Gi"}),
        "StatefulSet",
        f"{PREFIX}-redis",
    )["spec"]["template"]["spec"]["containers"][0]
    assert custom["args"][custom["args"].index("--maxmemory") + 1] == "1gb"


# --- storage -------------------------------------------------------------------------------------


def _volume(spec: Manifest, name: str) -> Manifest:
    return next(v for v in spec["volumes"] if v["name"] == name)


def test_state_volume_persistence(render: Render) -> None:
    scheduler = find(render(), "Deployment", f"{PREFIX}-scheduler")["spec"]["template"]["spec"]
    assert _volume(scheduler, "state")["persistentVolumeClaim"] == {"claimName": f"{PREFIX}-state"}
    mounts = {m["name"]: m["mountPath"] for m in scheduler["containers"][0]["volumeMounts"]}
    assert mounts["state"] == "/opt/streamops/state"
    claim = find(render(), "PersistentVolumeClaim", f"{PREFIX}-state")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    off = render(PERSISTENCE_OFF)
    assert "PersistentVolumeClaim" not in kinds(off)
    for manifest in off:
        if manifest["kind"] == "StatefulSet":
            assert "volumeClaimTemplates" not in manifest["spec"]
            assert "emptyDir" in _volume(manifest["spec"]["template"]["spec"], "data")
    scheduler = find(off, "Deployment", f"{PREFIX}-scheduler")["spec"]["template"]["spec"]
    assert "emptyDir" in _volume(scheduler, "state")

    existing = render(EVERYTHING_ON)
    assert "PersistentVolumeClaim" not in kinds(existing)
    scheduler = find(existing, "Deployment", f"{PREFIX}-scheduler")["spec"]["template"]["spec"]
    assert _volume(scheduler, "state")["persistentVolumeClaim"] == {"claimName": "shared-state"}
    templates = spark_pod_templates(existing)
    for template in templates.values():
        assert _volume(template["spec"], "state")["persistentVolumeClaim"] == {
            "claimName": "shared-state"
        }


def test_in_cluster_services_persist_by_default(default_manifests: list[Manifest]) -> None:
    for service in ("kafka", "mariadb", "redis", "postgresql"):
        statefulset = find(default_manifests, "StatefulSet", f"{PREFIX}-{service}")
        claims = statefulset["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["data"], service


def test_only_the_scheduler_mounts_the_state_volume(default_manifests: list[Manifest]) -> None:
    for name, spec in pod_specs(default_manifests):
        has_state = any(v["name"] == "state" for v in spec.get("volumes", []))
        assert has_state == name.endswith("-scheduler"), name


# --- network policies and disruption budgets -----------------------------------------------------


def test_network_policies(render: Render) -> None:
    """The shape of the policies; what they admit, evaluated pair by pair, is in
    tests/deploy/test_chart_security.py."""
    manifests = render()
    default = find(manifests, "NetworkPolicy", f"{PREFIX}-default-deny")["spec"]
    release_labels = {
        "app.kubernetes.io/name": "streamops",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert default["podSelector"]["matchLabels"] == release_labels
    assert default["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in default and "egress" not in default
    # Every pod of the release, Spark's included, carries the labels the policy selects.
    for _, template in spark_pod_templates(manifests).items():
        assert release_labels.items() <= template["metadata"]["labels"].items()
    api = find(manifests, "NetworkPolicy", f"{PREFIX}-api-server")["spec"]
    (rule,) = api["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert [set(peer) for peer in rule["from"]] == [{"podSelector"}], "the release's pods only"

    restricted = find(render(EVERYTHING_ON), "NetworkPolicy", f"{PREFIX}-api-server")["spec"]
    assert restricted["ingress"][0]["from"][1:] == [
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    assert "NetworkPolicy" not in kinds(render({"networkPolicy.enabled": False}))


def test_pod_disruption_budgets(render: Render) -> None:
    manifests = render()
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        budget = find(manifests, "PodDisruptionBudget", f"{PREFIX}-{component}")["spec"]
        assert budget["maxUnavailable"] == 1
        deployment = find(manifests, "Deployment", f"{PREFIX}-{component}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
    fewer = render({"airflow.scheduler.podDisruptionBudget.enabled": False})
    assert f"{PREFIX}-scheduler" not in kinds(fewer)["PodDisruptionBudget"]


def test_spark_conf_carries_the_values(render: Render) -> None:
    spark = find(render(EVERYTHING_ON), "ConfigMap", f"{PREFIX}-spark")["data"]
    conf = dict(
        line.split(None, 1) for line in spark["spark-defaults.conf"].splitlines() if line.strip()
    )
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert conf["spark.executor.instances"] == "2"
    assert conf["spark.kubernetes.driver.podTemplateFile"].endswith("driver-pod-template.yaml")
    templates = spark_pod_templates(render(EVERYTHING_ON))
    driver = templates["driver-pod-template.yaml"]["spec"]["containers"][0]
    assert driver["name"] == conf["spark.kubernetes.driver.podTemplateContainerName"]


def test_the_migrate_job_creates_the_spark_connection_once_against_real_airflow(
    render: Callable[..., list[Manifest]], stack: Stack, settings: Settings
) -> None:
    """The migrate Job's script, as rendered, run against the test stack's Airflow: it creates
    spark_default from STREAMOPS_SPARK_MASTER when the row is missing, and leaves a row that is
    there (an operator's change) as it is.

    Rendered in client mode (cluster mode adds a second Connection, which the test stack must not
    keep) and run up to its user step: the test stack's Airflow has the simple auth manager,
    without `airflow users`; the chart's FAB users are run against a real api-server in
    tests/integration/test_dashboard_airflow_auth.py."""
    job = find(render({"spark.deployMode": "client"}), "Job", f"{PREFIX}-airflow-db-migrate")
    shell, flag, full_script = job["spec"]["template"]["spec"]["containers"][0]["args"]
    script, user_step, _ = full_script.partition(" && create_user() {")
    assert user_step, f"the migrate script has no user step any more: {full_script}"
    env = {
        **airflow_environment(settings),
        "PATH": f"{settings.venv_dir / 'bin'}:{os.environ['PATH']}",
    }

    def airflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["airflow", *args], env=env, capture_output=True, text=True, timeout=300
        )

    def run_job(master: str) -> None:
        result = subprocess.run(
            [shell, flag, script],
            env={**env, "STREAMOPS_SPARK_MASTER": master},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def stored() -> dict[str, Any]:
        result = airflow("connections", "get", "spark_default", "--output", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        (row,) = json.loads(result.stdout)
        return row

    original = stored()  # made by `up`, on the settings' master
    assert original["conn_type"] == "spark" and original["host"] == settings.spark_master
    deleted = airflow("connections", "delete", "spark_default")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    try:
        run_job(settings.spark_master)
        created = stored()
        assert (created["conn_type"], created["host"]) == ("spark", settings.spark_master)
        assert created["extra_dejson"] == {
            "deploy-mode": "client",
            "spark-binary": "spark-submit",
        }
        run_job("local[1]")  # an upgrade with another value: the existing row is kept
        assert stored()["host"] == settings.spark_master
    finally:
        if airflow("connections", "get", "spark_default").returncode != 0:
            subprocess.run(
                [
                    "airflow",
                    "connections",
                    "add",
                    "spark_default",
                    "--conn-type",
                    "spark",
                    "--conn-host",
                    original["host"],
                    "--conn-extra",
                    json.dumps(original["extra_dejson"]),
                ],
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )
