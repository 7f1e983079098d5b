"""Spark batch jobs (jobs that end by themselves, such as the vitals model's training) launched
with the Spark provider's ``SparkSubmitOperator``.

The provider's operator and hook do the launch, the wait, the log and the failure on a non-zero
exit; these subclasses add what the platform's pipelines get from
:class:`~streamops_airflow.hooks.SparkJobHook`:

- spark-submit is the Spark environment's (the provider accepts only a binary *name* from the
  Connection, looked up on ``PATH``, where Airflow's environment has the Spark provider's
  pyspark-client and no Spark; an absolute path passed to the hook is taken as is);
- the job's settings reach it through spark-submit's environment, never its command line: the
  provider's ``env_vars`` become ``--conf spark.kubernetes.driverEnv.*`` arguments on a
  ``k8s://`` master, which would put the MariaDB password on the argv;
- ``on_kill`` stops the Python driver too: the provider SIGKILLs the spark-submit JVM only, and
  the driver, its child, runs on until its next call into the JVM (a long read of MariaDB
  included).

Kept out of ``operators.py``: importing the provider's operator costs every DAG file that imports
that module, and only the training DAG needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import psutil
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from streamops.config import Settings, load_settings
from streamops.errors import StreamopsError
from streamops.spark_runtime import spark_home
from streamops.supervision.spec import DEFAULT_SPARK_CONN_ID
from streamops.supervision.submit import build_batch_environment, build_batch_submit_request
from streamops_airflow.hooks import spark_binary, spark_connection

# How long the driver gets to exit after SIGTERM before it is killed.
DRIVER_STOP_SECONDS = 10.0


class SparkBatchSubmitHook(SparkSubmitHook):
    """The provider's ``SparkSubmitHook`` for the batch job ``job_module``, on the Spark Connection
    ``conn_id``: master and deploy mode are the Connection's, the binary is the Connection's
    ``spark-binary`` in the Spark environment, the rest is
    :func:`~streamops.supervision.submit.build_batch_submit_request`'s.

    Reads the Connection and the Spark environment's files when made: make it in a task, never
    at DAG parse time.
    """

    hook_name = "Streamops Spark batch job"

    def __init__(
        self,
        *,
        name: str,
        job_module: str,
        application_args: Sequence[str] = (),
        conn_id: str = DEFAULT_SPARK_CONN_ID,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        home = spark_home(self.settings)
        binary = spark_binary(spark_connection(conn_id), home)
        # The master and deploy mode as the provider resolves them, before the request that
        # depends on them exists.
        resolved = SparkSubmitHook(conn_id=conn_id, spark_binary=binary)._connection
        try:
            request = build_batch_submit_request(
                name,
                job_module,
                self.settings,
                deploy_mode=resolved["deploy_mode"],
                application_args=application_args,
            )
        except ValueError as exc:
            raise StreamopsError(str(exc)) from exc
        super().__init__(
            conn_id=conn_id,
            spark_binary=binary,
            conf=request.conf,
            name=request.name,
            application_args=request.application_args,
            deploy_mode=request.deploy_mode,
        )
        self.application = request.application
        # The provider adds _env to the inherited environment of spark-submit (submit()), and
        # sets it itself only from env_vars, which stay unset.
        self._env = {
            **build_batch_environment(self.settings, resolved["master"]),
            "SPARK_HOME": str(home),
            "PYSPARK_PYTHON": str(self.settings.spark_python),
        }

    def on_kill(self) -> None:
        """Stop spark-submit (the provider's kill) and the Python driver it started."""
        driver_processes = _descendants(self._submit_sp)
        super().on_kill()
        for process in driver_processes:
            with suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(driver_processes, timeout=DRIVER_STOP_SECONDS)
        for process in alive:
            with suppress(psutil.NoSuchProcess):
                process.kill()


def _descendants(process: Any) -> list[psutil.Process]:
    """The running children of the Popen ``process`` (None: not started), all generations."""
    if process is None or process.poll() is not None:
        return []
    try:
        return list(psutil.Process(process.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


class SparkBatchJobOperator(SparkSubmitOperator):
    """The provider's ``SparkSubmitOperator`` running the batch job ``job_module`` through
    :class:`SparkBatchSubmitHook`: the task waits for the job and fails with it.

    ``application_args`` are templated (``{{ params.history_days }}``); the command line and its
    environment are built when the task runs, from the Connection and the Spark environment.
    """

    template_fields: Sequence[str] = ("application_args",)
    ui_color = "#fdf2e8"

    def __init__(
        self,
        *,
        job_name: str,
        job_module: str,
        conn_id: str = DEFAULT_SPARK_CONN_ID,
        application_args: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            conn_id=conn_id,
            name=f"streamops-{job_name}",
            application_args=application_args,
            **kwargs,
        )
        self.job_name = job_name
        self.job_module = job_module

    def execute(self, context: Any) -> None:
        hook = self._get_hook()
        self._hook = hook
        # The provider's execute submits self.application with the hook it finds in self._hook.
        self.application = hook.application
        super().execute(context)

    def _get_hook(self) -> SparkBatchSubmitHook:
        return SparkBatchSubmitHook(
            name=self.job_name,
            job_module=self.job_module,
            application_args=[str(arg) for arg in self.application_args or ()],
            conn_id=self._conn_id,
        )
