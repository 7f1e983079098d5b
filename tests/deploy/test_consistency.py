"""One name means one thing everywhere: every STREAMOPS_* variable of compose and the chart is a
streamops setting with a valid value, and the containers get the Airflow configuration of the
local stack (streamops/stack/airflow.py), adapted only where containers must differ."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from streamops.config import ENV_PREFIX, Settings
from streamops.stack.airflow import airflow_environment
from streamops.supervision.spec import PIPELINES_FILE_ENV, parse_specs
from tests.deploy.conftest import (
    RELEASE,
    Manifest,
    containers,
    find,
    pod_specs,
    spark_pod_templates,
)

# Keys whose container value differs from the local one on purpose, and why.
ADAPTED_IN_CONTAINERS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "the PostgreSQL service instead of 127.0.0.1",
    "AIRFLOW__CORE__DAGS_FOLDER": "the image's copy of dags/",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "the image's copy of plugins/",
    "AIRFLOW__CORE__FERNET_KEY": "a secret of the deployment",
    "AIRFLOW__API__SECRET_KEY": "a secret of the deployment",
    "AIRFLOW__API_AUTH__JWT_SECRET": "a secret of the deployment",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "a path inside the container",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "a path inside the container",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "the api-server's service name",
    "AIRFLOW__API__HOST": "listen on the pod network, not loopback",
    "AIRFLOW__API__BASE_URL": "the address users open",
    "AIRFLOW__CORE__PARALLELISM": "a chart value (default equal)",
    "AIRFLOW__API__WORKERS": "a chart value (default equal)",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "a chart value (default equal)",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "a chart value (default equal)",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "a chart value (default equal)",
}
# The simple auth manager's settings (local stack, compose); the chart runs FabAuthManager, with
# users and roles in the metadata database.
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SIMPLE_AUTH_MANAGER_ONLY = {
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
}
SECRET_KEYS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
}


@pytest.fixture(scope="module")
def local_airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The AIRFLOW__* variables `streamops up` gives Airflow, on defaults, without our env."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("AIRFLOW__", ENV_PREFIX)):
                patch.delenv(name)
        settings = Settings(state_dir=tmp_path_factory.mktemp("local-stack"))
        env = airflow_environment(settings)
    return {k: v for k, v in env.items() if k.startswith("AIRFLOW__")}


def helm_env(manifests: list[Manifest]) -> Iterator[tuple[str, str, Any]]:
    """(where, name, value or valueFrom) of every variable the chart gives streamops pods."""
    config_map = find(manifests, "ConfigMap", f"{RELEASE}-streamops-env")
    for name, value in config_map["data"].items():
        yield "ConfigMap/env", name, value
    specs = list(pod_specs(manifests)) + [
        (f"spark/{key}", template["spec"])
        for key, template in spark_pod_templates(manifests).items()
    ]
    for where, spec in specs:
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                yield (
                    f"{where}/{container['name']}",
                    variable["name"],
                    variable.get("value", variable.get("valueFrom")),
                )


SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-everything": {
        "kafka.enabled": False,
        "kafka.external.host": "kafka.example.internal",
        "mariadb.enabled": False,
        "mariadb.external.host": "mariadb.example.internal",
        "redis.enabled": False,
        "redis.external.host": "redis.example.internal",
        "postgresql.enabled": False,
        "airflow.metadataConnection.existingSecret": "airflow-metadata",
        "storage.checkpointUri": "s3a://streamops/checkpoints",
        "storage.archiveUri": "s3a://streamops/archive",
    },
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_streamops_variables_are_settings(
    render: Callable[..., list[Manifest]], scenario: str
) -> None:
    fields = set(Settings.model_fields)
    seen: dict[str, str] = {}
    for where, name, value in helm_env(render(SCENARIOS[scenario])):
        # The specs file is no setting: streamops.supervision.spec reads it.
        if not name.startswith(ENV_PREFIX) or name == PIPELINES_FILE_ENV:
            continue
        field = name[len(ENV_PREFIX) :].lower()
        assert field in fields, f"{where}: {name} is not a streamops setting"
        # A password from a Secret (valueFrom) stands in as a dummy: SASL needs one to validate.
        seen[field] = value if isinstance(value, str) else f"from-secret-{field}"
    assert seen, "the chart sets no STREAMOPS_* variable"
    # The values are valid settings (types, ranges, distinct ports).
    try:
        Settings(**seen)
    except ValidationError as error:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"the chart's settings do not validate: {error}")


def test_chart_settings_follow_the_values(render: Callable[..., list[Manifest]]) -> None:
    data = find(render(SCENARIOS["external-everything"]), "ConfigMap", f"{RELEASE}-streamops-env")
    assert data["data"]["STREAMOPS_KAFKA_HOST"] == "kafka.example.internal"
    assert data["data"]["STREAMOPS_MARIADB_HOST"] == "mariadb.example.internal"
    assert data["data"]["STREAMOPS_REDIS_HOST"] == "redis.example.internal"
    assert data["data"]["STREAMOPS_CHECKPOINT_URI"] == "s3a://streamops/checkpoints"
    assert data["data"]["STREAMOPS_ARCHIVE_URI"] == "s3a://streamops/archive"
    defaults = find(render(), "ConfigMap", f"{RELEASE}-streamops-env")["data"]
    for field in ("kafka_port", "mariadb_port", "redis_port", "airflow_port"):
        assert int(defaults[f"STREAMOPS_{field.upper()}"]) == Settings.model_fields[field].default
    assert "STREAMOPS_CHECKPOINT_URI" not in defaults, "empty URIs must leave the default"


def test_compose_streamops_variables_are_settings(compose_env: dict[str, str]) -> None:
    fields = set(Settings.model_fields)
    values = {}
    for name, value in compose_env.items():
        if name.startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX) :].lower()
            assert field in fields, f"deploy/compose.env: {name} is not a streamops setting"
            values[field] = value
    assert len(values) >= 15
    settings = Settings(**values)
    assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_compose_file_sets_streamops_variables_only_through_the_env_file(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        # Beside the mount it names, the specs file (no setting: spec.py reads it).
        settings = [k for k in environment if k.startswith(ENV_PREFIX) and k != PIPELINES_FILE_ENV]
        assert not settings, f"{name}: put STREAMOPS_* settings in deploy/compose.env"


def test_compose_sets_every_local_airflow_variable(
    compose_env: dict[str, str], local_airflow_env: dict[str, str]
) -> None:
    missing = sorted(set(local_airflow_env) - set(compose_env))
    assert not missing, f"deploy/compose.env lacks {missing}"
    for key, local_value in local_airflow_env.items():
        if key not in ADAPTED_IN_CONTAINERS:
            assert compose_env[key] == local_value, f"{key}: {compose_env[key]} != {local_value}"
    assert compose_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert compose_env["AIRFLOW__API__HOST"] == "0.0.0.0"


def test_chart_sets_every_local_airflow_variable(
    default_manifests: list[Manifest], local_airflow_env: dict[str, str]
) -> None:
    chart: dict[str, Any] = {}
    for _, name, value in helm_env(default_manifests):
        if name.startswith("AIRFLOW__"):
            chart.setdefault(name, value)
    missing = sorted(set(local_airflow_env) - set(chart) - SIMPLE_AUTH_MANAGER_ONLY)
    assert not missing, f"the chart lacks {missing}"
    for key, local_value in local_airflow_env.items():
        if key in SIMPLE_AUTH_MANAGER_ONLY:
            assert key not in chart, f"{key}: the chart's auth manager is FAB"
        elif key == "AIRFLOW__CORE__AUTH_MANAGER":
            assert chart[key] == FAB_AUTH_MANAGER
        elif key in SECRET_KEYS:
            assert isinstance(chart[key], dict) and "secretKeyRef" in chart[key], (
                f"{key} must come from a Secret"
            )
        elif key not in ADAPTED_IN_CONTAINERS:
            assert chart[key] == local_value, f"{key}: {chart[key]} != {local_value}"
        elif "default equal" in ADAPTED_IN_CONTAINERS[key]:
            assert chart[key] == local_value, f"{key}: the chart's default drifted"
    execution = urlsplit(chart["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution.hostname == f"{RELEASE}-streamops-api-server.streamops.svc"
    assert execution.port == Settings.model_fields["airflow_port"].default


def test_every_streamops_container_gets_the_settings(default_manifests: list[Manifest]) -> None:
    for where, spec in pod_specs(default_manifests):
        for container in containers(spec):
            if not str(container["image"]).startswith("streamops:"):
                continue
            sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
            assert f"{RELEASE}-streamops-env" in sources, f"{where}/{container['name']}"
            names = {variable["name"] for variable in container.get("env", [])}
            if container["name"] == "dashboard":
                # It reads Redis only: least privilege, no database or Airflow secret.
                assert names == set(), f"{where}/dashboard gets {names}"
                continue
            assert {"STREAMOPS_MARIADB_PASSWORD", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"} <= names


def test_pipeline_specs_name_real_job_modules(default_manifests: list[Manifest]) -> None:
    import yaml

    config_map = find(default_manifests, "ConfigMap", f"{RELEASE}-streamops-pipelines")
    # The rendered file is what parse_specs accepts (tests/deploy/test_rendered_config.py feeds
    # every option set to it); here: each spec's job is a module of the project.
    specs = parse_specs(yaml.safe_load(config_map["data"]["pipelines.yaml"]))
    assert specs, "the chart ships the repository's pipelines"
    root = Path(__file__).resolve().parents[2]
    for name, spec in specs.items():
        module_file = root / (spec.job_module.replace(".", "/") + ".py")
        assert module_file.is_file(), f"{name}: {spec.job_module} does not exist"


def inline_programs(argv: list[str]) -> Iterator[tuple[str, str]]:
    """("bash" | "python", source) of the scripts an argv runs inline (bash -c, python -c)."""
    if len(argv) >= 3 and argv[0] == "bash" and argv[1] == "-c":
        yield "bash", argv[2]
        tokens = shlex.split(argv[2])
        for index, token in enumerate(tokens[:-2]):
            if token == "python" and tokens[index + 1] == "-c":
                yield "python", tokens[index + 2]
    elif len(argv) >= 3 and argv[0] == "python" and argv[1] == "-c":
        yield "python", argv[2]


def test_inline_scripts_are_valid(
    compose: dict[str, Any], default_manifests: list[Manifest]
) -> None:
    argvs = [s["command"] for s in compose["services"].values() if "command" in s]
    for _, spec in pod_specs(default_manifests):
        argvs += [c["args"] for c in containers(spec) if "args" in c]
    programs = [program for argv in argvs for program in inline_programs(argv)]
    assert {language for language, _ in programs} == {"bash", "python"}
    assert len(programs) >= 7
    for language, source in programs:
        if language == "python":
            compile(source, "<inline>", "exec")
        else:
            check = subprocess.run(["bash", "-n"], input=source, text=True, capture_output=True)
            assert check.returncode == 0, f"{source}\n{check.stderr}"
