"""The vitals model's training DAG launches spark_jobs/jobs/vitals_train.py with the Spark
provider's SparkSubmitOperator: the command comes from the provider's hook, the Airflow
Connection (master, deploy mode) and the Spark environment (binary, Python), the settings go
through spark-submit's environment, and on_kill stops the driver as well as spark-submit.

Built without running Spark: the provider hook's own _build_spark_submit_command."""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from streamops_airflow.batch import SparkBatchJobOperator, SparkBatchSubmitHook

from streamops.config import PROJECT_ROOT, load_settings
from streamops.errors import StreamopsError
from streamops.spark_runtime import spark_home
from streamops.supervision.submit import MASTER_ENV, build_batch_submit_request
from tests.unit.provider_support import env_connection, option

DAG_FILE = PROJECT_ROOT / "dags" / "train_vitals_model.py"
TRAINING_DAG = "streamops_vitals_model_training"
# Unlike the default ("streamops"), a password no path or name on the command line contains.
PASSWORD = "pw-9f3c-never-on-argv"


@pytest.fixture(autouse=True)
def _settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMOPS_MARIADB_PASSWORD", PASSWORD)


def _rendered_training_task(**params: Any) -> SparkBatchJobOperator:
    """The DAG's task as a run renders it (its params, or ``params`` given to the run)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).dags[TRAINING_DAG]
    task = copy.deepcopy(dag.get_task("train"))
    assert isinstance(task, SparkBatchJobOperator)
    task.render_template_fields({"params": {**dag.params, **params}})
    return task


def test_the_training_command_is_the_spark_environments_spark_submit_of_vitals_train(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_connection(monkeypatch, "spark_default", conn_type="spark", host="local[2]")
    settings = load_settings()
    task = _rendered_training_task(history_days=3, min_samples=5)
    hook = task._get_hook()
    command = hook._build_spark_submit_command(hook.application)

    assert command[0] == str(spark_home(settings) / "bin" / "spark-submit")
    assert option(command, "--master") == "local[2]"
    assert "--deploy-mode" not in command  # none in the Connection: spark-submit's client
    assert option(command, "--name") == "streamops-vitals-train"
    assert f"spark.pyspark.python={settings.spark_python}" in command
    assert f"spark.pyspark.driver.python={settings.spark_python}" in command
    # The job file (a pipeline's is found the same way), then the job's own arguments.
    application = str(PROJECT_ROOT / "spark_jobs" / "jobs" / "vitals_train.py")
    assert Path(application).is_file()
    assert command[command.index(application) + 1 :] == [
        "--history-days",
        "3",
        "--min-samples",
        "5",
    ]
    # The settings reach the job through spark-submit's environment only.
    assert not any(PASSWORD in arg for arg in command)
    assert hook._env is not None
    assert hook._env["STREAMOPS_MARIADB_PASSWORD"] == PASSWORD
    assert hook._env[MASTER_ENV] == "local[2]"  # the job's own session agrees with --master
    assert hook._env["SPARK_HOME"] == str(spark_home(settings))
    assert hook._env["PYSPARK_PYTHON"] == str(settings.spark_python)


def test_the_dags_params_are_the_jobs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    env_connection(monkeypatch, "spark_default", conn_type="spark", host="local[*]")
    hook = _rendered_training_task()._get_hook()
    command = hook._build_spark_submit_command(hook.application)
    assert command[-4:] == ["--history-days", "7.0", "--min-samples", "30"]


def test_a_k8s_master_keeps_the_password_off_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provider would turn env_vars into --conf spark.kubernetes.driverEnv.* arguments."""
    env_connection(
        monkeypatch,
        "spark_k8s",
        conn_type="spark",
        host="k8s://https://10.0.0.1:6443",
        extra={"deploy-mode": "client", "namespace": "streamops"},
    )
    hook = SparkBatchSubmitHook(
        name="vitals-train", job_module="spark_jobs.jobs.vitals_train", conn_id="spark_k8s"
    )
    command = hook._build_spark_submit_command(hook.application)
    assert option(command, "--master") == "k8s://https://10.0.0.1:6443"
    assert not any(PASSWORD in arg or "driverEnv" in arg for arg in command)
    assert hook._env is not None and hook._env["STREAMOPS_MARIADB_PASSWORD"] == PASSWORD


def test_cluster_mode_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    env_connection(
        monkeypatch,
        "spark_cluster",
        conn_type="spark",
        host="k8s://https://10.0.0.1:6443",
        extra={"deploy-mode": "cluster"},
    )
    with pytest.raises(StreamopsError, match="cluster mode"):
        SparkBatchSubmitHook(
            name="vitals-train", job_module="spark_jobs.jobs.vitals_train", conn_id="spark_cluster"
        )


def test_a_connection_binary_outside_the_allowed_names_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_connection(
        monkeypatch,
        "spark_default",
        conn_type="spark",
        host="local[*]",
        extra={"spark-binary": "/bin/sh"},
    )
    with pytest.raises(StreamopsError, match="spark-binary '/bin/sh' is not one of"):
        SparkBatchSubmitHook(name="vitals-train", job_module="spark_jobs.jobs.vitals_train")


def test_the_request_is_a_pure_function_of_its_arguments() -> None:
    settings = load_settings()
    request = build_batch_submit_request(
        "vitals-train",
        "spark_jobs.jobs.vitals_train",
        settings,
        application_args=["--min-samples", "5"],
    )
    assert request.application == str(PROJECT_ROOT / "spark_jobs/jobs/vitals_train.py")
    assert request.conf["spark.pyspark.python"] == str(settings.spark_python)
    assert request.conf["spark.sql.session.timeZone"] == "UTC"
    assert request.jars == []
    assert request.application_args == ["--min-samples", "5"]


def test_on_kill_stops_the_driver_as_well_as_spark_submit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """spark-submit's JVM starts the Python driver as its child; the provider SIGKILLs the JVM
    only. Here a shell stands in for the JVM and a sleep for the driver."""
    env_connection(monkeypatch, "spark_default", conn_type="spark", host="local[*]")
    hook = SparkBatchSubmitHook(name="vitals-train", job_module="spark_jobs.jobs.vitals_train")
    submit = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & wait"])
    try:
        deadline = time.monotonic() + 10
        while not (children := psutil.Process(submit.pid).children()):
            assert time.monotonic() < deadline, "the stand-in driver did not start"
            time.sleep(0.05)
        (driver,) = children
        hook._submit_sp = submit
        hook.on_kill()
        assert submit.wait(timeout=10) != 0
        driver.wait(timeout=15)  # raises TimeoutExpired if it outlived the kill
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
