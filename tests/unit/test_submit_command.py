"""The spark-submit command line, built from a spec without running Spark."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamops.config import PROJECT_ROOT, Settings, load_settings
from streamops.supervision import kubernetes as k8s
from streamops.supervision.spec import PipelineSpec, parse_specs
from streamops.supervision.submit import (
    CHECKPOINT_ENV,
    MASTER_ENV,
    build_submit_command,
    build_submit_environment,
    job_file,
)

JARS = (
    Path("/cache/spark-kafka-4.2.0/spark-sql-kafka-0-10_2.13-4.2.0.jar"),
    Path("/cache/spark-kafka-4.2.0/kafka-clients-4.1.0.jar"),
)
K8S = {
    "api_server": "https://10.0.0.1:443",
    "namespace": "data",
    "image": "registry.local/streamops:1.2.3",
    "service_account": "spark-driver",
    "executor_instances": 3,
}


def _spec(**fields: Any) -> PipelineSpec:
    body = {
        "job_module": "spark_jobs.jobs.orders",
        "queries": ["orders_records"],
        "trigger_interval": "5 seconds",
        "job_args": ["--max-offsets-per-trigger", "1000"],
        "spark_conf": {"spark.sql.shuffle.partitions": "4"},
        **fields,
    }
    return parse_specs({"pipelines": {"orders": body}})["orders"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(venv_dir=tmp_path / "venv", state_dir=tmp_path / "state")


def _confs(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_local_command(settings: Settings, tmp_path: Path) -> None:
    command = build_submit_command(
        _spec(), settings, connector_jars=JARS, spark_home=tmp_path / "pyspark"
    )
    assert command[0] == str(tmp_path / "pyspark" / "bin" / "spark-submit")
    assert _option(command, "--master") == "local[*,4]"
    assert _option(command, "--deploy-mode") == "client"
    assert _option(command, "--name") == "streamops-orders"
    assert _option(command, "--jars") == ",".join(str(jar) for jar in JARS)
    confs = _confs(command)
    assert confs["spark.pyspark.python"] == str(settings.venv_dir / "bin" / "python")
    assert confs["spark.sql.shuffle.partitions"] == "4"
    assert confs["spark.sql.session.timeZone"] == "UTC"
    assert not any(key.startswith("spark.kubernetes.") for key in confs)
    application = str(PROJECT_ROOT / "spark_jobs" / "jobs" / "orders.py")
    # The job file comes after every option, its own arguments after it.
    assert command[command.index(application) :] == [
        application,
        "--max-offsets-per-trigger",
        "1000",
        "--trigger-interval",
        "5 seconds",
    ]


def test_local_master_of_the_spec_wins_over_the_settings(settings: Settings) -> None:
    command = build_submit_command(_spec(master="local[2]"), settings)
    assert _option(command, "--master") == "local[2]"
    assert command[0] == "spark-submit"
    assert "--jars" not in command


def test_kubernetes_cluster_mode_from_the_same_spec(settings: Settings) -> None:
    spec = _spec(kubernetes=K8S, checkpoint_root="s3a://lake/checkpoints")
    command = build_submit_command(spec, settings, connector_jars=JARS, spark_version="4.2.0")
    assert _option(command, "--master") == "k8s://https://10.0.0.1:443"
    assert _option(command, "--deploy-mode") == "cluster"
    confs = _confs(command)
    assert confs["spark.kubernetes.namespace"] == "data"
    assert confs["spark.kubernetes.container.image"] == "registry.local/streamops:1.2.3"
    assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark-driver"
    assert confs["spark.executor.instances"] == "3"
    assert confs["spark.kubernetes.driver.label.streamops/pipeline"] == "orders"
    # The driver pod gets the platform's settings, with the spec's master and checkpoint ...
    assert confs[f"spark.kubernetes.driverEnv.{MASTER_ENV}"] == "k8s://https://10.0.0.1:443"
    assert confs[f"spark.kubernetes.driverEnv.{CHECKPOINT_ENV}"] == "s3a://lake/checkpoints"
    assert confs["spark.kubernetes.driverEnv.STREAMOPS_KAFKA_PORT"] == str(settings.kafka_port)
    # ... but not this machine's folders.
    assert "spark.kubernetes.driverEnv.STREAMOPS_STATE_DIR" not in confs
    assert "spark.pyspark.python" not in confs
    # Jars and job are paths inside the image.
    assert _option(command, "--jars") == (
        "local:///opt/streamops/cache/spark-kafka-4.2.0/spark-sql-kafka-0-10_2.13-4.2.0.jar,"
        "local:///opt/streamops/cache/spark-kafka-4.2.0/kafka-clients-4.1.0.jar"
    )
    assert (
        "local:///opt/streamops/venv/lib/python3.11/site-packages/spark_jobs/jobs/orders.py"
        in command
    )
    assert command[-2:] == ["--trigger-interval", "5 seconds"]


def test_spec_conf_overrides_defaults_but_each_key_appears_once(settings: Settings) -> None:
    command = build_submit_command(
        _spec(spark_conf={"spark.sql.session.timeZone": "Europe/Paris"}), settings
    )
    conf_keys = [c.split("=")[0] for c in command if c.startswith("spark.")]
    assert len(conf_keys) == len(set(conf_keys))
    assert _confs(command)["spark.sql.session.timeZone"] == "Europe/Paris"


def test_a_local_driver_maps_the_class_archive_after_the_specs_java_options(
    settings: Settings,
) -> None:
    archive = settings.spark_class_archive("4.2.0")
    spec = _spec(spark_conf={"spark.driver.extraJavaOptions": "-XX:+UseSerialGC"})
    command = build_submit_command(spec, settings, class_archive=archive)
    assert _confs(command)["spark.driver.extraJavaOptions"] == (
        f"-XX:+UseSerialGC -XX:SharedArchiveFile={archive}"
    )
    # Inside the environment whose jars it names, never in the cache another checkout shares.
    assert archive.is_relative_to(settings.venv_dir)
    # A spec without JVM options gets the archive alone; without an archive nothing changes.
    bare = build_submit_command(_spec(), settings, class_archive=archive)
    assert _confs(bare)["spark.driver.extraJavaOptions"] == f"-XX:SharedArchiveFile={archive}"
    assert "spark.driver.extraJavaOptions" not in _confs(build_submit_command(_spec(), settings))


def test_a_cluster_driver_never_gets_this_machines_class_archive(settings: Settings) -> None:
    archive = settings.spark_class_archive("4.2.0")
    command = build_submit_command(_spec(kubernetes=K8S), settings, class_archive=archive)
    assert not any("SharedArchiveFile" in arg for arg in command)


def test_environment_carries_master_and_checkpoint(settings: Settings) -> None:
    env = build_submit_environment(_spec(master="local[2]", checkpoint_root="/ck"), settings)
    assert env[MASTER_ENV] == "local[2]"
    assert env[CHECKPOINT_ENV] == "/ck"
    assert env["STREAMOPS_REDIS_PORT"] == str(settings.redis_port)
    default = build_submit_environment(_spec(), settings)
    assert default[MASTER_ENV] == settings.spark_master
    assert CHECKPOINT_ENV not in default


def test_job_file_follows_the_module() -> None:
    assert job_file(_spec(), Path("/src")) == Path("/src/spark_jobs/jobs/orders.py")


def test_the_builder_does_no_io(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_submit_command touched the file system")

    monkeypatch.setattr(Path, "exists", forbidden)
    monkeypatch.setattr(Path, "glob", forbidden)
    monkeypatch.setattr(Path, "stat", forbidden)
    assert build_submit_command(_spec(kubernetes=K8S), settings, connector_jars=JARS)


# --- cluster mode: finding and stopping the driver pod ------------------------------------------


def _pod(name: str, phase: str, created: str, exit_code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [
            {"name": "sidecar", "state": {"terminated": {"exitCode": 9}}},
            {"name": "spark-kubernetes-driver", "state": {"terminated": {"exitCode": exit_code}}},
        ]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "creationTimestamp": created},
        "status": status,
    }


def test_driver_pods_are_found_by_the_labels_the_submit_command_sets(settings: Settings) -> None:
    spec = _spec(kubernetes=K8S)
    selector = k8s.driver_selector(spec)
    assert selector == "streamops/pipeline=orders,spark-role=driver"
    # The label the selector asks for is the one spark-submit puts on the driver pod.
    confs = _confs(build_submit_command(spec, settings, connector_jars=JARS))
    assert confs["spark.kubernetes.driver.label.streamops/pipeline"] == "orders"
    assert k8s.find_drivers_command(spec) == [
        "kubectl",
        "--server",
        "https://10.0.0.1:443",
        "--namespace",
        "data",
        "get",
        "pods",
        "--selector",
        selector,
        "--output",
        "json",
    ]
    assert k8s.get_driver_command(spec, "orders-driver", kubectl="/bin/kubectl")[:1] == [
        "/bin/kubectl"
    ]
    assert k8s.get_driver_command(spec, "orders-driver")[5:] == [
        "get",
        "pod",
        "orders-driver",
        "--output",
        "json",
    ]


def test_stopping_the_driver_deletes_its_pod_with_the_grace_period(settings: Settings) -> None:
    command = k8s.stop_driver_command(_spec(kubernetes=K8S), "orders-driver", 59.6)
    assert command[:5] == ["kubectl", "--server", "https://10.0.0.1:443", "--namespace", "data"]
    assert command[5:8] == ["delete", "pod", "orders-driver"]
    assert "--grace-period=60" in command
    assert "--wait=true" in command and "--timeout=90s" in command
    assert "--ignore-not-found=true" in command


def test_cluster_commands_refuse_a_local_spec() -> None:
    with pytest.raises(ValueError, match="runs locally"):
        k8s.find_drivers_command(_spec())


def test_driver_pods_parse_newest_first_with_the_driver_exit_code() -> None:
    listing = {
        "kind": "PodList",
        "items": [
            _pod("old", "Failed", "2026-11-25T10:00:00Z", exit_code=1),
            _pod("new", "Running", "2026-11-25T12:00:00Z"),
            _pod("done", "Succeeded", "2026-11-25T11:00:00Z", exit_code=0),
        ],
    }
    pods = k8s.parse_driver_pods(listing)
    assert [p.name for p in pods] == ["new", "done", "old"]
    assert pods[0].alive and pods[0].exit_code is None
    assert (pods[1].alive, pods[1].exit_code) == (False, 0)
    assert (pods[2].alive, pods[2].exit_code) == (False, 1)
    assert k8s.live_driver(pods) == pods[0]
    assert k8s.live_driver(pods[1:]) is None
    assert pods[0].created_epoch == datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()
    # `kubectl get pod NAME -o json` answers with the pod itself, not a list.
    (single,) = k8s.parse_driver_pods(_pod("one", "Pending", "2026-11-25T12:00:00Z"))
    assert single.alive and single.name == "one"
