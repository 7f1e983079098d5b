"""A pipeline's spark-submit, built from its spec and its Connection's master without running
Spark (the command line itself is the Spark provider's: tests/unit/test_spark_provider.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamops.config import PROJECT_ROOT, Settings, load_settings
from streamops.supervision.spec import PipelineSpec, PipelineSpecError, parse_specs
from streamops.supervision.submit import (
    CHECKPOINT_ENV,
    MASTER_ENV,
    SubmitRequest,
    build_submit_environment,
    build_submit_request,
    is_secret_variable,
    job_file,
    secret_key_ref_conf,
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
    "mariadb_password_secret": "rel-streamops-mariadb:mariadb-password",
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
        # Whatever the environment says: these tests name the Secret of MariaDB's password only.
        redis_password="",
        kafka_sasl_password="",
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


# --- cluster mode: no password on the argv ------------------------------------------------------
PASSWORDS = {
    "redis_password": "",
    "kafka_sasl_password": "",
    "mariadb_password": "maria-pw-1f0c",
    "postgres_password": "pg-pw-77aa",
    "airflow_admin_password": "admin-pw-93be",
}


def test_cluster_mode_passes_passwords_as_secret_references_only(tmp_path: Path) -> None:
    settings = load_settings(
        venv_dir=tmp_path / "venv", spark_venv_dir=tmp_path / "venv-spark", **PASSWORDS
    )
    fence = {"STREAMOPS_JOB_TOKEN": "42", "STREAMOPS_JOB_LEASE": "a" * 64}
    request = _request(_spec(kubernetes=K8S), settings, connector_jars=JARS, job_env=fence)
    confs = request.conf
    everything = " ".join([*confs, *confs.values(), *request.application_args])
    for password in filter(None, PASSWORDS.values()):
        assert password not in everything
    # No credential's variable at all, not even those the job never reads.
    assert not [key for key in confs if "PASSWORD" in key and "secretKeyRef" not in key]
    # The MariaDB password reaches driver and executors from the Secret (valueFrom).
    ref = "rel-streamops-mariadb:mariadb-password"
    assert confs["spark.kubernetes.driver.secretKeyRef.STREAMOPS_MARIADB_PASSWORD"] == ref
    assert confs["spark.kubernetes.executor.secretKeyRef.STREAMOPS_MARIADB_PASSWORD"] == ref
    # The fence goes to both, so the executors' writes are fenced too; it is no credential.
    assert confs["spark.kubernetes.driverEnv.STREAMOPS_JOB_TOKEN"] == "42"
    assert confs["spark.executorEnv.STREAMOPS_JOB_TOKEN"] == "42"
    assert confs["spark.executorEnv.STREAMOPS_JOB_LEASE"] == "a" * 64
    # Settings that are no credential stay.
    assert confs["spark.kubernetes.driverEnv.STREAMOPS_MARIADB_USER"] == settings.mariadb_user


def test_cluster_mode_without_the_secret_of_a_password_is_refused(settings: Settings) -> None:
    without = {key: value for key, value in K8S.items() if key != "mariadb_password_secret"}
    with pytest.raises(
        ValueError, match=r"STREAMOPS_MARIADB_PASSWORD.*kubernetes\.mariadb_password_secret"
    ):
        _request(_spec(kubernetes=without), settings)


def test_the_redis_password_needs_its_secret_once_the_settings_have_one(settings: Settings) -> None:
    spec = _spec(kubernetes=K8S)
    assert spec.kubernetes is not None
    env = {"STREAMOPS_MARIADB_PASSWORD": "m", "STREAMOPS_REDIS_PASSWORD": ""}
    # No Redis password: no reference needed.
    assert set(secret_key_ref_conf(spec, spec.kubernetes, env)) == {
        "spark.kubernetes.driver.secretKeyRef.STREAMOPS_MARIADB_PASSWORD",
        "spark.kubernetes.executor.secretKeyRef.STREAMOPS_MARIADB_PASSWORD",
    }
    env["STREAMOPS_REDIS_PASSWORD"] = "r3dis"
    with pytest.raises(ValueError, match=r"kubernetes\.redis_password_secret"):
        secret_key_ref_conf(spec, spec.kubernetes, env)
    named = _spec(kubernetes={**K8S, "redis_password_secret": "rel-streamops-redis:redis-password"})
    assert named.kubernetes is not None
    conf = secret_key_ref_conf(named, named.kubernetes, env)
    assert conf["spark.kubernetes.driver.secretKeyRef.STREAMOPS_REDIS_PASSWORD"] == (
        "rel-streamops-redis:redis-password"
    )
    assert "r3dis" not in " ".join(conf.values())


def test_a_kafka_sasl_password_goes_the_same_way(settings: Settings) -> None:
    spec = _spec(kubernetes={**K8S, "kafka_sasl_password_secret": "kafka-user:password"})
    assert spec.kubernetes is not None
    env = {"STREAMOPS_MARIADB_PASSWORD": "m", "STREAMOPS_KAFKA_SASL_PASSWORD": "sc-ram"}
    conf = secret_key_ref_conf(spec, spec.kubernetes, env)
    assert conf["spark.kubernetes.executor.secretKeyRef.STREAMOPS_KAFKA_SASL_PASSWORD"] == (
        "kafka-user:password"
    )
    bare = _spec(kubernetes=K8S)
    assert bare.kubernetes is not None
    with pytest.raises(ValueError, match=r"kubernetes\.kafka_sasl_password_secret"):
        secret_key_ref_conf(bare, bare.kubernetes, env)


@pytest.mark.parametrize(
    "reference", ["no-colon", "Upper:key", "name:", ":key", "name:bad/key", "-name:key"]
)
def test_a_secret_reference_is_a_secret_name_and_a_key(reference: str) -> None:
    with pytest.raises(PipelineSpecError, match=r"kubernetes\.mariadb_password_secret"):
        _spec(kubernetes={**K8S, "mariadb_password_secret": reference})


def test_credentials_are_told_from_settings() -> None:
    for name in ("STREAMOPS_MARIADB_PASSWORD", "AIRFLOW__CORE__FERNET_KEY", "X_API_TOKEN"):
        assert is_secret_variable(name)
    for name in ("STREAMOPS_JOB_TOKEN", "STREAMOPS_MARIADB_USER", "STREAMOPS_REDIS_PORT"):
        assert not is_secret_variable(name)


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
