"""The chart's security, rendered with `helm template` under default and alternative values:
which credentials reach which pod and how, what is on an argv, which pod may reach which, and
which ServiceAccount may do what in the Kubernetes API.

The network policies are checked by evaluating them, with the semantics of the NetworkPolicy API,
for every pair of the release's pods and for peers outside it; the Redis start command is run
as rendered against a real redis-server (on a Unix socket, no TCP port)."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import (
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    HelmError,
    Manifest,
    containers,
    find,
    pod_specs,
    spark_pod_templates,
)

PREFIX = f"{RELEASE}-streamops"
Render = Callable[..., list[Manifest]]

# Known values for every credential the chart can be given, so a test can look for them.
SECRETS = {
    "airflow.adminPassword": "admin-pw-Zq81x",
    "airflow.secrets.fernetKey": "ZmVybmV0LWtleS10ZXN0LXZhbHVlLTMyLWJ5dGVzISE=",
    "airflow.secrets.apiSecretKey": "api-secret-Kx02q",
    "airflow.secrets.jwtSecret": "jwt-secret-Lm93q",
    "mariadb.password": "mariadb-pw-Tt55q",
    "mariadb.rootPassword": "mariadb-root-pw-Vv21q",
    "redis.auth.password": "redis-pw-Hh47q",
    "kafka.auth.password": "kafka-pw-Jj58q",
    "postgresql.password": "postgres-pw-Rr17q",
}
EXTERNAL = {
    "kafka.enabled": False,
    "kafka.external.host": "kafka-bootstrap.kafka.svc",
    "kafka.external.port": 9094,
    "mariadb.enabled": False,
    "mariadb.external.host": "mariadb.db.svc",
    "mariadb.external.port": 3307,
    "redis.enabled": False,
    "redis.external.host": "redis.cache.svc",
    "redis.external.port": 6380,
    "postgresql.enabled": False,
    "airflow.metadataConnection.url": "postgresql+psycopg2://airflow:pg-url-pw-Qq11@pg.db:5432/a",
}
EXISTING_SECRETS = {
    "airflow.secrets.existingSecret": "airflow-keys",
    "mariadb.existingSecret": "streamops-mariadb",
    "mariadb.existingSecretPasswordKey": "password",
    "mariadb.existingSecretRootPasswordKey": "root-password",
    "redis.auth.existingSecret": "streamops-redis",
    "redis.auth.existingSecretPasswordKey": "password",
    "kafka.auth.existingSecret": "streamops-kafka",
    "kafka.auth.existingSecretPasswordKey": "password",
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "explicit-secrets": SECRETS,
    "external-services": {**EXTERNAL, **SECRETS},
    "existing-secrets": EXISTING_SECRETS,
    "egress-open": {"networkPolicy.egress.restrict": False},
    "rbac-left-to-admin": {"spark.rbac.create": False, "spark.serviceAccountName": "spark-runner"},
}

AIRFLOW = {"api-server", "scheduler", "dag-processor", "triggerer"}
SPARK = {"spark-driver", "spark-executor"}
SERVICE_CLIENTS = AIRFLOW | SPARK | {"streamops-init"}


def _decoded(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def _secret_env(container: Manifest) -> dict[str, Manifest]:
    """The container's env entries that come from a Secret, by name."""
    return {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }


def _all_containers(manifests: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(where, container) for every container of the release, Spark's templates included."""
    found = [
        (f"{where}/{container['name']}", container)
        for where, spec in pod_specs(manifests)
        for container in containers(spec)
    ]
    for key, template in spark_pod_templates(manifests).items():
        found += [(f"spark/{key}/{c['name']}", c) for c in template["spec"]["containers"]]
    return found


def _argv_texts(container: Manifest) -> list[str]:
    """Everything of a container that becomes a process's argv: command, args, probe commands."""
    texts = [*container.get("command", []), *container.get("args", [])]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        texts += container.get(probe, {}).get("exec", {}).get("command", [])
    return [str(text) for text in texts]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_renders_valid_objects(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            pytest.fail(f"{scenario}: {name} is not a valid {KUBE_VERSION} object: {error}")


# --- Spark pods: their passwords by reference, named by the specs --------------------------------


def _cluster_secret_refs(manifests: list[Manifest]) -> dict[str, tuple[str, str]]:
    """The specs' kubernetes.*_password_secret (what spark-submit attaches to Spark pods as
    spark.kubernetes.{driver,executor}.secretKeyRef), as field -> (Secret, key)."""
    import yaml

    config_map = find(manifests, "ConfigMap", f"{PREFIX}-pipelines")
    specs = yaml.safe_load(config_map["data"]["pipelines.yaml"])
    kubernetes = specs["defaults"]["kubernetes"]
    return {
        field: tuple(value.split(":", 1))  # type: ignore[misc]
        for field, value in kubernetes.items()
        if field.endswith("_password_secret")
    }


@pytest.mark.parametrize(
    ("scenario", "mariadb", "redis"),
    [
        (
            "defaults",
            (f"{PREFIX}-mariadb", "mariadb-password"),
            (f"{PREFIX}-redis", "redis-password"),
        ),
        ("existing-secrets", ("streamops-mariadb", "password"), ("streamops-redis", "password")),
    ],
)
def test_spark_pods_get_only_the_passwords_the_specs_name(
    render: Render, scenario: str, mariadb: tuple[str, str], redis: tuple[str, str]
) -> None:
    manifests = render(SCENARIOS[scenario])
    templates = spark_pod_templates(manifests)
    assert set(templates) == {"driver-pod-template.yaml", "executor-pod-template.yaml"}
    for key, template in templates.items():
        (container,) = template["spec"]["containers"]
        # No credential in the templates: spark-submit attaches each password once, by reference.
        assert [variable["name"] for variable in container["env"]] == [
            "STREAMOPS_PIPELINES_FILE"
        ], key
        assert not _secret_env(container), key
        # The settings come from the env ConfigMap; no Secret is mounted or imported whole.
        assert container["envFrom"] == [{"configMapRef": {"name": f"{PREFIX}-env"}}], key
        assert not any("secret" in volume for volume in template["spec"].get("volumes", [])), key
    refs = _cluster_secret_refs(manifests)
    # MariaDB, Redis and Kafka's SCRAM password (tests/deploy/test_kafka_auth.py checks its name).
    assert set(refs) == {
        "mariadb_password_secret",
        "redis_password_secret",
        "kafka_sasl_password_secret",
    }
    assert refs["mariadb_password_secret"] == mariadb
    assert refs["redis_password_secret"] == redis


def test_airflow_keeps_its_own_secrets_which_spark_lacks(render: Render) -> None:
    """The contrast that makes the test above meaningful: Airflow containers do get the keys."""
    scheduler = find(render(), "Deployment", f"{PREFIX}-scheduler")
    names = set(_secret_env(scheduler["spec"]["template"]["spec"]["containers"][0]))
    assert {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "STREAMOPS_AIRFLOW_ADMIN_PASSWORD",
        "STREAMOPS_MARIADB_PASSWORD",
        "STREAMOPS_REDIS_PASSWORD",
    } <= names


def test_spark_secret_references_resolve_to_rendered_secrets(render: Render) -> None:
    manifests = render(SECRETS)
    secrets = {m["metadata"]["name"]: _decoded(m) for m in manifests if m["kind"] == "Secret"}
    expected = {
        "mariadb_password_secret": SECRETS["mariadb.password"],
        "redis_password_secret": SECRETS["redis.auth.password"],
        "kafka_sasl_password_secret": SECRETS["kafka.auth.password"],
    }
    refs = _cluster_secret_refs(manifests)
    assert set(refs) == set(expected)
    for field_name, (secret, key) in refs.items():
        assert secrets[secret][key] == expected[field_name]


# --- no secret outside a Secret -------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["explicit-secrets", "external-services"])
def test_no_config_map_contains_a_secret_value(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    values = [v for k, v in SCENARIOS[scenario].items() if k in SECRETS] + ["pg-url-pw-Qq11"]
    config_maps = [m for m in manifests if m["kind"] == "ConfigMap"]
    assert {m["metadata"]["name"] for m in config_maps} >= {f"{PREFIX}-env", f"{PREFIX}-spark"}
    for config_map in config_maps:
        for key, text in config_map.get("data", {}).items():
            for value in values:
                assert value not in text, f"{config_map['metadata']['name']}/{key} holds a secret"
    for manifest in manifests:
        if manifest["kind"] != "Secret":
            for value in values:
                assert value not in repr(manifest), f"{manifest['kind']}: a secret value leaks"


@pytest.mark.parametrize("scenario", ["explicit-secrets", "external-services"])
def test_no_secret_value_is_on_any_argv(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    values = [v for k, v in SCENARIOS[scenario].items() if k in SECRETS]
    checked = 0
    for where, container in _all_containers(manifests):
        for text in _argv_texts(container):
            for value in values:
                assert value not in text, f"{where}: a secret value is on the command line"
            checked += 1
    assert checked > 20


def test_no_secret_variable_is_expanded_onto_an_argv_or_printed(render: Render) -> None:
    """Kubernetes replaces $(NAME) in command and args before the process starts (an argv), and a
    script that echoes or prints a credential puts it in the pod's log. Scripts may pass a
    secret variable on only through shell builtins to a file or a pipe (the Redis start)."""
    used = set()
    for where, container in _all_containers(render()):
        secret_names = set(_secret_env(container))
        for text in _argv_texts(container):
            for name in secret_names:
                assert f"$({name})" not in text, f"{where}: $({name}) is expanded onto an argv"
                for line in re.split(r"&&|\|\||;|\n", text):
                    if re.search(rf"\b(echo|print)\b.*\b{name}\b", line):
                        pytest.fail(f"{where}: prints {name}: {line.strip()}")
                if re.search(rf"\${{?{name}\b", text):
                    used.add((where.rsplit("/", 1)[-1], name))
    assert ("redis", "REDIS_PASSWORD") in used, "the check above must see the Redis start script"


def test_mariadb_root_password_never_reaches_a_log(render: Render) -> None:
    manifests = render(SECRETS)
    statefulset = find(manifests, "StatefulSet", f"{PREFIX}-mariadb")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    # The image prints the root password it generates for MARIADB_RANDOM_ROOT_PASSWORD.
    assert not {"MARIADB_RANDOM_ROOT_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD"} & set(env)
    assert "MARIADB_RANDOM_ROOT_PASSWORD" not in repr(render()) + repr(manifests)
    assert env["MARIADB_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{PREFIX}-mariadb",
        "key": "mariadb-root-password",
    }
    assert env["MARIADB_ROOT_HOST"]["value"] == "localhost"
    secret = _decoded(find(manifests, "Secret", f"{PREFIX}-mariadb"))
    assert secret == {
        "mariadb-password": SECRETS["mariadb.password"],
        "mariadb-root-password": SECRETS["mariadb.rootPassword"],
    }
    generated = _decoded(find(render(), "Secret", f"{PREFIX}-mariadb"))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", generated["mariadb-root-password"])
    assert generated["mariadb-root-password"] != generated["mariadb-password"]
    # An external server: no root password is made, and nothing references one.
    external = render(EXTERNAL)
    assert set(_decoded(find(external, "Secret", f"{PREFIX}-mariadb"))) == {"mariadb-password"}
    existing = find(render(EXISTING_SECRETS), "StatefulSet", f"{PREFIX}-mariadb")
    env = {v["name"]: v for v in existing["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MARIADB_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "streamops-mariadb",
        "key": "root-password",
    }


# --- Redis with a password ------------------------------------------------------------------------


def _redis_container(manifests: list[Manifest]) -> Manifest:
    statefulset = find(manifests, "StatefulSet", f"{PREFIX}-redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def test_redis_requires_a_password_that_is_not_on_its_argv(render: Render) -> None:
    manifests = render(SECRETS)
    container = _redis_container(manifests)
    command, args = container["command"], container["args"]
    assert command[:2] == ["sh", "-c"] and args[0] == "redis-server"
    assert "--protected-mode" not in args and "--requirepass" not in args
    include = args[args.index("--include") + 1]
    assert f"> {include}" in command[2] and "requirepass" in command[2]
    assert "umask 077" in command[2]
    assert SECRETS["redis.auth.password"] not in repr(command + args)
    refs = _secret_env(container)
    assert refs == {
        "REDIS_PASSWORD": {"name": f"{PREFIX}-redis", "key": "redis-password"},
        "REDISCLI_AUTH": {"name": f"{PREFIX}-redis", "key": "redis-password"},
    }
    for probe in ("livenessProbe", "readinessProbe"):
        probe_command = " ".join(container[probe]["exec"]["command"])
        assert " -a " not in probe_command and "--pass" not in probe_command
        assert "grep -qx PONG" in probe_command
    # The file lives on a memory-backed volume only this pod sees.
    spec = find(manifests, "StatefulSet", f"{PREFIX}-redis")["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if include.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"
    assert _decoded(find(manifests, "Secret", f"{PREFIX}-redis")) == {
        "redis-password": SECRETS["redis.auth.password"]
    }


def test_redis_password_is_generated_or_brought(render: Render) -> None:
    generated = _decoded(find(render(), "Secret", f"{PREFIX}-redis"))["redis-password"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", generated)
    manifests = render(EXISTING_SECRETS)
    assert not any(
        m["kind"] == "Secret" and m["metadata"]["name"] == f"{PREFIX}-redis" for m in manifests
    )
    assert _secret_env(_redis_container(manifests))["REDIS_PASSWORD"] == {
        "name": "streamops-redis",
        "key": "password",
    }


@pytest.mark.parametrize("scenario", ["defaults", "existing-secrets", "external-services"])
def test_every_redis_client_gets_the_password_by_reference(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    expected = (
        {"name": "streamops-redis", "key": "password"}
        if scenario == "existing-secrets"
        else {"name": f"{PREFIX}-redis", "key": "redis-password"}
    )
    clients = {f"Deployment/{PREFIX}-{name}" for name in AIRFLOW} | {f"Job/{PREFIX}-streamops-init"}
    seen = set()
    for where, spec in pod_specs(manifests):
        for container in spec["containers"]:
            ref = _secret_env(container).get("STREAMOPS_REDIS_PASSWORD")
            if where in clients:
                assert ref == expected, where
                seen.add(where)
    assert seen == clients
    # Spark pods: attached by spark-submit from the specs (cluster mode is the default).
    secret, key = _cluster_secret_refs(manifests)["redis_password_secret"]
    assert {"name": secret, "key": key} == expected


def test_rendered_redis_start_runs_with_requirepass(render: Render, tmp_path: Path) -> None:
    """The StatefulSet's command and args, as rendered, run against a real redis-server (moved
    to a temporary folder and a Unix socket): it starts, refuses clients without the password,
    answers with it, and no process shows the password on its command line; the probe's command
    passes only with the password."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (`streamops install`)")
    password = "p\"a\\ss w$rd'x-Hh47"
    container = _redis_container(render({"redis.auth.password": password}))
    args = list(container["args"])
    include = args[args.index("--include") + 1]
    conf = tmp_path / "auth" / "auth.conf"
    conf.parent.mkdir()
    socket = tmp_path / "redis.sock"
    script = container["command"][2].replace(include, str(conf))
    args[args.index("--include") + 1] = str(conf)
    args[args.index("--dir") + 1] = str(tmp_path)
    args[args.index("--port") + 1] = "0"
    args += ["--unixsocket", str(socket), "--logfile", str(tmp_path / "redis.log")]
    environment = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": password}
    server = subprocess.Popen(
        [*container["command"][:2], script, *container["command"][3:], *args], env=environment
    )
    try:
        deadline = time.monotonic() + 15
        while not socket.exists():
            assert server.poll() is None, (tmp_path / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert cmdline.startswith("redis-server"), "sh must exec redis-server (signals, PID 1)"
        assert password not in cmdline
        assert oct(conf.stat().st_mode & 0o777) == "0o600"

        def cli(*extra: str, auth: str | None) -> str:
            env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": auth} if auth else {})}
            return subprocess.run(
                ["redis-cli", "-s", str(socket), *extra],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()

        assert cli("ping", auth=None).startswith("NOAUTH")
        assert cli("ping", auth=password) == "PONG"
        assert cli("config", "get", "protected-mode", auth=password).split() == [
            "protected-mode",
            "yes",
        ]
        probe = container["readinessProbe"]["exec"]["command"]
        probe_script = re.sub(r"-p \d+", f"-s {socket}", probe[2])

        def probe_passes(auth: str | None) -> bool:
            env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": auth} if auth else {})}
            return subprocess.run([*probe[:2], probe_script], env=env, timeout=10).returncode == 0

        assert probe_passes(password)
        assert not probe_passes(None)
        assert not probe_passes("wrong")
    finally:
        server.terminate()
        server.wait(timeout=15)


# --- network policies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A pod (labels, namespace, named ports) or an address outside the cluster (no labels)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        operator, key = expression["operator"], expression["key"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and labels.get(key) in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(endpoint.ip)
        excepted = any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if endpoint.namespace is None:
        return False  # selectors choose pods only
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": endpoint.namespace}
        if not _selector_matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif endpoint.namespace != NAMESPACE:
        return False  # a podSelector alone means the policy's namespace
    return _selector_matches(peer.get("podSelector", {}), endpoint.labels)


def _port_matches(rule: dict[str, Any], destination: Endpoint, port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port:
            return True
        if isinstance(wanted, str) and destination.ports.get(wanted) == port:
            return True
    return False


def _selected(policy: Manifest, endpoint: Endpoint) -> bool:
    return endpoint.namespace == NAMESPACE and _selector_matches(
        policy["spec"]["podSelector"], endpoint.labels
    )


def allowed(
    policies: list[Manifest],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether a connection may open, by the NetworkPolicy API: the source's egress policies and
    the destination's ingress policies must each allow it (a pod no policy of a direction selects
    is not isolated in that direction)."""
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"] and _selected(p, source)]
    if egress and not any(
        (not rule.get("to") or any(_peer_matches(peer, destination) for peer in rule["to"]))
        and _port_matches(rule, destination, port, protocol)
        for policy in egress
        for rule in policy["spec"].get("egress", [])
    ):
        return False
    ingress = [
        p for p in policies if "Ingress" in p["spec"]["policyTypes"] and _selected(p, destination)
    ]
    return not ingress or any(
        (not rule.get("from") or any(_peer_matches(peer, source) for peer in rule["from"]))
        and _port_matches(rule, destination, port, protocol)
        for policy in ingress
        for rule in policy["spec"].get("ingress", [])
    )


SPARK_PORTS = {"driver-rpc": 7078, "block-manager": 7079}


def release_pods(manifests: list[Manifest]) -> dict[str, Endpoint]:
    """One endpoint per component of the release: its pod labels and container ports."""
    pods: dict[str, Endpoint] = {}
    templates = [
        (m["spec"]["template"]["metadata"]["labels"], m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    templates += [
        (t["metadata"]["labels"], t["spec"]) for t in spark_pod_templates(manifests).values()
    ]
    for number, (labels, spec) in enumerate(templates, start=10):
        component = labels["app.kubernetes.io/component"]
        ports = {
            port["name"]: port["containerPort"]
            for container in spec["containers"]
            for port in container.get("ports", [])
            if "name" in port
        }
        if component in SPARK:
            ports = dict(SPARK_PORTS)
        pods[component] = Endpoint(component, f"10.1.0.{number}", NAMESPACE, dict(labels), ports)
    return pods


def network_policies(manifests: list[Manifest]) -> list[Manifest]:
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert policies
    return policies


# Which components may open a connection to each component's ports; everything else is denied.
EXPECTED_CLIENTS = {
    "kafka": SERVICE_CLIENTS,
    "mariadb": SERVICE_CLIENTS,
    "redis": SERVICE_CLIENTS,
    "postgresql": AIRFLOW | {"airflow-db-migrate"},
    "api-server": {"scheduler", "dag-processor", "triggerer"},
    "scheduler": {"api-server"},  # task logs
    "triggerer": {"api-server"},  # trigger logs
    "spark-driver": {"spark-executor"},
    "spark-executor": {"spark-driver", "spark-executor"},
    "dag-processor": set(),
    "streamops-init": set(),
    "airflow-db-migrate": set(),
}


# Ports no one may reach: the broker's KRaft controller listens for the broker itself (localhost).
CLOSED_PORTS = {("kafka", "controller")}


def test_default_deny_selects_every_pod_of_the_release(render: Render) -> None:
    manifests = render()
    deny = find(manifests, "NetworkPolicy", f"{PREFIX}-default-deny")["spec"]
    assert deny["podSelector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "streamops",
            "app.kubernetes.io/instance": RELEASE,
        }
    }
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny, "deny-all has no rules"
    pods = release_pods(manifests)
    assert set(pods) == set(EXPECTED_CLIENTS), "every component is in the expectations"
    for pod in pods.values():
        assert _selector_matches(deny["podSelector"], pod.labels), pod.name
    open_egress = find(render(SCENARIOS["egress-open"]), "NetworkPolicy", f"{PREFIX}-default-deny")
    assert open_egress["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize("scenario", ["defaults", "egress-open"])
def test_each_pod_admits_exactly_its_clients(render: Render, scenario: str) -> None:
    manifests = render(SCENARIOS[scenario])
    policies = network_policies(manifests)
    pods = release_pods(manifests)
    for destination in pods.values():
        for port_name, port in destination.ports.items():
            admitted = {
                source.name
                for source in pods.values()
                if allowed(policies, source, destination, port)
            }
            expected = EXPECTED_CLIENTS[destination.name]
            if (destination.name, port_name) in CLOSED_PORTS:
                expected = set()
            assert admitted == expected, f"{destination.name}:{port_name} ({port})"
    # A port a component does not serve is closed even to its clients.
    assert not allowed(policies, pods["scheduler"], pods["mariadb"], 22)
    assert not allowed(policies, pods["scheduler"], pods["api-server"], 9999)


def test_nothing_outside_the_release_gets_in_by_default(render: Render) -> None:
    manifests = render()
    policies = network_policies(manifests)
    outsiders = [
        Endpoint("internet", "203.0.113.5"),
        Endpoint("other-namespace", "10.2.0.5", "ingress-nginx", {"app.kubernetes.io/name": "x"}),
        Endpoint(
            "other-release",
            "10.1.9.9",
            NAMESPACE,
            {"app.kubernetes.io/name": "streamops", "app.kubernetes.io/instance": "other"},
        ),
    ]
    for destination in release_pods(manifests).values():
        for port in [*destination.ports.values(), 80, 443]:
            for source in outsiders:
                assert not allowed(policies, source, destination, port), (
                    f"{source.name} reaches {destination.name}:{port}"
                )


def test_api_server_admits_the_configured_peers_only(render: Render) -> None:
    manifests = render(
        {
            "networkPolicy.apiServer.allowedCidrs": ["203.0.113.0/24"],
            "networkPolicy.apiServer.allowedNamespaces": ["monitoring"],
            "networkPolicy.apiServer.allowedPods": [
                {
                    "namespace": "ingress-nginx",
                    "labels": (
                        "app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller"
                    ),
                }
            ],
        }
    )
    policies = network_policies(manifests)
    pods = release_pods(manifests)
    api, mariadb = pods["api-server"], pods["mariadb"]
    controller = {
        "app.kubernetes.io/name": "ingress-nginx",
        "app.kubernetes.io/component": "controller",
    }
    admitted = [
        Endpoint("listed-cidr", "203.0.113.77"),
        Endpoint("listed-namespace", "10.3.0.1", "monitoring", {"app": "prometheus"}),
        Endpoint("ingress-controller", "10.4.0.1", "ingress-nginx", controller),
    ]
    refused = [
        Endpoint("other-cidr", "198.51.100.1"),
        Endpoint("other-pod-of-ingress-ns", "10.4.0.2", "ingress-nginx", {"app": "other"}),
        Endpoint("controller-elsewhere", "10.5.0.1", "default", controller),
    ]
    for source in admitted:
        assert allowed(policies, source, api, api.ports["http"]), source.name
        assert not allowed(policies, source, mariadb, 3306), source.name
        assert not allowed(policies, source, pods["scheduler"], pods["scheduler"].ports["logs"])
    for source in refused:
        assert not allowed(policies, source, api, api.ports["http"]), source.name
    # The release's own clients keep their access.
    assert allowed(policies, pods["triggerer"], api, api.ports["http"])


def test_egress_is_denied_but_for_what_each_pod_needs(render: Render) -> None:
    manifests = render({"networkPolicy.egress.allowed": [{"cidr": "10.20.0.0/16", "port": 443}]})
    policies = network_policies(manifests)
    pods = release_pods(manifests)
    dns = Endpoint("kube-dns", "10.96.0.10", "kube-system", {"k8s-app": "kube-dns"})
    kubernetes_api = Endpoint("kubernetes-api", "172.18.0.2")
    internet = Endpoint("internet", "203.0.113.5")
    object_store = Endpoint("object-store", "10.20.3.4")
    for pod in pods.values():
        assert allowed(policies, pod, dns, 53, "UDP") and allowed(policies, pod, dns, 53), pod.name
        assert allowed(policies, pod, object_store, 443), pod.name
        assert not allowed(policies, pod, object_store, 22), pod.name
        assert not allowed(policies, pod, internet, 80), f"{pod.name} reaches the internet"
        # Without networkPolicy.egress.kubernetesApi.cidrs the API users may reach the API
        # server's ports at any address (its endpoints are not known when rendering).
        api_users = {"scheduler", "triggerer", "spark-driver"}
        for port in (443, 6443):
            assert allowed(policies, pod, kubernetes_api, port) == (pod.name in api_users), pod.name
            assert allowed(policies, pod, internet, port) == (pod.name in api_users), pod.name
    # Pinning the API server's address closes those ports elsewhere.
    pinned = network_policies(
        render({"networkPolicy.egress.kubernetesApi.cidrs": ["172.18.0.2/32"]})
    )
    assert allowed(pinned, pods["scheduler"], kubernetes_api, 6443)
    assert not allowed(pinned, pods["scheduler"], internet, 6443)
    assert not allowed(pinned, pods["scheduler"], internet, 443)
    # Unrestricted egress is an option (ingress stays as strict).
    open_policies = network_policies(render(SCENARIOS["egress-open"]))
    assert allowed(open_policies, pods["dag-processor"], internet, 443)


def test_external_services_are_reachable_by_their_clients_only(render: Render) -> None:
    manifests = render(EXTERNAL)
    policies = network_policies(manifests)
    pods = release_pods(manifests)
    assert not {"kafka", "mariadb", "redis", "postgresql"} & set(pods)
    outside = Endpoint("managed-service", "10.50.0.9")
    for port in (9094, 3307, 6380):
        for pod in pods.values():
            assert allowed(policies, pod, outside, port) == (pod.name in SERVICE_CLIENTS), (
                f"{pod.name} -> :{port}"
            )
    # The metadata database's port is not known to the chart: networkPolicy.egress.allowed.
    assert not allowed(policies, pods["scheduler"], outside, 5432)
    with_pg = render(
        {**EXTERNAL, "networkPolicy.egress.allowed": [{"cidr": "10.50.0.9/32", "port": 5432}]}
    )
    assert allowed(network_policies(with_pg), pods["scheduler"], outside, 5432)


def test_the_evaluator_denies_what_no_policy_allows() -> None:
    """The evaluator above can say no and yes: a deny-all and one allow rule."""
    a = Endpoint("a", "10.1.0.1", NAMESPACE, {"role": "a"}, {"http": 80})
    b = Endpoint("b", "10.1.0.2", NAMESPACE, {"role": "b"}, {"http": 80})
    deny = {"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert allowed([], a, b, 80)
    assert not allowed([deny], a, b, 80)
    allow_b = {
        "spec": {
            "podSelector": {"matchLabels": {"role": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "a"}}}],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    }
    allow_a_out = {"spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    assert allowed([deny, allow_b, allow_a_out], a, b, 80)
    assert not allowed([deny, allow_b, allow_a_out], b, a, 80)
    assert not allowed([deny, allow_b, allow_a_out], a, b, 81)


def test_network_policies_can_be_left_out(render: Render) -> None:
    assert not [m for m in render({"networkPolicy.enabled": False}) if m["kind"] == "NetworkPolicy"]


# --- RBAC -----------------------------------------------------------------------------------------


def account_rights(manifests: list[Manifest]) -> dict[str, dict[str, set[str]]]:
    """ServiceAccount name -> resource -> verbs, from the rendered Roles and RoleBindings."""
    roles = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Role"}
    rights: dict[str, dict[str, set[str]]] = {
        m["metadata"]["name"]: {} for m in manifests if m["kind"] == "ServiceAccount"
    }
    for binding in (m for m in manifests if m["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "no ClusterRole is bound"
        role = roles[binding["roleRef"]["name"]]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            account = rights.setdefault(subject["name"], {})
            for rule in role["rules"]:
                assert rule["apiGroups"] == [""], "core API group only"
                assert "resourceNames" not in rule
                for resource in rule["resources"]:
                    account.setdefault(resource, set()).update(rule["verbs"])
    return rights


def _pod_accounts(manifests: list[Manifest]) -> dict[str, tuple[str | None, bool]]:
    """Workload -> (serviceAccountName, token mounted)."""
    return {
        where: (spec.get("serviceAccountName"), spec.get("automountServiceAccountToken", True))
        for where, spec in pod_specs(manifests)
    }


def test_only_the_launcher_and_the_drivers_have_api_rights(render: Render) -> None:
    manifests = render()
    assert not {"ClusterRole", "ClusterRoleBinding"} & {m["kind"] for m in manifests}
    rights = account_rights(manifests)
    assert rights[f"{PREFIX}-spark-launcher"] == {
        "pods": {"create", "get", "list", "watch", "delete"},
        # spark-submit server-side-applies the driver's Service and ConfigMap; they are owned
        # by the driver pod and go with it.
        "services": {"create", "patch"},
        "configmaps": {"create", "patch"},
    }
    driver = rights[f"{PREFIX}-spark"]
    assert {"create", "get", "list", "watch", "delete"} <= driver["pods"]
    for resource in ("services", "configmaps"):
        assert {"create", "delete"} <= driver[resource]
    assert rights[f"{PREFIX}-airflow"] == {}, "the other pods' account has no rights"
    for account, resources in rights.items():
        assert not {"secrets", "pods/log", "pods/exec", "pods/attach", "*"} & set(resources), (
            account
        )
        assert not any("*" in verbs for verbs in resources.values()), account


def test_each_pod_runs_as_the_account_it_needs(render: Render) -> None:
    manifests = render()
    accounts = _pod_accounts(manifests)
    launcher, plain = f"{PREFIX}-spark-launcher", f"{PREFIX}-airflow"
    for component in ("scheduler", "triggerer"):
        assert accounts.pop(f"Deployment/{PREFIX}-{component}") == (launcher, True)
    for where in (
        f"Deployment/{PREFIX}-api-server",
        f"Deployment/{PREFIX}-dag-processor",
        f"Job/{PREFIX}-streamops-init",
        f"Job/{PREFIX}-airflow-db-migrate",
    ):
        assert accounts.pop(where) == (plain, False), where
    # The in-cluster services use the namespace's default account, without a token.
    assert all(token is False for _, token in accounts.values()), accounts
    rendered_accounts = {m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount"}
    assert {launcher, plain, f"{PREFIX}-spark"} == rendered_accounts
    conf = find(manifests, "ConfigMap", f"{PREFIX}-spark")["data"]["spark-defaults.conf"]
    assert re.search(rf"driver\.serviceAccountName\s+{PREFIX}-spark\n", conf)
    templates = spark_pod_templates(manifests)
    assert templates["driver-pod-template.yaml"]["spec"]["automountServiceAccountToken"] is True
    assert templates["executor-pod-template.yaml"]["spec"]["automountServiceAccountToken"] is False


def test_rbac_left_to_the_cluster_admin_keeps_the_accounts(render: Render) -> None:
    manifests = render(SCENARIOS["rbac-left-to-admin"])
    assert not {"Role", "RoleBinding"} & {m["kind"] for m in manifests}
    rendered = {m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount"}
    # Pods may only name an account that exists: the launcher's stays, the drivers' is theirs.
    assert rendered == {f"{PREFIX}-airflow", f"{PREFIX}-spark-launcher"}
    for where, (account, _) in _pod_accounts(manifests).items():
        assert account in rendered | {None}, where


def _role_names(manifests: Iterable[Manifest]) -> set[str]:
    return {m["metadata"]["name"] for m in manifests if m["kind"] in ("Role", "RoleBinding")}


def test_role_names(render: Render) -> None:
    assert _role_names(render()) == {f"{PREFIX}-spark", f"{PREFIX}-spark-launcher"}


def test_an_unparseable_peer_label_is_rejected(render: Render) -> None:
    with pytest.raises(HelmError) as error:
        render({"networkPolicy.apiServer.allowedPods": [{"namespace": "x", "labels": "no-equals"}]})
    assert "allowedPods" in error.value.output
