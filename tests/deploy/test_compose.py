"""docker-compose.yaml and deploy/compose.env: valid Compose, healthy start order, and the same
settings, ports and service configuration as the local stack."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from streamops.config import Settings
from streamops.stack.airflow import AIRFLOW_COMPONENTS
from streamops.stack.kafka import Kafka
from streamops.stack.mariadb import MariaDB
from streamops.stack.redis import Redis
from tests.deploy.conftest import COMPOSE_ENV_FILE, PROJECT_ROOT, parse_env_file

SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"
STREAMOPS_IMAGE = "streamops:0.1.0"
COMMITTED_ENV = "deploy/compose.env"
SECRETS_ENV = "deploy/compose.secrets.env"
REDIS_AUTH_CONF = "/run/redis/auth.conf"
# What deploy/compose.env held before the secrets file: public keys that must never come back.
FORMERLY_COMMITTED_SECRETS = (
    "StwQyzRUQmZ1jYIXxVJ5AEs38sBpZzWNtPXwi1jg-6U=",
    "compose-only-api-secret-key-change-me",
    "compose-only-jwt-secret-change-me-to-48-random-bytes",
)
INIT_SERVICES = {"streamops-init", "airflow-init"}
AIRFLOW_SERVICES = {
    "airflow-api-server": "airflow-api-server",
    "airflow-scheduler": "airflow-scheduler",
    "airflow-dag-processor": "airflow-dag-processor",
    "airflow-triggerer": "airflow-triggerer",
}
# Go durations, as Compose reads healthcheck intervals and grace periods ("1m30s", "500ms").
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def default(field: str) -> Any:
    return Settings.model_fields[field].default


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("duration")(
        lambda value: not isinstance(value, str) or bool(GO_DURATION.match(value))
    )
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema, format_checker=checker)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{error.json_path}: {error.message}" for error in compose_validator().iter_errors(document)
    ]


def duration_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(number) * units[unit] for number, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", value)
    )


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda c: c["services"]["kafka"].update(helthcheck={}), "helthcheck"),
        (lambda c: c["services"]["redis"]["healthcheck"].update(interval="10 seconds"), "duration"),
        (
            lambda c: c["services"]["airflow-triggerer"]["depends_on"]["postgres"].update(
                condition="service_ready"
            ),
            # depends_on is a oneOf (list or map): the error names the whole block.
            "depends_on",
        ),
    ],
    ids=["unknown-key", "bad-duration", "bad-condition"],
)
def test_schema_check_rejects_broken_files(
    compose: dict[str, Any], mutation: Any, expected: str
) -> None:
    broken = copy.deepcopy(compose)
    mutation(broken)
    errors = schema_errors(broken)
    assert errors, "the schema check must reject this"
    assert any(expected in error for error in errors), errors


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "mariadb",
        "redis",
        "postgres",
        *INIT_SERVICES,
        *AIRFLOW_SERVICES,
    }


def test_images_are_pinned_and_match_the_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    assert services["kafka"]["image"] == f"apache/kafka:{default('kafka_version')}"
    assert services["mariadb"]["image"] == "mariadb:10.11"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:")
    version = re.search(
        r'^version = "([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M
    )
    assert version and f"streamops:{version[1]}" == STREAMOPS_IMAGE
    for name in (*INIT_SERVICES, *AIRFLOW_SERVICES):
        assert services[name]["image"] == STREAMOPS_IMAGE
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        assert services[name]["env_file"] == [COMMITTED_ENV, SECRETS_ENV]


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in INIT_SERVICES:
            assert service["restart"] == "no", f"{name} runs once"
            continue
        check = service.get("healthcheck")
        assert check and check["test"], f"{name} has no healthcheck"
        assert service["restart"] == "unless-stopped", name


def test_start_order_waits_for_health_and_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully"
                if dependency in INIT_SERVICES
                else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    for name in AIRFLOW_SERVICES:
        assert "airflow-init" in services[name]["depends_on"], name
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert {"streamops-init", "redis"} <= set(services[name]["depends_on"]), name
    assert set(services["streamops-init"]["depends_on"]) == {"kafka", "mariadb"}
    assert set(services["airflow-init"]["depends_on"]) == {"postgres"}


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    used: set[str] = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./") and mount.endswith(":ro"):
                # A file of the repository, read-only: the pipeline specs.
                assert (PROJECT_ROOT / source).is_file(), f"{name}: {mount}"
                continue
            assert not source.startswith(("/", ".")), f"{name}: bind mount {mount}; use a volume"
            used.add(source)
    assert used == set(compose["volumes"])


def test_ports_are_loopback_only_and_match_the_settings(compose: dict[str, Any]) -> None:
    published: dict[str, list[tuple[str, int, int]]] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name}: {port} is reachable from other machines"
            published.setdefault(name, []).append((host, int(host_port), int(container_port)))
    assert published["mariadb"] == [("127.0.0.1", default("mariadb_port"), 3306)]
    assert published["redis"] == [("127.0.0.1", default("redis_port"), 6379)]
    assert published["airflow-api-server"] == [("127.0.0.1", default("airflow_port"), 8080)]
    # The dashboard is the api-server's (/streamops-dashboard/, behind its login).
    assert set(published) == {"kafka", "mariadb", "redis", "airflow-api-server"}


def test_kafka_listens_on_the_settings_ports(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    listeners = dict(
        (item.split("://")[0], int(item.rsplit(":", 1)[1]))
        for item in env["KAFKA_LISTENERS"].split(",")
    )
    # SASL/SCRAM for clients (tests/deploy/test_kafka_auth.py runs it).
    assert listeners["SASL_PLAINTEXT"] == default("kafka_port")
    assert listeners["CONTROLLER"] == default("kafka_controller_port")
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"SASL_PLAINTEXT://kafka:{default('kafka_port')}" in advertised
    # The host listener is the one published, and advertised as the published address.
    host_port = listeners["HOST"]
    assert f"HOST://127.0.0.1:{host_port}" in advertised
    assert compose["services"]["kafka"]["ports"] == [f"127.0.0.1:{host_port}:{host_port}"]
    # The controller listens on the container's loopback only.
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"1@localhost:{default('kafka_controller_port')}"
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def kafka_env_as_properties(env: dict[str, str]) -> dict[str, str]:
    """The apache/kafka image's rule: KAFKA_FOO_BAR=x becomes foo.bar=x."""
    return {
        name[len("KAFKA_") :].lower().replace("_", "."): str(value)
        for name, value in env.items()
        if name.startswith("KAFKA_") and name != "KAFKA_HEAP_OPTS"
    }


# The broker settings that must behave the same in every deployment (listeners and paths differ).
SHARED_KAFKA_PROPERTIES = (
    "process.roles",
    "controller.listener.names",
    "inter.broker.listener.name",
    "num.partitions",
    "default.replication.factor",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "auto.create.topics.enable",
    "group.initial.rebalance.delay.ms",
    "log.retention.hours",
)


def local_kafka_properties(tmp_path: Path) -> dict[str, str]:
    # The local broker with SASL/SCRAM, as compose runs its own.
    settings = Settings(
        state_dir=tmp_path,
        kafka_port=9092,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="streamops",
        kafka_sasl_password="local",
    )
    text = Kafka(settings).server_properties()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def test_kafka_is_configured_like_the_local_broker(compose: dict[str, Any], tmp_path: Path) -> None:
    local = local_kafka_properties(tmp_path)
    env = compose["services"]["kafka"]["environment"]
    ours = kafka_env_as_properties(env)
    for key in SHARED_KAFKA_PROPERTIES:
        assert ours.get(key) == local[key], f"{key}: compose {ours.get(key)} != local {local[key]}"
    heap = default("kafka_heap")
    assert env["KAFKA_HEAP_OPTS"] == f"-Xmx{heap} -Xms{heap}"


def test_mariadb_runs_with_the_local_server_options(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path)
    server = MariaDB(settings)
    # A data folder that looks initialised, so prepare() only writes my.cnf.
    (server.datadir / "mysql").mkdir(parents=True)
    server.prepare()
    local: dict[str, str] = {}
    for line in server.config_path.read_text().splitlines():
        if line.startswith(("#", "[")) or not line.strip():
            continue
        key, _, value = line.partition("=")
        local[key.strip().replace("_", "-")] = value.strip()
    flags = {}
    for flag in compose["services"]["mariadb"]["command"]:
        key, _, value = flag.removeprefix("--").partition("=")
        flags[key.replace("_", "-")] = value
    for key in (
        "character-set-server",
        "collation-server",
        "default-time-zone",
        "skip-name-resolve",
        "innodb-buffer-pool-size",
        "innodb-flush-log-at-trx-commit",
        "max-connections",
    ):
        assert key in flags, f"compose's mariadb lacks --{key}"
        assert flags[key] == local[key], f"--{key}: compose {flags[key]} != local {local[key]}"


def test_redis_persists_like_the_local_server(compose: dict[str, Any], tmp_path: Path) -> None:
    server = Redis(Settings(state_dir=tmp_path))
    server.data_dir.mkdir(parents=True)
    server.prepare()
    local = dict(
        line.split(" ", 1)
        for line in server.config_path.read_text().splitlines()
        if line and not line.startswith("#")
    )
    command = compose["services"]["redis"]["command"]
    # The first argument is the config file the entrypoint writes with the password.
    assert command[:2] == ["redis-server", REDIS_AUTH_CONF]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    for key in ("appendonly", "appendfsync", "save", "maxmemory", "maxmemory-policy"):
        assert options[f"--{key}"] == local[key], key


def test_redis_memory_limit_leaves_room_for_an_aof_rewrite(compose: dict[str, Any]) -> None:
    service = compose["services"]["redis"]
    command = service["command"]
    maxmemory_mb = int(command[command.index("--maxmemory") + 1].removesuffix("mb"))
    assert maxmemory_mb == default("redis_maxmemory_mb")
    limit = service["mem_limit"]
    limit_mb = int(limit[:-1]) * {"m": 1, "g": 1024}[limit[-1]]
    assert limit_mb >= 2 * maxmemory_mb


def test_stop_grace_periods_match_the_local_stop_timeouts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    components = (
        ("kafka", Kafka),
        ("mariadb", MariaDB),
        ("redis", Redis),
    )
    for name, component in components:
        grace = duration_seconds(services[name]["stop_grace_period"])
        assert grace == component.stop_timeout_seconds, name
    for component in AIRFLOW_COMPONENTS:
        grace = duration_seconds(services[component.name]["stop_grace_period"])
        assert grace == component.stop_timeout_seconds, component.name


def test_airflow_services_run_the_local_commands(compose: dict[str, Any]) -> None:
    for component in AIRFLOW_COMPONENTS:
        command = compose["services"][component.name]["command"]
        assert command == ["airflow", *component.subcommand], component.name


def test_airflow_health_checks_ask_for_their_own_job(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "airflow-scheduler": "SchedulerJob",
        "airflow-dag-processor": "DagProcessorJob",
        "airflow-triggerer": "TriggererJob",
    }
    for name, job_type in expected.items():
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "airflow", "jobs", "check"], name
        assert test[test.index("--job-type") + 1] == job_type
        assert "--local" in test
    api_check = " ".join(services["airflow-api-server"]["healthcheck"]["test"])
    assert f"127.0.0.1:{default('airflow_port')}/api/v2/monitor/health" in api_check


def test_init_services_do_what_up_does(compose: dict[str, Any]) -> None:
    services = compose["services"]
    streamops_init = " ".join(services["streamops-init"]["command"])
    assert "streamops db migrate" in streamops_init
    assert "ensure_topics(load_settings())" in streamops_init
    airflow_init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in airflow_init
    # The Spark Connection of every pipeline, created when missing, on the settings' master
    # ($$ is compose's escape: the container's shell expands the variable).
    assert "airflow connections get spark_default >/dev/null 2>&1 ||" in airflow_init
    assert '--conn-type spark --conn-host "$$STREAMOPS_SPARK_MASTER"' in airflow_init
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in airflow_init
    for script in (streamops_init, airflow_init):
        assert "set -euo pipefail" in script, "a failed step must fail the init service"
        assert "$" not in script.replace("$$", ""), "compose would interpolate a bare $"


def test_env_file_images_agree_with_the_settings(compose_env: dict[str, str]) -> None:
    assert compose_env["MARIADB_DATABASE"] == compose_env["STREAMOPS_MARIADB_DATABASE"]
    assert compose_env["MARIADB_USER"] == compose_env["STREAMOPS_MARIADB_USER"]
    assert compose_env["MARIADB_PASSWORD"] == compose_env["STREAMOPS_MARIADB_PASSWORD"]
    url = urlsplit(compose_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert url.scheme == "postgresql+psycopg2"
    assert url.username == compose_env["POSTGRES_USER"]
    assert url.password == compose_env["POSTGRES_PASSWORD"]
    assert url.hostname == "postgres" and url.port == 5432
    assert url.path == "/" + compose_env["POSTGRES_DB"]
    assert compose_env["STREAMOPS_KAFKA_HOST"] == "kafka"
    assert compose_env["STREAMOPS_MARIADB_HOST"] == "mariadb"
    assert compose_env["STREAMOPS_REDIS_HOST"] == "redis"
    assert compose_env["STREAMOPS_AIRFLOW_HOST"] == "airflow-api-server"
    assert compose_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == (
        f"{compose_env['STREAMOPS_AIRFLOW_ADMIN_USER']}:admin"
    )


def test_env_file_ports_are_the_settings_defaults(compose_env: dict[str, str]) -> None:
    for field in ("kafka_port", "mariadb_port", "redis_port", "airflow_port"):
        assert int(compose_env[f"STREAMOPS_{field.upper()}"]) == default(field), field
    assert int(compose_env["AIRFLOW__API__PORT"]) == default("airflow_port")
    execution = urlsplit(compose_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution.hostname, execution.port) == ("airflow-api-server", default("airflow_port"))


def test_services_read_the_generated_secrets_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        env_files = service.get("env_file", [])
        if name == "redis":
            # Its password only; none of the streamops settings.
            assert env_files == [SECRETS_ENV]
        else:
            # Short syntax: an entry is required (the Compose Specification's default), so a
            # missing file stops compose instead of starting services without passwords.
            assert env_files == [COMMITTED_ENV, SECRETS_ENV], name


def test_committed_env_file_holds_no_secret() -> None:
    from streamops.compose_secrets import SECRET_VARIABLES

    committed = parse_env_file(COMPOSE_ENV_FILE)
    assert not set(SECRET_VARIABLES) & set(committed)
    credential = re.compile(r"(PASSWORD|SECRET|_KEY)$")
    assert [name for name in committed if credential.search(name)] == []
    assert "MARIADB_RANDOM_ROOT_PASSWORD" not in committed, "the image would log the root password"


def test_no_tracked_file_holds_a_formerly_committed_key() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    tracked = [PROJECT_ROOT / name for name in listed.stdout.decode().split("\0") if name]
    assert PROJECT_ROOT / COMMITTED_ENV in tracked
    assert PROJECT_ROOT / SECRETS_ENV not in tracked
    this_file = Path(__file__).resolve()
    holding: list[str] = []
    for path in tracked:
        if path.resolve() == this_file or not path.is_file():
            continue
        text = path.read_bytes()
        holding += [
            f"{path.relative_to(PROJECT_ROOT)}: {value[:12]}…"
            for value in FORMERLY_COMMITTED_SECRETS
            if value.encode() in text
        ]
    assert holding == []
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", SECRETS_ENV], cwd=PROJECT_ROOT, check=False
    )
    assert ignored.returncode == 0, f"{SECRETS_ENV} must be git-ignored"


def test_redis_password_is_on_no_argv(compose: dict[str, Any]) -> None:
    service = compose["services"]["redis"]
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    script = entrypoint[2]
    # The password reaches the file through printf, a shell builtin (no process, no argv), and
    # redis-server gets the file's path; its other options carry no secret.
    assert (
        f'printf \'requirepass "%s"\\n\' "$$STREAMOPS_REDIS_PASSWORD" > {REDIS_AUTH_CONF}' in script
    )
    assert 'exec docker-entrypoint.sh "$$@"' in script
    assert script.count("STREAMOPS_REDIS_PASSWORD") == 3  # the check, its message, printf
    command = service["command"]
    assert not [part for part in command if "requirepass" in part or "PASSWORD" in part]
    assert command[command.index("--protected-mode") + 1] == "yes"
    assert service["tmpfs"] == [REDIS_AUTH_CONF.rsplit("/", 1)[0]]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    assert check[1].startswith('REDISCLI_AUTH="$$STREAMOPS_REDIS_PASSWORD" redis-cli ')
    assert " -a " not in check[1] and "--pass" not in check[1]
    for text in (script, check[1]):
        assert "$" not in text.replace("$$", ""), "compose would interpolate a bare $"


def test_compose_settings_carry_the_generated_passwords(compose_env: dict[str, str]) -> None:
    from cryptography.fernet import Fernet

    values = {
        name[len("STREAMOPS_") :].lower(): value
        for name, value in compose_env.items()
        if name.startswith("STREAMOPS_")
    }
    settings = Settings.model_validate(values)
    password = compose_env["STREAMOPS_REDIS_PASSWORD"]
    assert len(password) >= 24 and settings.redis_password == password
    assert settings.redis_url == f"redis://:{password}@redis:6379/0"
    assert settings.mariadb_password == compose_env["MARIADB_PASSWORD"] != "streamops"
    assert settings.airflow_admin_password not in ("", "admin")
    Fernet(compose_env["AIRFLOW__CORE__FERNET_KEY"].encode())
