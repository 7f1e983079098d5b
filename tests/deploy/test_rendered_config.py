"""Every configuration the chart and compose produce, fed to the code that reads it in a pod.

The chart is rendered under each option set that changes what its pods read; compose is read
with its env files. From what comes out, each Airflow container's environment is put together as
Kubernetes (or Compose) would: the image's ENV, then envFrom (env_file), then env (environment),
with every Secret's value replaced by a dummy whose Secret name and key are checked. Then the real
code reads it, as it would in the container:

- the specs file STREAMOPS_PIPELINES_FILE names, found through the container's mounts:
  ``load_specs`` (``parse_specs``);
- ``Settings``, from that environment (pydantic-settings reads the variables);
- the Spark Connections the migrate Job's (compose: airflow-init's) script creates;
- every pipeline's spark-submit command line, built by the supervision hook
  (``SparkJobHook.submit_command``, which calls ``build_submit_request``) from the three, as the
  scheduler builds it before a launch.

Asserted: the chart runs every driver in cluster mode unless told otherwise, in the release's
namespace, image and driver ServiceAccount; client mode and per-pipeline overrides do what they
say; and no secret value is on any spark-submit argv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from streamops_airflow.hooks import SparkJobHook

from streamops import compose_secrets
from streamops.config import ENV_PREFIX, Settings
from streamops.supervision.spec import (
    PIPELINES_FILE_ENV,
    PipelineSpec,
    PipelineSpecError,
    load_specs,
    parse_specs,
)
from tests.deploy import spec_schema
from tests.deploy.conftest import (
    CHART_DIR,
    COMPOSE_ENV_FILE,
    DOCKERFILE,
    NAMESPACE,
    PROJECT_ROOT,
    RELEASE,
    HelmError,
    Manifest,
    find,
    parse_env_file,
)
from tests.deploy.test_dockerfile import _env as dockerfile_stage_env
from tests.deploy.test_dockerfile import parse_dockerfile
from tests.deploy.test_helm_chart import EXISTING_SECRETS

Render = Callable[..., list[Manifest]]

PREFIX = f"{RELEASE}-streamops"
# Every Airflow component reads the specs: the dag-processor builds the DAGs from them, the
# scheduler launches, the triggerer watches, the api-server's plugin shows them.
AIRFLOW_COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
COMPOSE_AIRFLOW_SERVICES = tuple(f"airflow-{component}" for component in AIRFLOW_COMPONENTS)
REPO_SPECS = yaml.safe_load((PROJECT_ROOT / "pipelines.yaml").read_text())
# The image's Spark environment (/opt/streamops/spark-venv) as this machine has it: only
# spark-submit's path and PySpark's version are read from it.
LOCAL_SPARK_VENV = PROJECT_ROOT / ".venv-spark"
# Where the image keeps the job modules (the Spark environment's site-packages).
IMAGE_SITE_PACKAGES = "local:///opt/streamops/spark-venv/lib/python3.11/site-packages"
CONNECTOR_JAR = Path("/opt/streamops/cache/spark-kafka-4.2.0/spark-sql-kafka-0-10_2.13-4.2.0.jar")
# Names of variables whose value is a credential.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|SQL_ALCHEMY_CONN|_KEY$")

OVERRIDDEN = {
    "pipelines.defaults": {"health": {"poll_interval_seconds": 10}},
    "pipelines.overrides": {
        "orders": {"enabled": False, "job_args": ["--max-offsets-per-trigger", "5000"]},
        # One pipeline kept in the scheduler pod while the others run as pods.
        "alerts": {"kubernetes": None, "spark_conn_id": "spark_default"},
        # A pipeline the repository's file does not have.
        "orders_eu": {
            "job_module": "spark_jobs.jobs.orders",
            "queries": ["orders_eu_records", "orders_eu_revenue"],
            "spark_conf": {"spark.sql.shuffle.partitions": "4"},
        },
    },
}
OWN_IMAGE_AND_CLUSTER = {
    "image.repository": "registry.example.com/streamops",
    "image.tag": "1.2.3",
    "spark.serviceAccountName": "spark-driver",
    "spark.kubernetesApiServer": "https://10.0.0.1:6443",
    "spark.executor.instances": 3,
    "spark.driver.memory": "2g",
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "client-mode": {"spark.deployMode": "client"},
    "client-mode-overridden": {"spark.deployMode": "client", **OVERRIDDEN},
    "pipelines-overridden": OVERRIDDEN,
    "existing-secrets": EXISTING_SECRETS,
    "own-image-and-cluster": OWN_IMAGE_AND_CLUSTER,
}


# --- the environment a container gets ------------------------------------------------------------
@dataclass
class ContainerEnv:
    """A container's variables as its process sees them, and where its secrets come from."""

    env: dict[str, str]
    # Variable → (Secret, key) of every value that comes from a Secret (a dummy in ``env``).
    secret_refs: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Values that are credentials: none of them may reach an argv.
    secret_values: set[str] = field(default_factory=set)


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage: what every streamops container starts with."""
    return dockerfile_stage_env(parse_dockerfile(DOCKERFILE.read_text()).final)


def _dummy(name: str) -> str:
    return f"dummy-{name.lower().replace('_', '-')}-{uuid.uuid4().hex[:10]}"


def pod_container_env(manifests: list[Manifest], container: Manifest) -> ContainerEnv:
    """Kubernetes' order: the image's ENV, then envFrom, then env (later wins)."""
    result = ContainerEnv(image_env())
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            result.env |= find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
            continue
        secret_name = source["secretRef"]["name"]
        secret = find(manifests, "Secret", secret_name)
        for key in {**secret.get("data", {}), **secret.get("stringData", {})}:
            _set_secret(result, key, secret_name, key)
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            result.env[name] = str(variable["value"])
            continue
        reference = variable["valueFrom"].get("secretKeyRef")
        assert reference is not None, f"{container['name']}: {name} from {variable['valueFrom']}"
        _set_secret(result, name, reference["name"], reference["key"])
    return result


def _set_secret(result: ContainerEnv, name: str, secret: str, key: str) -> None:
    value = _dummy(name)
    result.env[name] = value
    result.secret_refs[name] = (secret, key)
    result.secret_values.add(value)


def pod_mounted_file(
    manifests: list[Manifest], pod: Manifest, container: Manifest, path: str
) -> str:
    """The content a container sees at ``path``: a key of the ConfigMap mounted over it."""
    target = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        if "subPath" in mount:
            if target != mount_path:
                continue
            key = mount["subPath"]
        elif target.is_relative_to(mount_path) and target != mount_path:
            key = str(target.relative_to(mount_path))
        else:
            continue
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert "configMap" in volume, f"{path} is on volume {volume}, not a ConfigMap"
        items = {item["path"]: item["key"] for item in volume["configMap"].get("items", [])}
        data = find(manifests, "ConfigMap", volume["configMap"]["name"])["data"]
        assert items.get(key, key) in data, f"{path}: no key {key} in {volume}"
        assert mount.get("readOnly") is True, f"{container['name']} mounts {path} writable"
        return str(data[items.get(key, key)])
    raise AssertionError(f"{container['name']}: nothing is mounted at {path}")


@dataclass
class AirflowPod:
    component: str
    pod: Manifest
    container: Manifest
    env: ContainerEnv


def airflow_pods(manifests: list[Manifest]) -> dict[str, AirflowPod]:
    pods = {}
    for component in AIRFLOW_COMPONENTS:
        deployment = find(manifests, "Deployment", f"{PREFIX}-{component}")
        pod = deployment["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == component]
        pods[component] = AirflowPod(
            component, pod, container, pod_container_env(manifests, container)
        )
    return pods


# --- what the code reads from it --------------------------------------------------------------
def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> Settings:
    """``Settings()`` in a process whose environment is ``env`` (pydantic-settings reads it)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)  # no streamops.toml of the checkout
    return Settings()


def specs_through(env: dict[str, str], read: Callable[[str], str], tmp: Path) -> dict[str, Any]:
    """The specs a process with ``env`` loads: the file STREAMOPS_PIPELINES_FILE names, whose
    content ``read`` gives (the container's mount), through ``load_specs``."""
    path = env.get(PIPELINES_FILE_ENV)
    assert path, f"{PIPELINES_FILE_ENV} is not set: the process would read the image's own copy"
    local = tmp / "specs" / PurePosixPath(path).relative_to("/")
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(read(path))
    return load_specs(local)


def created_connections(script: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The Connections a shell script creates with `airflow connections add`, as Airflow stores
    them (the host's $VARIABLES expanded from ``env``, as the shell does)."""
    tokens = list(shlex.shlex(script, posix=True, punctuation_chars=True))
    ends = {";", "||", "&&", "|", "&", "}"}
    connections: dict[str, dict[str, Any]] = {}
    for index in range(len(tokens) - 3):
        if tokens[index : index + 3] != ["airflow", "connections", "add"]:
            continue
        options: dict[str, str] = {}
        position = index + 4
        while position < len(tokens) - 1 and tokens[position] not in ends:
            options[tokens[position]] = tokens[position + 1]
            position += 2
        host = re.sub(r"\$\{?(\w+)\}?", lambda match: env[match[1]], options.get("--conn-host", ""))
        connections[tokens[index + 3]] = {
            "conn_type": options["--conn-type"],
            "host": host,
            "extra": json.loads(options.get("--conn-extra", "{}")),
        }
    return connections


def submit_commands(
    specs: dict[str, PipelineSpec],
    settings: Settings,
    connections: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Every pipeline's spark-submit argv and added environment, from the supervision hook."""
    for conn_id, fields in connections.items():
        # The row the script creates, where Airflow looks first (a database row locally).
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    launcher = settings.model_copy(update={"spark_venv_dir": LOCAL_SPARK_VENV})
    return {
        name: SparkJobHook(spec, launcher).submit_command([CONNECTOR_JAR])
        for name, spec in specs.items()
    }


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def confs(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def assert_no_secret_on(argv: list[str], env: ContainerEnv, where: str) -> None:
    assert env.secret_values, f"{where}: no secret to look for"
    for value in env.secret_values:
        leaked = [arg for arg in argv if value in arg]
        assert not leaked, f"{where}: a secret value is on the argv: {leaked}"
    named = [
        key
        for key in confs(argv)
        if ("Env." in key or "executorEnv." in key) and SECRET_NAME.search(key.rsplit(".", 1)[1])
    ]
    assert not named, f"{where}: credentials passed as values on the argv: {named}"


# --- the chart --------------------------------------------------------------------------------
def _value(values: dict[str, Any], key: str, default: Any) -> Any:
    return values.get(key, default)


def expected_specs(values: dict[str, Any]) -> set[str]:
    return set(REPO_SPECS["pipelines"]) | set(values.get("pipelines.overrides", {}))


def expected_cluster_mode(values: dict[str, Any], name: str) -> bool:
    if _value(values, "spark.deployMode", "cluster") != "cluster":
        return False
    override = values.get("pipelines.overrides", {}).get(name, {})
    return not ("kubernetes" in override and override["kubernetes"] is None)


def expected_mariadb_secret(values: dict[str, Any]) -> tuple[str, str]:
    if values.get("mariadb.existingSecret"):
        return values["mariadb.existingSecret"], values["mariadb.existingSecretPasswordKey"]
    return f"{PREFIX}-mariadb", "mariadb-password"


def rendered_specs_text(manifests: list[Manifest]) -> str:
    return str(find(manifests, "ConfigMap", f"{PREFIX}-pipelines")["data"]["pipelines.yaml"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_specs_are_what_parse_specs_accepts(render: Render, scenario: str) -> None:
    values = SCENARIOS[scenario]
    specs = parse_specs(yaml.safe_load(rendered_specs_text(render(values))), source=scenario)
    assert set(specs) == expected_specs(values)
    for name, spec in specs.items():
        assert (spec.kubernetes is not None) == expected_cluster_mode(values, name), name
        module = PROJECT_ROOT.joinpath(*spec.job_module.split(".")).with_suffix(".py")
        assert module.is_file(), f"{name}: {spec.job_module} does not exist"
    # The repository's own fields come through unchanged where nothing overrides them.
    repo = parse_specs(REPO_SPECS)
    assert specs["vitals"].queries == repo["vitals"].queries
    assert specs["vitals"].job_args == repo["vitals"].job_args
    assert specs["vitals"].spark_conf.items() >= repo["vitals"].spark_conf.items() - {
        ("spark.driver.memory", repo["vitals"].spark_conf["spark.driver.memory"])
    }


def test_overrides_merge_like_the_specs_defaults(render: Render) -> None:
    specs = parse_specs(yaml.safe_load(rendered_specs_text(render(OVERRIDDEN))))
    repo = parse_specs(REPO_SPECS)
    orders = specs["orders"]
    assert orders.enabled is False  # its DAG stays paused
    assert orders.job_args == ("--max-offsets-per-trigger", "5000")
    assert orders.queries == repo["orders"].queries
    # A mapping merges key by key: the defaults' other health fields are kept.
    assert all(spec.health.poll_interval_seconds == 10 for spec in specs.values())
    assert orders.health.startup_grace_seconds == repo["orders"].health.startup_grace_seconds
    added = specs["orders_eu"]
    assert added.spark_conf["spark.sql.shuffle.partitions"] == "4"
    assert added.spark_conf["spark.ui.enabled"] == "false"  # from the file's defaults
    assert added.kubernetes is not None and added.spark_conn_id == "spark_kubernetes"
    assert specs["alerts"].kubernetes is None and specs["alerts"].spark_conn_id == "spark_default"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_airflow_pod_reads_the_rendered_specs(
    render: Render, scenario: str, tmp_path: Path
) -> None:
    manifests = render(SCENARIOS[scenario])
    rendered = rendered_specs_text(manifests)
    for component, pod in airflow_pods(manifests).items():
        path = pod.env.env.get(PIPELINES_FILE_ENV, "")
        assert path != image_env()[PIPELINES_FILE_ENV], f"{component} reads the image's copy"
        content = pod_mounted_file(manifests, pod.pod, pod.container, path)
        assert content == rendered, f"{component}: {path} is not the -pipelines ConfigMap"
        specs = specs_through(
            pod.env.env,
            lambda p, pod=pod: pod_mounted_file(manifests, pod.pod, pod.container, p),
            tmp_path / component,
        )
        assert set(specs) == expected_specs(SCENARIOS[scenario]), component


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_settings_come_from_each_airflow_pods_environment(
    render: Render, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = SCENARIOS[scenario]
    manifests = render(values)
    config = find(manifests, "ConfigMap", f"{PREFIX}-env")["data"]
    for component, pod in airflow_pods(manifests).items():
        settings = settings_from(pod.env.env, monkeypatch, tmp_path)
        assert settings.kafka_host == config["STREAMOPS_KAFKA_HOST"], component
        assert settings.mariadb_host == config["STREAMOPS_MARIADB_HOST"], component
        assert settings.spark_master == config["STREAMOPS_SPARK_MASTER"], component
        assert str(settings.state_dir) == "/opt/streamops/state"
        # The password is the Secret's, under the name the values give.
        assert pod.env.secret_refs["STREAMOPS_MARIADB_PASSWORD"] == expected_mariadb_secret(
            values
        ), component
        assert settings.mariadb_password == pod.env.env["STREAMOPS_MARIADB_PASSWORD"]
        for name, (secret, _) in pod.env.secret_refs.items():
            assert SECRET_NAME.search(name), f"{component}: {name} from Secret {secret}?"
    if not values.get("mariadb.existingSecret"):
        secret = find(manifests, "Secret", f"{PREFIX}-mariadb")
        assert "mariadb-password" in {**secret.get("data", {}), **secret.get("stringData", {})}


def chart_launch(
    manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[AirflowPod, dict[str, PipelineSpec], dict[str, tuple[list[str], dict[str, str]]]]:
    """What the scheduler pod launches with: its specs, its settings, the migrate Job's
    Connections (expanded with the Job's environment), and the commands built from them."""
    scheduler = airflow_pods(manifests)["scheduler"]
    specs = specs_through(
        scheduler.env.env,
        lambda path: pod_mounted_file(manifests, scheduler.pod, scheduler.container, path),
        tmp_path,
    )
    settings = settings_from(scheduler.env.env, monkeypatch, tmp_path)
    job = find(manifests, "Job", f"{PREFIX}-airflow-db-migrate")["spec"]["template"]["spec"]
    (migrate,) = job["containers"]
    shell, flag, script = migrate["args"]
    assert (shell, flag) == ("bash", "-c")
    connections = created_connections(script, pod_container_env(manifests, migrate).env)
    commands = submit_commands(specs, settings, connections, monkeypatch)
    return scheduler, specs, commands


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_scheduler_submits_every_pipeline_where_the_chart_says(
    render: Render, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = SCENARIOS[scenario]
    manifests = render(values)
    scheduler, specs, commands = chart_launch(manifests, monkeypatch, tmp_path)
    image = scheduler.container["image"]
    # The spec's default application root is the image's Spark environment.
    assert image_env()["SPARK_HOME"] == f"{IMAGE_SITE_PACKAGES.removeprefix('local://')}/pyspark"
    api_server = _value(values, "spark.kubernetesApiServer", "https://kubernetes.default.svc")
    service_accounts = {m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount"}
    for name, (argv, env) in commands.items():
        conf = confs(argv)
        if expected_cluster_mode(values, name):
            assert option(argv, "--master") == f"k8s://{api_server}", name
            assert option(argv, "--deploy-mode") == "cluster", name
            assert conf["spark.kubernetes.namespace"] == NAMESPACE
            assert conf["spark.kubernetes.container.image"] == image
            account = conf["spark.kubernetes.authenticate.driver.serviceAccountName"]
            assert account == _value(values, "spark.serviceAccountName", f"{PREFIX}-spark")
            assert account in service_accounts, f"{account} is not created by the chart"
            assert conf["spark.executor.instances"] == str(
                _value(values, "spark.executor.instances", 2)
            )
            assert conf["spark.driver.memory"] == _value(values, "spark.driver.memory", "1g")
            module = PurePosixPath(*specs[name].job_module.split(".")).with_suffix(".py")
            assert f"{IMAGE_SITE_PACKAGES}/{module}" in argv, name
            # The driver pod reads the job's passwords from the Secrets the Airflow pods read
            # them from: the MariaDB password always, Redis' when the settings have one.
            kubernetes = specs[name].kubernetes
            assert kubernetes is not None
            references = kubernetes.secret_key_refs()
            assert "STREAMOPS_MARIADB_PASSWORD" in references, name
            for variable, reference in references.items():
                secret, key = scheduler.env.secret_refs[variable]
                assert reference == f"{secret}:{key}", (name, variable)
                assert conf[f"spark.kubernetes.driver.secretKeyRef.{variable}"] == reference
        else:
            assert option(argv, "--master") == scheduler.env.env["STREAMOPS_SPARK_MASTER"]
            assert option(argv, "--deploy-mode") == "client", name
            assert not [key for key in conf if key.startswith("spark.kubernetes.")], name
            # Client mode: the driver is spark-submit's child and inherits the password.
            assert (
                env["STREAMOPS_MARIADB_PASSWORD"] == scheduler.env.env["STREAMOPS_MARIADB_PASSWORD"]
            )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_is_on_a_spark_submit_argv(
    render: Render, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler, _, commands = chart_launch(render(SCENARIOS[scenario]), monkeypatch, tmp_path)
    assert commands
    for name, (argv, _) in commands.items():
        assert_no_secret_on(argv, scheduler.env, f"{scenario}/{name}")


def test_the_default_install_runs_every_driver_as_a_pod(render: Render) -> None:
    specs = parse_specs(yaml.safe_load(rendered_specs_text(render())))
    assert specs and all(spec.kubernetes is not None for spec in specs.values())
    for spec in specs.values():
        assert spec.kubernetes is not None
        assert spec.kubernetes.namespace == NAMESPACE
        assert spec.kubernetes.api_server == "https://kubernetes.default.svc"
        assert spec.kubernetes.service_account == f"{PREFIX}-spark"
        assert spec.spark_conn_id == "spark_kubernetes"
    job = find(render(), "Job", f"{PREFIX}-airflow-db-migrate")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][2]
    connections = created_connections(script, {"STREAMOPS_SPARK_MASTER": "local[*,4]"})
    assert connections["spark_kubernetes"]["extra"]["deploy-mode"] == "cluster"
    assert connections["spark_kubernetes"]["host"] == "k8s://https://kubernetes.default.svc"
    # Batch jobs (the model training) cannot run in cluster mode: spark_default stays client.
    assert connections["spark_default"]["extra"]["deploy-mode"] == "client"
    client = find(render({"spark.deployMode": "client"}), "Job", f"{PREFIX}-airflow-db-migrate")
    script = client["spec"]["template"]["spec"]["containers"][0]["args"][2]
    assert set(created_connections(script, {"STREAMOPS_SPARK_MASTER": "local[*,4]"})) == {
        "spark_default"
    }


def test_the_charts_specs_are_the_repositorys_file() -> None:
    copy = CHART_DIR / "files" / "pipelines.yaml"
    assert copy.read_bytes() == (PROJECT_ROOT / "pipelines.yaml").read_bytes(), (
        "helm/streamops/files/pipelines.yaml differs from pipelines.yaml: copy it again"
    )


def test_the_schema_knows_the_spec_fields() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert spec_schema.updated_schema(schema) == schema, (
        "values.schema.json's pipeline spec fields are stale: run "
        "`python -m tests.deploy.spec_schema`"
    )
    # And they are every field the spec has (the generator is not wrong by omission).
    override = schema["definitions"]["pipelineOverride"]["properties"]
    assert set(override) == set(PipelineSpec.model_fields) - {"name"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"pipelines.overrides": {"orders": {"args": []}}}, "args"),
        ({"pipelines.overrides": {"orders": {"restart": {"max_restarts": 3}}}}, "max_restarts"),
        ({"pipelines.overrides": {"orders": {"enabled": "no"}}}, "enabled"),
        ({"pipelines.overrides": {"Orders": {"enabled": False}}}, "Orders"),
        ({"pipelines.defaults": {"job_module": "spark_jobs.jobs.orders"}}, "job_module"),
        ({"spark.deployMode": "yarn"}, "deployMode"),
    ],
    ids=[
        "unknown-field",
        "unknown-nested",
        "wrong-type",
        "bad-name",
        "per-pipeline-default",
        "mode",
    ],
)
def test_the_schema_rejects_what_parse_specs_would(
    render: Render, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(HelmError) as error:
        render(values)
    assert "values don't meet the specifications of the schema" in error.value.output
    assert expected in error.value.output


def test_an_added_pipeline_needs_its_module_and_queries(render: Render) -> None:
    with pytest.raises(HelmError, match=r"pipelines\.overrides\.orders_eu: .*job_module"):
        render({"pipelines.overrides": {"orders_eu": {"enabled": False}}})
    # A value the schema admits but the spec refuses (a bound between two fields) is named by
    # parse_specs, as the dag-processor would report it.
    text = rendered_specs_text(
        render({"pipelines.overrides": {"orders": {"outage_ride_out_seconds": 900}}})
    )
    with pytest.raises(PipelineSpecError, match=r"pipeline 'orders'.*outage_ride_out_seconds"):
        parse_specs(yaml.safe_load(text))


# --- compose ----------------------------------------------------------------------------------
def compose_env_files(service: Manifest) -> Iterator[tuple[Path, bool]]:
    entries = service.get("env_file", [])
    for entry in [entries] if isinstance(entries, str) else entries:
        if isinstance(entry, str):
            yield PROJECT_ROOT / entry, True
        else:
            yield PROJECT_ROOT / entry["path"], entry.get("required", True)


@pytest.fixture(scope="module")
def compose_secrets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/compose.secrets.env as `make compose-up` generates it (the real one stays unread)."""
    path = tmp_path_factory.mktemp("compose") / "compose.secrets.env"
    written, missing = compose_secrets.ensure_secrets_file(path, COMPOSE_ENV_FILE)
    assert written and not missing
    return path


def compose_service_env(compose: dict[str, Any], name: str, secrets_file: Path) -> ContainerEnv:
    """Compose's order: the image's ENV, then env_file entries in order, then environment."""
    service = compose["services"][name]
    assert str(service["image"]).startswith("streamops:"), name
    result = ContainerEnv(image_env())
    for path, required in compose_env_files(service):
        if path == compose_secrets.SECRETS_FILE:
            secrets = parse_env_file(secrets_file)
            result.env |= secrets
            result.secret_values |= set(secrets.values())
        elif path.is_file():
            result.env |= parse_env_file(path)
        else:
            assert not required, f"{name}: {path} is required and missing"
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    result.env |= {key: str(value) for key, value in environment.items()}
    # Whatever the file, a credential's value must stay off an argv.
    result.secret_values |= {v for k, v in result.env.items() if SECRET_NAME.search(k) and v}
    return result


def compose_mounted_file(service: Manifest, path: str) -> str:
    """The content a compose service sees at ``path``: a read-only bind mount of a repo file."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target, _, mode = rest.partition(":")
        if target == path and source.startswith("./"):
            assert mode == "ro", f"{volume}: mount the specs read-only"
            return (PROJECT_ROOT / source).read_text()
    raise AssertionError(f"nothing is mounted at {path}: {service.get('volumes')}")


@pytest.mark.parametrize("name", COMPOSE_AIRFLOW_SERVICES)
def test_compose_services_read_the_repositorys_specs(
    compose: dict[str, Any], compose_secrets_file: Path, name: str, tmp_path: Path
) -> None:
    service = compose["services"][name]
    env = compose_service_env(compose, name, compose_secrets_file)
    path = env.env[PIPELINES_FILE_ENV]
    assert compose_mounted_file(service, path) == (PROJECT_ROOT / "pipelines.yaml").read_text()
    specs = specs_through(env.env, lambda p: compose_mounted_file(service, p), tmp_path)
    assert set(specs) == set(REPO_SPECS["pipelines"])


@pytest.mark.parametrize("name", COMPOSE_AIRFLOW_SERVICES)
def test_compose_settings_come_from_each_services_environment(
    compose: dict[str, Any],
    compose_secrets_file: Path,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = compose_service_env(compose, name, compose_secrets_file)
    settings = settings_from(env.env, monkeypatch, tmp_path)
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.mariadb_host == "mariadb"
    assert settings.mariadb_password == parse_env_file(compose_secrets_file).get(
        "STREAMOPS_MARIADB_PASSWORD", settings.mariadb_password
    )
    assert str(settings.state_dir) == "/opt/streamops/state"


def test_compose_scheduler_submits_in_client_mode_without_secrets_on_the_argv(
    compose: dict[str, Any],
    compose_secrets_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler = compose["services"]["airflow-scheduler"]
    env = compose_service_env(compose, "airflow-scheduler", compose_secrets_file)
    specs = specs_through(env.env, lambda p: compose_mounted_file(scheduler, p), tmp_path)
    settings = settings_from(env.env, monkeypatch, tmp_path)
    init = compose["services"]["airflow-init"]
    shell, flag, script = init["command"]
    assert (shell, flag) == ("bash", "-c")
    init_env = compose_service_env(compose, "airflow-init", compose_secrets_file).env
    # Compose turns $$ into $ before the shell sees the script.
    connections = created_connections(script.replace("$$", "$"), init_env)
    assert connections["spark_default"]["host"] == env.env["STREAMOPS_SPARK_MASTER"]
    commands = submit_commands(specs, settings, connections, monkeypatch)
    assert set(commands) == set(REPO_SPECS["pipelines"])
    for pipeline, (argv, child_env) in commands.items():
        assert option(argv, "--master") == env.env["STREAMOPS_SPARK_MASTER"], pipeline
        assert option(argv, "--deploy-mode") == "client", pipeline
        assert_no_secret_on(argv, env, f"compose/{pipeline}")
        # The driver, spark-submit's child, gets the password through its environment.
        assert child_env["STREAMOPS_MARIADB_PASSWORD"] == settings.mariadb_password
