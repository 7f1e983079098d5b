"""Kafka with SASL/SCRAM as the Helm chart and docker-compose.yaml ship it.

Rendered: the broker's listeners (no PLAINTEXT one for clients while auth is on), where the
password comes from (a Secret, by reference), that it is on no argv and in no ConfigMap, and that
every pod that talks to Kafka gets the settings from which ``Settings`` validates and
``streamops.kafka_security`` builds SCRAM clients.

Run for real: the broker's start script (files/kafka-start.sh, which both deployments run in the
official apache/kafka image) with the environment each deployment gives the broker, moved to a
temporary folder and free ports on loopback, against the local stack's Kafka jars. Stand-ins for
the image's bin/*.sh run the same classes. A SCRAM client with the clients' settings is served,
one without credentials or with a wrong password is refused, the password is on no process's argv,
and compose's healthcheck command passes only with the client settings the script wrote.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import psutil
import pytest
import yaml
from confluent_kafka import KafkaException

from streamops.clients import kafka_admin
from streamops.compose_secrets import ensure_secrets_file
from streamops.config import Settings
from streamops.kafka_security import librdkafka_security, spark_kafka_security_options
from streamops.supervision.spec import parse_specs
from tests.deploy.conftest import (
    CHART_DIR,
    COMPOSE_ENV_FILE,
    KUBE_VERSION,
    PROJECT_ROOT,
    RELEASE,
    HelmError,
    Manifest,
    containers,
    find,
    parse_env_file,
    pod_specs,
    spark_pod_templates,
)
from tests.deploy.test_rendered_config import pod_container_env, settings_from
from tests.integration.support import free_port

Render = Callable[..., list[Manifest]]
PREFIX = f"{RELEASE}-streamops"
START_SCRIPT = CHART_DIR / "files" / "kafka-start.sh"
# Every character the start script accepts besides letters and digits.
PASSWORD = "Kp.9~x@%+=/:-Q7" + "z" * 8
EXTERNAL = {
    "kafka.enabled": False,
    "kafka.external.host": "kafka-bootstrap.kafka.svc",
    "kafka.external.port": 9094,
}
STRIMZI_USER = {
    **EXTERNAL,
    "kafka.external.securityProtocol": "SASL_SSL",
    "kafka.auth.username": "streamops-user",
    "kafka.auth.existingSecret": "streamops-user",
    "kafka.auth.existingSecretPasswordKey": "password",
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "explicit-password": {"kafka.auth.password": PASSWORD},
    "auth-off": {"kafka.auth.enabled": False},
    "sha-256": {"kafka.auth.mechanism": "SCRAM-SHA-256"},
    "strimzi-user": STRIMZI_USER,
    "external-auth-off": {**EXTERNAL, "kafka.auth.enabled": False},
}
AIRFLOW = ("api-server", "scheduler", "dag-processor", "triggerer")
# Every pod that talks to Kafka: Airflow (tasks, triggers, the plugin), the topics Job, Spark.
KAFKA_CLIENT_WORKLOADS = {
    *(f"Deployment/{PREFIX}-{name}" for name in AIRFLOW),
    f"Job/{PREFIX}-streamops-init",
}


def _decoded(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def _kafka_container(manifests: list[Manifest]) -> Manifest:
    statefulset = find(manifests, "StatefulSet", f"{PREFIX}-kafka")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: Manifest) -> dict[str, Manifest]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def _protocol_map(value: str) -> dict[str, str]:
    return dict(entry.split(":", 1) for entry in value.split(","))


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    result = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def _kafka_clients(manifests: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(where, container) of every container that talks to Kafka and gets its password in its
    pod's env. Spark's pods get theirs from spark-submit, by the Secret the specs name
    (test_the_specs_name_the_kafka_secret_for_driver_pods); their templates carry none."""
    found = [
        (f"{where}/{container['name']}", container)
        for where, spec in pod_specs(manifests)
        if where in KAFKA_CLIENT_WORKLOADS
        for container in spec["containers"]
    ]
    assert {where.rsplit("/", 1)[0] for where, _ in found} == KAFKA_CLIENT_WORKLOADS
    for key, template in spark_pod_templates(manifests).items():
        for container in template["spec"]["containers"]:
            assert not [v for v in container.get("env", []) if "valueFrom" in v], key
    return found


# --- the chart, rendered -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_kafka_scenario_renders_valid_objects(render: Render, scenario: str) -> None:
    for manifest in render(SCENARIOS[scenario]):
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            pytest.fail(f"{scenario}: {name} is not a valid {KUBE_VERSION} object: {error}")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_the_broker_takes_only_scram_clients_when_auth_is_on(
    render: Render, mechanism: str
) -> None:
    manifests = render({} if mechanism == "SCRAM-SHA-512" else {"kafka.auth.mechanism": mechanism})
    container = _kafka_container(manifests)
    env = {name: v.get("value") for name, v in _env(container).items()}
    protocols = _protocol_map(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    assert protocols == {"SASL_PLAINTEXT": "SASL_PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
    assert set(listeners) == set(protocols)
    # The only PLAINTEXT listener is the controller's, on the pod's loopback.
    assert listeners["CONTROLLER"][0] == "localhost"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1].startswith("localhost:")
    assert list(_listeners(env["KAFKA_ADVERTISED_LISTENERS"])) == ["SASL_PLAINTEXT"]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "SASL_PLAINTEXT"
    assert [port["name"] for port in container["ports"]] == ["kafka"]
    assert env["STREAMOPS_KAFKA_SASL_MECHANISM"] == mechanism
    assert env["STREAMOPS_KAFKA_SASL_USERNAME"] == "streamops"
    # The image's own start formats without SCRAM users: the chart's script runs instead.
    assert container["command"] == ["sh", "/opt/streamops/kafka/start.sh"]
    config_map = find(manifests, "ConfigMap", f"{PREFIX}-kafka")
    assert config_map["data"]["start.sh"].rstrip("\n") == START_SCRIPT.read_text().rstrip("\n")
    spec = find(manifests, "StatefulSet", f"{PREFIX}-kafka")["spec"]["template"]["spec"]
    assert spec["enableServiceLinks"] is False, "KAFKA_* Service variables would be properties"
    private = next(v for v in spec["volumes"] if v["name"] == "private-config")
    assert private["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["PRIVATE_CONFIG_DIR"]]["name"] == "private-config"
    assert mounts["/opt/streamops/kafka"]["readOnly"] is True
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "kafka"}, probe


def test_auth_off_keeps_plaintext_for_development(render: Render) -> None:
    manifests = render(SCENARIOS["auth-off"])
    container = _kafka_container(manifests)
    env = {name: v.get("value") for name, v in _env(container).items()}
    assert _protocol_map(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]) == {
        "PLAINTEXT": "PLAINTEXT",
        "CONTROLLER": "PLAINTEXT",
    }
    assert not {name for name in env if name.startswith("STREAMOPS_KAFKA_SASL")}
    assert not [
        m for m in manifests if m["metadata"]["name"] == f"{PREFIX}-kafka" and m["kind"] == "Secret"
    ]
    config = find(manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    assert config["STREAMOPS_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    for where, client in _kafka_clients(manifests):
        assert "STREAMOPS_KAFKA_SASL_PASSWORD" not in _env(client), where


def test_the_password_is_generated_given_or_brought(render: Render) -> None:
    generated = _decoded(find(render(), "Secret", f"{PREFIX}-kafka"))
    assert set(generated) == {"kafka-password"}
    assert re.fullmatch(r"[A-Za-z0-9]{32}", generated["kafka-password"])
    given = _decoded(find(render(SCENARIOS["explicit-password"]), "Secret", f"{PREFIX}-kafka"))
    assert given == {"kafka-password": PASSWORD}
    brought = render(STRIMZI_USER)
    assert not [m for m in brought if m["kind"] == "Secret" and "kafka" in m["metadata"]["name"]]
    for where, client in _kafka_clients(brought):
        ref = _env(client)["STREAMOPS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "streamops-user", "key": "password"}, where


def test_a_password_the_broker_cannot_take_is_refused_by_the_schema(render: Render) -> None:
    for password in ('a"b', "a,b", "a b", "a\\b"):
        with pytest.raises(HelmError, match="password"):
            render({"kafka.auth.password": password})


@pytest.mark.parametrize("scenario", ["defaults", "explicit-password", "sha-256", "strimzi-user"])
def test_every_kafka_client_gets_the_settings_and_the_password_by_reference(
    render: Render, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = SCENARIOS[scenario]
    manifests = render(values)
    expected_ref = (
        {"name": "streamops-user", "key": "password"}
        if values.get("kafka.auth.existingSecret")
        else {"name": f"{PREFIX}-kafka", "key": "kafka-password"}
    )
    expected_protocol = values.get("kafka.external.securityProtocol", "SASL_PLAINTEXT")
    clients = _kafka_clients(manifests)
    assert len(clients) == len(KAFKA_CLIENT_WORKLOADS)
    for where, container in clients:
        variable = _env(container)["STREAMOPS_KAFKA_SASL_PASSWORD"]
        assert set(variable) == {"name", "valueFrom"}, f"{where}: a literal password"
        assert variable["valueFrom"]["secretKeyRef"] == expected_ref, where
        # What the process sees: the image's ENV, the env ConfigMap, then env (a dummy password).
        seen = pod_container_env(manifests, container)
        assert seen.secret_refs["STREAMOPS_KAFKA_SASL_PASSWORD"] == tuple(expected_ref.values())
        settings = settings_from(seen.env, monkeypatch, tmp_path)  # SASL validates: user + pw
        assert settings.kafka_security_protocol == expected_protocol, where
        assert settings.kafka_sasl_mechanism == values.get("kafka.auth.mechanism", "SCRAM-SHA-512")
        assert settings.kafka_sasl_username == values.get("kafka.auth.username", "streamops")
        assert settings.kafka_sasl_password == seen.env["STREAMOPS_KAFKA_SASL_PASSWORD"]
        rdkafka = librdkafka_security(settings)
        assert rdkafka["security.protocol"] == expected_protocol
        assert rdkafka["sasl.mechanisms"] == settings.kafka_sasl_mechanism
        assert rdkafka["sasl.password"] == settings.kafka_sasl_password
        jaas = spark_kafka_security_options(settings)["kafka.sasl.jaas.config"]
        assert "ScramLoginModule required" in jaas and settings.kafka_sasl_password in jaas


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_specs_name_the_kafka_secret_for_driver_pods(render: Render, scenario: str) -> None:
    values = SCENARIOS[scenario]
    manifests = render(values)
    text = find(manifests, "ConfigMap", f"{PREFIX}-pipelines")["data"]["pipelines.yaml"]
    specs = parse_specs(yaml.safe_load(text), source=scenario)
    auth = values.get("kafka.auth.enabled", True)
    expected = None
    if auth:
        expected = (
            "streamops-user:password"
            if values.get("kafka.auth.existingSecret")
            else f"{PREFIX}-kafka:kafka-password"
        )
    for name, spec in specs.items():
        assert spec.kubernetes is not None, name
        assert spec.kubernetes.kafka_sasl_password_secret == expected, name
        refs = spec.kubernetes.secret_key_refs()
        assert refs.get("STREAMOPS_KAFKA_SASL_PASSWORD") == expected, name


@pytest.mark.parametrize("scenario", ["explicit-password", "defaults"])
def test_the_kafka_password_is_on_no_argv_and_in_no_config_map(
    render: Render, scenario: str
) -> None:
    manifests = render(SCENARIOS[scenario])
    password = _decoded(find(manifests, "Secret", f"{PREFIX}-kafka"))["kafka-password"]
    checked = 0
    every = [
        (where, container) for where, spec in pod_specs(manifests) for container in containers(spec)
    ]
    every += [
        (f"spark/{key}", c)
        for key, template in spark_pod_templates(manifests).items()
        for c in template["spec"]["containers"]
    ]
    for where, container in every:
        texts = [*container.get("command", []), *container.get("args", [])]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            texts += container.get(probe, {}).get("exec", {}).get("command", [])
        for text in texts:
            assert password not in str(text), f"{where}: the Kafka password is on an argv"
            assert "$(STREAMOPS_KAFKA_SASL_PASSWORD)" not in str(text), where
            checked += 1
    assert checked > 10
    for manifest in manifests:
        if manifest["kind"] != "Secret":
            assert password not in repr(manifest), f"{manifest['kind']}: the password leaks"


def test_an_external_cluster_gets_the_same_clients(render: Render) -> None:
    manifests = render(STRIMZI_USER)
    assert not [
        m for m in manifests if m["kind"] == "StatefulSet" and "kafka" in m["metadata"]["name"]
    ]
    config = find(manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    assert config["STREAMOPS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["STREAMOPS_KAFKA_SASL_USERNAME"] == "streamops-user"
    off = find(render(SCENARIOS["external-auth-off"]), "ConfigMap", f"{PREFIX}-env")["data"]
    assert off["STREAMOPS_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "STREAMOPS_KAFKA_SASL_USERNAME" not in off


# --- compose, parsed ------------------------------------------------------------------------------


def _compose_kafka(compose: dict[str, Any], secrets_file: Path) -> dict[str, str]:
    """The broker container's environment: its env_files (the settings, then the secrets), then
    `environment`."""
    service = compose["services"]["kafka"]
    assert service["env_file"] == ["deploy/compose.env", "deploy/compose.secrets.env"]
    files = {**parse_env_file(COMPOSE_ENV_FILE), **parse_env_file(secrets_file)}
    assert not [name for name in files if name.startswith("KAFKA_")], "a broker property"
    return {**files, **{k: str(v) for k, v in service["environment"].items()}}


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "compose.secrets.env"
    ensure_secrets_file(path, COMPOSE_ENV_FILE)
    return path


def test_compose_kafka_takes_only_scram_clients(
    compose: dict[str, Any],
    compose_env: dict[str, str],
    secrets_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = compose["services"]["kafka"]
    env = _compose_kafka(compose, secrets_file)
    protocols = _protocol_map(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    assert set(listeners) == set(protocols)
    for name, protocol in protocols.items():
        if name == "CONTROLLER":
            assert protocol == "PLAINTEXT" and listeners[name][0] == "localhost"
        else:
            assert protocol == "SASL_PLAINTEXT", name
    # Containers (kafka:9092) and the host (the published 9094) both log in.
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert advertised["SASL_PLAINTEXT"] == ("kafka", int(compose_env["STREAMOPS_KAFKA_PORT"]))
    assert advertised["HOST"] == ("127.0.0.1", 9094)
    assert service["ports"] == ["127.0.0.1:9094:9094"]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "SASL_PLAINTEXT"
    # The broker's SCRAM user is the clients'.
    for name in ("STREAMOPS_KAFKA_SASL_MECHANISM", "STREAMOPS_KAFKA_SASL_USERNAME"):
        assert env[name] == compose_env[name], name
    assert compose_env["STREAMOPS_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert "STREAMOPS_KAFKA_SASL_PASSWORD" not in parse_env_file(COMPOSE_ENV_FILE)
    # The chart's script, mounted read-only; its private files on a tmpfs.
    assert service["command"] == ["sh", "/opt/streamops/kafka/start.sh"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if ":" in v}
    assert (PROJECT_ROOT / mounted["/opt/streamops/kafka/start.sh"]).resolve() == START_SCRIPT
    assert env["PRIVATE_CONFIG_DIR"] in service["tmpfs"]
    health = " ".join(service["healthcheck"]["test"])
    assert f"--command-config {env['PRIVATE_CONFIG_DIR']}/client.properties" in health
    assert "$" not in health and "password" not in health.lower()
    # Every streamops container's settings make SCRAM clients.
    settings = settings_from(compose_env, monkeypatch, tmp_path)
    assert librdkafka_security(settings)["sasl.username"] == "streamops"
    assert "kafka.sasl.jaas.config" in spark_kafka_security_options(settings)


# --- the start script, run ------------------------------------------------------------------------

JAVA = shutil.which("java")
KAFKA_JARS = Settings().kafka_jars_dir
# What the image's bin/*.sh run (kafka-run-class.sh with the classes below and "$@").
STAND_INS = {
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-server-start.sh": "kafka.Kafka",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}

needs_kafka = pytest.mark.skipif(
    JAVA is None or not any(KAFKA_JARS.glob("kafka_2.13-*.jar")),
    reason="java and the local stack's Kafka jars are needed (`streamops install`)",
)


def _kafka_home(root: Path) -> Path:
    home = root / "opt-kafka"
    (home / "bin").mkdir(parents=True)
    for name, main_class in STAND_INS.items():
        heap = "${KAFKA_HEAP_OPTS:-}" if name == "kafka-server-start.sh" else ""
        script = home / "bin" / name
        script.write_text(f'#!/bin/sh\nexec java {heap} -cp "{KAFKA_JARS}/*" {main_class} "$@"\n')
        script.chmod(0o755)
    return home


def _on_this_machine(env: dict[str, str], root: Path, ports: dict[int, int]) -> dict[str, str]:
    """The broker's environment moved into ``root`` and onto loopback with ``ports``."""

    def move(value: str) -> str:
        items = []
        for item in value.split(","):
            name, _, address = item.partition("://")
            host, _, port = address.rpartition(":")
            host = "localhost" if host == "localhost" else "127.0.0.1"
            items.append(f"{name}://{host}:{ports[int(port)]}")
        return ",".join(items)

    moved = dict(env)
    moved["KAFKA_LISTENERS"] = move(env["KAFKA_LISTENERS"])
    moved["KAFKA_ADVERTISED_LISTENERS"] = move(env["KAFKA_ADVERTISED_LISTENERS"])
    voter, _, address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    host, _, port = address.rpartition(":")
    moved["KAFKA_CONTROLLER_QUORUM_VOTERS"] = f"{voter}@{host}:{ports[int(port)]}"
    moved["KAFKA_LOG_DIRS"] = str(root / "data")
    moved["PRIVATE_CONFIG_DIR"] = str(root / "config")
    moved["KAFKA_HEAP_OPTS"] = "-Xmx256m -Xms256m"
    moved["KAFKA_HOME"] = str(root / "opt-kafka")
    moved["PATH"] = os.environ["PATH"]
    return moved


@contextmanager
def _broker(env: dict[str, str], script: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            ["sh", str(script)], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _client(env: dict[str, str], port: int, root: Path, **update: Any) -> Settings:
    """The clients' settings (the rendered env's) for the broker on this machine."""
    fields: dict[str, Any] = {
        "state_dir": root / "client-state",
        "kafka_host": "127.0.0.1",
        "kafka_port": port,
        "kafka_security_protocol": env["STREAMOPS_KAFKA_SECURITY_PROTOCOL"],
        "kafka_sasl_mechanism": env["STREAMOPS_KAFKA_SASL_MECHANISM"],
        "kafka_sasl_username": env["STREAMOPS_KAFKA_SASL_USERNAME"],
        "kafka_sasl_password": env["STREAMOPS_KAFKA_SASL_PASSWORD"],
    }
    return Settings(**{**fields, **update})


def _wait_until_served(settings: Settings, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, f"the broker exited:\n{log.read_text()[-3000:]}"
        try:
            if kafka_admin(settings, {"socket.timeout.ms": 3000}).list_topics(timeout=3).brokers:
                return
        except KafkaException:
            pass
        assert time.monotonic() < deadline, f"no broker answered:\n{log.read_text()[-3000:]}"
        time.sleep(1)


def _refused(settings: Settings) -> bool:
    try:
        kafka_admin(settings, {"socket.timeout.ms": 3000}).list_topics(timeout=5)
    except KafkaException:
        return True
    return False


def _assert_private_and_off_every_argv(root: Path, password: str) -> None:
    for process in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(process.info["cmdline"] or [])
    config = root / "config"
    assert sorted(p.name for p in config.iterdir()) == ["client.properties", "server.properties"]
    for path in config.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


@needs_kafka
def test_the_charts_broker_starts_with_its_scram_user(render: Render, tmp_path: Path) -> None:
    manifests = render(SCENARIOS["explicit-password"])
    container = _kafka_container(manifests)
    env: dict[str, str] = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:  # the kubelet's part: the Secret's value
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = _decoded(find(manifests, "Secret", ref["name"]))[ref["key"]]
    assert env["STREAMOPS_KAFKA_SASL_PASSWORD"] == PASSWORD
    script = tmp_path / "start.sh"  # the ConfigMap's copy, as the pod mounts it
    script.write_text(find(manifests, "ConfigMap", f"{PREFIX}-kafka")["data"]["start.sh"])
    _kafka_home(tmp_path)
    port, controller = free_port(), free_port()
    local = _on_this_machine(env, tmp_path, {9092: port, 9093: controller})
    clients = find(manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    settings = _client({**clients, "STREAMOPS_KAFKA_SASL_PASSWORD": PASSWORD}, port, tmp_path)
    log = tmp_path / "broker.log"
    with _broker(local, script, log) as process:
        _wait_until_served(settings, process, log)
        assert _refused(settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}))
        assert _refused(settings.model_copy(update={"kafka_sasl_password": "wrong"}))
        _assert_private_and_off_every_argv(tmp_path, PASSWORD)
        # The format's output (the user's salt and keys) is not in the log.
        assert "UserScramCredentialRecord" not in log.read_text()
    assert process.returncode is not None
    assert (tmp_path / "data" / "streamops-scram-user").read_text().split() == [
        "SCRAM-SHA-512",
        "streamops",
    ]
    # Another user on the same storage (it was formatted once): a clear error, no start.
    other = {**local, "STREAMOPS_KAFKA_SASL_USERNAME": "someone-else"}
    result = subprocess.run(["sh", str(script)], env=other, capture_output=True, text=True)
    assert result.returncode == 1
    assert "formatted for the SCRAM user 'SCRAM-SHA-512 streamops'" in result.stderr
    # A restart with the same user keeps the storage and still serves it.
    with _broker(local, script, log) as process:
        _wait_until_served(settings, process, log)


def test_the_start_script_refuses_a_password_it_cannot_quote(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_HOME": str(tmp_path / "nowhere"),
        "PRIVATE_CONFIG_DIR": str(tmp_path / "config"),
        "CLUSTER_ID": "mn4KQzMrQiKpRi9g9uDHlQ",
        "KAFKA_LOG_DIRS": str(tmp_path / "data"),
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "STREAMOPS_KAFKA_SASL_USERNAME": "streamops",
    }
    for password in ('pa"ss', "pa,ss", "pa ss", "pa\\ss", ""):
        result = subprocess.run(
            ["sh", str(START_SCRIPT)],
            env={**env, "STREAMOPS_KAFKA_SASL_PASSWORD": password},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, password
        assert "STREAMOPS_KAFKA_SASL_PASSWORD is empty or not" in result.stderr
        assert not (tmp_path / "data" / "meta.properties").exists()


@needs_kafka
def test_the_compose_broker_serves_containers_and_the_host_and_its_healthcheck_logs_in(
    compose: dict[str, Any], compose_env: dict[str, str], secrets_file: Path, tmp_path: Path
) -> None:
    env = _compose_kafka(compose, secrets_file)
    password = env["STREAMOPS_KAFKA_SASL_PASSWORD"]
    home = _kafka_home(tmp_path)
    ports = {9092: free_port(), 9093: free_port(), 9094: free_port()}
    local = _on_this_machine(env, tmp_path, ports)
    log = tmp_path / "broker.log"
    clients = {**compose_env, "STREAMOPS_KAFKA_SASL_PASSWORD": password}
    with _broker(local, START_SCRIPT, log) as process:
        for port in (ports[9092], ports[9094]):  # the containers' listener and the host's
            settings = _client(clients, port, tmp_path)
            _wait_until_served(settings, process, log)
            assert _refused(settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}))
        _assert_private_and_off_every_argv(tmp_path, password)

        # The healthcheck's command, as compose runs it in the container.
        (test_kind, command) = compose["services"]["kafka"]["healthcheck"]["test"]
        assert test_kind == "CMD-SHELL"
        command = (
            command.replace("/opt/kafka", str(home))
            .replace("kafka:9092", f"127.0.0.1:{ports[9092]}")
            .replace(env["PRIVATE_CONFIG_DIR"], local["PRIVATE_CONFIG_DIR"])
        )

        def healthcheck(client_properties: Path | None = None) -> int:
            run = command
            if client_properties is not None:
                run = re.sub(r"--command-config \S+", f"--command-config {client_properties}", run)
            result = subprocess.run(
                ["sh", "-c", run], env={"PATH": os.environ["PATH"]}, timeout=60, check=False
            )
            return result.returncode

        assert healthcheck() == 0
        wrong = tmp_path / "wrong.properties"
        wrong.write_text(
            (tmp_path / "config" / "client.properties")
            .read_text()
            .replace(f'password="{password}"', 'password="wrong"')
        )
        assert healthcheck(wrong) != 0
