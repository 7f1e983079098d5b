"""The supervision hook's spark-submit comes from the Spark provider's SparkSubmitHook and the
pipeline's Airflow Connection: master, deploy mode and binary are the Connection's, the rest the
spec's (streamops.supervision.submit), and the binary is the Spark environment's."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamops_airflow.hooks import SparkJobHook

from streamops.config import load_settings
from streamops.errors import StreamopsError
from streamops.spark_runtime import spark_home
from streamops.supervision.spec import KubernetesSubmit, load_specs
from streamops.supervision.submit import MASTER_ENV
from tests.unit.provider_support import env_connection, option


def test_the_command_takes_master_deploy_mode_and_binary_from_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_connection(
        monkeypatch,
        "spark_default",
        conn_type="spark",
        host="local[3]",
        extra={"deploy-mode": "client", "spark-binary": "spark-submit"},
    )
    settings = load_settings()
    hook = SparkJobHook(load_specs()["orders"], settings)
    command, env = hook.submit_command([Path("/cache/spark-sql-kafka-0-10_2.13-4.2.0.jar")])
    assert command[0] == str(spark_home(settings) / "bin" / "spark-submit")
    assert option(command, "--master") == "local[3]"
    assert option(command, "--deploy-mode") == "client"
    assert option(command, "--name") == "streamops-orders"
    assert option(command, "--jars") == "/cache/spark-sql-kafka-0-10_2.13-4.2.0.jar"
    assert f"spark.pyspark.python={settings.spark_python}" in command
    # The job file comes after every option, its own arguments after it.
    (application,) = [arg for arg in command if arg.endswith("spark_jobs/jobs/orders.py")]
    assert command[command.index(application) + 1 :] == list(hook.spec.job_arguments())
    # The job's own session is built on the same master; Spark runs from its environment.
    assert env[MASTER_ENV] == "local[3]"
    assert env["SPARK_HOME"] == str(spark_home(settings))
    assert env["PYSPARK_PYTHON"] == str(settings.spark_python)


def test_a_pipeline_runs_on_the_connection_its_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env_connection(monkeypatch, "spark_small", conn_type="spark", host="local[1]")
    spec = load_specs()["orders"].model_copy(update={"spark_conn_id": "spark_small"})
    command, _ = SparkJobHook(spec, load_settings()).submit_command()
    assert option(command, "--master") == "local[1]"
    assert "--deploy-mode" not in command  # none in the Connection: spark-submit's client


def test_a_missing_connection_is_an_error_not_yarn(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_specs()["orders"].model_copy(update={"spark_conn_id": "spark_nowhere"})
    with pytest.raises(StreamopsError, match=r"no Connection 'spark_nowhere'.*streamops up"):
        SparkJobHook(spec, load_settings()).submit_command()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"conn_type": "http", "host": "local[*]"}, "of type 'http', not 'spark'"),
        (
            {"conn_type": "spark", "host": "local[*]", "extra": {"spark-binary": "/bin/sh"}},
            "spark-binary '/bin/sh' is not one of",
        ),
        (
            {"conn_type": "spark", "host": "local[*]", "extra": {"deploy-mode": "cluster"}},
            "asks for cluster mode, but orders has no 'kubernetes'",
        ),
    ],
)
def test_a_connection_that_cannot_run_the_job_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, object], message: str
) -> None:
    env_connection(monkeypatch, "spark_default", **fields)
    with pytest.raises(StreamopsError, match=message):
        SparkJobHook(load_specs()["orders"], load_settings()).submit_command()


def test_a_cluster_mode_argv_carries_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole spark-submit command line the provider builds for a driver pod: the passwords
    are references to Secrets, never values (issue 17)."""
    env_connection(
        monkeypatch,
        "spark_k8s",
        conn_type="spark",
        host="k8s://https://10.0.0.1:443",
        extra={"deploy-mode": "cluster"},
    )
    passwords = ["maria-pw-5e1d", "pg-pw-c2a9", "admin-pw-0b7f", "redis-pw-4d2e", "scram-pw-8c1a"]
    settings = load_settings(
        mariadb_password=passwords[0],
        postgres_password=passwords[1],
        airflow_admin_password=passwords[2],
        redis_password=passwords[3],
        kafka_sasl_password=passwords[4],
    )
    spec = load_specs()["orders"].model_copy(
        update={
            "spark_conn_id": "spark_k8s",
            "kubernetes": KubernetesSubmit(
                api_server="https://10.0.0.1:443",
                image="streamops:1",
                mariadb_password_secret="rel-streamops-mariadb:mariadb-password",
                redis_password_secret="rel-streamops-redis:redis-password",
                kafka_sasl_password_secret="kafka-user:password",
            ),
        }
    )
    fence = {"STREAMOPS_JOB_TOKEN": "9", "STREAMOPS_JOB_LEASE": "b" * 64}
    command, env = SparkJobHook(spec, settings).submit_command(job_env=fence)
    assert option(command, "--deploy-mode") == "cluster"
    argv = " ".join(command)
    assert not [password for password in passwords if password in argv]
    assert (
        "spark.kubernetes.driver.secretKeyRef.STREAMOPS_MARIADB_PASSWORD="
        "rel-streamops-mariadb:mariadb-password" in command
    )
    assert (
        "spark.kubernetes.executor.secretKeyRef.STREAMOPS_REDIS_PASSWORD="
        "rel-streamops-redis:redis-password" in command
    )
    assert "spark.kubernetes.driverEnv.STREAMOPS_JOB_TOKEN=9" in command
    # spark-submit's own environment: Spark's home only (it does not reach the pod anyway).
    assert env == {"SPARK_HOME": str(spark_home(settings))}
