"""A pipeline's spark-submit, built from its spec and its Connection's master without running
Spark (the command line itself is the Spark provider's: tests/unit/test_spark_provider.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamops.config import PROJECT_ROOT, Settings, load_settings
from streamops.supervision import kubernetes as k8s
from streamops.supervision.spec import PipelineSpec, PipelineSpecError, parse_specs
from streamops.supervision.submit import (
    CHECKPOINT_ENV,
    MASTER_ENV,
    SubmitRequest,
    build_submit_environment,
    build_submit_request,
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
    return load_settings(
        venv_dir=tmp_path / "venv",
        spark_venv_dir=tmp_path / "venv-spark",
        state_dir=tmp_path / "state",
    )


def _request(spec: PipelineSpec, settings: Settings, **options: Any) -> SubmitRequest:
    master = "k8s://https://10.0.0.1:443" if spec.kubernetes is not None else "local[*,4]"
    return build_submit_request(spec, settings, **{"master": master, **options})


def test_local_request(settings: Settings) -> None:
    request = _request(_spec(), settings, connector_jars=JARS)
    # The Connection's deploy mode (client when it says none) is left to it.
    assert request.deploy_mode is None
    assert request.name == "streamops-orders"
    assert request.jars == [str(jar) for jar in JARS]
    # Driver and workers run the Spark environment's Python, never the launcher's.
    assert request.conf["spark.pyspark.python"] == str(settings.spark_python)
    assert request.conf["spark.pyspark.driver.python"] == str(settings.spark_python)
    assert settings.spark_python.is_relative_to(settings.spark_venv_dir)
    assert request.conf["spark.sql.shuffle.partitions"] == "4"
    assert request.conf["spark.sql.session.timeZone"] == "UTC"
    assert not any(key.startswith("spark.kubernetes.") for key in request.conf)
    assert request.application == str(PROJECT_ROOT / "spark_jobs" / "jobs" / "orders.py")
    assert request.application_args == [
        "--max-offsets-per-trigger",
        "1000",
        "--trigger-interval",
        "5 seconds",
    ]


def test_a_spec_names_its_spark_connection(settings: Settings) -> None:
    assert _spec().spark_conn_id == "spark_default"
    assert _spec(spark_conn_id="spark_big").spark_conn_id == "spark_big"
    with pytest.raises(PipelineSpecError, match="spark_conn_id"):
        _spec(spark_conn_id="")


def test_kubernetes_cluster_mode_from_the_same_spec(settings: Settings) -> None:
    spec = _spec(kubernetes=K8S, checkpoint_root="s3a://lake/checkpoints")
    request = _request(spec, settings, connector_jars=JARS, spark_version="4.2.0")
    assert request.deploy_mode == "cluster"
    confs = request.conf
    assert confs["spark.kubernetes.namespace"] == "data"
    assert confs["spark.kubernetes.container.image"] == "registry.local/streamops:1.2.3"
    assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark-driver"
    assert confs["spark.executor.instances"] == "3"
    assert confs["spark.kubernetes.driver.label.streamops/pipeline"] == "orders"
    # The driver pod gets the platform's settings, with the Connection's master and the spec's
    # checkpoint ...
    assert confs[f"spark.kubernetes.driverEnv.{MASTER_ENV}"] == "k8s://https://10.0.0.1:443"
    assert confs[f"spark.kubernetes.driverEnv.{CHECKPOINT_ENV}"] == "s3a://lake/checkpoints"
    assert confs["spark.kubernetes.driverEnv.STREAMOPS_KAFKA_PORT"] == str(settings.kafka_port)
    # ... but not this machine's folders.
    assert "spark.kubernetes.driverEnv.STREAMOPS_STATE_DIR" not in confs
    assert "spark.kubernetes.driverEnv.STREAMOPS_SPARK_VENV_DIR" not in confs
    assert "spark.pyspark.python" not in confs
    # Jars and job are paths inside the image.
    assert request.jars == [
        "local:///opt/streamops/cache/spark-kafka-4.2.0/spark-sql-kafka-0-10_2.13-4.2.0.jar",
        "local:///opt/streamops/cache/spark-kafka-4.2.0/kafka-clients-4.1.0.jar",
    ]
    assert request.application == (
        "local:///opt/streamops/spark-venv/lib/python3.11/site-packages/spark_jobs/jobs/orders.py"
    )
    assert request.application_args[-2:] == ["--trigger-interval", "5 seconds"]


@pytest.mark.parametrize(
    ("kubernetes", "master", "deploy_mode", "message"),
    [
        (K8S, "local[*]", None, "has a 'kubernetes' section, but the master"),
        (None, "local[*]", "cluster", "asks for cluster mode, but orders has no 'kubernetes'"),
        (None, "k8s://https://10.0.0.1:443", "cluster", "asks for cluster mode"),
    ],
)
def test_a_spec_and_a_connection_that_disagree_are_refused(
    settings: Settings,
    kubernetes: dict[str, Any] | None,
    master: str,
    deploy_mode: str | None,
    message: str,
) -> None:
    spec = _spec(kubernetes=kubernetes) if kubernetes else _spec()
    with pytest.raises(ValueError, match=message):
        build_submit_request(spec, settings, master=master, deploy_mode=deploy_mode)


def test_a_k8s_master_in_client_mode_runs_the_driver_here(settings: Settings) -> None:
    request = build_submit_request(_spec(), settings, master="k8s://https://10.0.0.1:443")
    assert request.deploy_mode is None
    assert request.application == str(job_file(_spec()))


def test_spec_conf_overrides_defaults(settings: Settings) -> None:
    request = _request(_spec(spark_conf={"spark.sql.session.timeZone": "Europe/Paris"}), settings)
    assert request.conf["spark.sql.session.timeZone"] == "Europe/Paris"


def test_a_local_driver_maps_the_class_archive_after_the_specs_java_options(
    settings: Settings,
) -> None:
    archive = settings.spark_class_archive("4.2.0")
    spec = _spec(spark_conf={"spark.driver.extraJavaOptions": "-XX:+UseSerialGC"})
    request = _request(spec, settings, class_archive=archive)
    assert request.conf["spark.driver.extraJavaOptions"] == (
        f"-XX:+UseSerialGC -XX:SharedArchiveFile={archive}"
    )
    # Inside the Spark environment whose jars it names, never in the cache checkouts share.
    assert archive.is_relative_to(settings.spark_venv_dir)
    # A spec without JVM options gets the archive alone; without an archive nothing changes.
    bare = _request(_spec(), settings, class_archive=archive)
    assert bare.conf["spark.driver.extraJavaOptions"] == f"-XX:SharedArchiveFile={archive}"
    assert "spark.driver.extraJavaOptions" not in _request(_spec(), settings).conf


def test_a_cluster_driver_never_gets_this_machines_class_archive(settings: Settings) -> None:
    archive = settings.spark_class_archive("4.2.0")
    request = _request(_spec(kubernetes=K8S), settings, class_archive=archive)
    assert not any("SharedArchiveFile" in value for value in request.conf.values())


def test_environment_carries_master_and_checkpoint(settings: Settings) -> None:
    env = build_submit_environment(_spec(checkpoint_root="/ck"), settings, "local[2]")
    assert env[MASTER_ENV] == "local[2]"
    assert env[CHECKPOINT_ENV] == "/ck"
    assert env["STREAMOPS_REDIS_PORT"] == str(settings.redis_port)
    default = build_submit_environment(_spec(), settings, settings.spark_master)
    assert default[MASTER_ENV] == settings.spark_master
    assert CHECKPOINT_ENV not in default


def test_job_file_follows_the_module() -> None:
    assert job_file(_spec(), Path("/src")) == Path("/src/spark_jobs/jobs/orders.py")


def test_the_builder_does_no_io(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_submit_request touched the file system")

    monkeypatch.setattr(Path, "exists", forbidden)
    monkeypatch.setattr(Path, "glob", forbidden)
    monkeypatch.setattr(Path, "stat", forbidden)
    assert _request(_spec(kubernetes=K8S), settings, connector_jars=JARS)


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
    request = _request(spec, settings, connector_jars=JARS)
    assert request.conf["spark.kubernetes.driver.label.streamops/pipeline"] == "orders"
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
