"""What a pipeline's ``spark-submit`` is made of: a pure function of its spec, the settings and
the Spark Connection's master.

The Spark provider's ``SparkSubmitHook`` turns the result into the command line, with the master,
deploy mode, namespace and spark-submit binary of the pipeline's Airflow Connection
(``spark_default`` unless the spec names another): the hook (plugins/streamops_airflow/hooks.py)
reads the Connection and passes its master in. Local (client mode) and Kubernetes cluster mode come
from the same spec. Nothing here touches the file system or the network, so every branch is
unit-tested; the hook resolves what needs I/O (the connector jars in the cache) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from streamops.config import PROJECT_ROOT, Settings
from streamops.supervision.spec import (
    KAFKA_SASL_PASSWORD_ENV,
    MARIADB_PASSWORD_ENV,
    REDIS_PASSWORD_ENV,
    KubernetesSubmit,
    PipelineSpec,
)

CHECKPOINT_ENV = "STREAMOPS_CHECKPOINT_URI"
MASTER_ENV = "STREAMOPS_SPARK_MASTER"
# Read by spark_jobs.common.outages: how long a sink write rides out a MariaDB or Redis outage.
OUTAGE_RIDE_OUT_ENV = "STREAMOPS_OUTAGE_RIDE_OUT_SECONDS"
# Read by spark_jobs.common.priority: the niceness a job takes once its queries settled.
SETTLED_NICE_ENV = "STREAMOPS_SETTLED_NICE"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# Settings the driver must not inherit from the launcher: paths of this machine, not the pod's.
_LAUNCHER_ONLY_ENV = frozenset(
    {"STREAMOPS_STATE_DIR", "STREAMOPS_VENV_DIR", "STREAMOPS_SPARK_VENV_DIR", "STREAMOPS_CACHE_DIR"}
)
# Cluster mode: the field of the spec's ``kubernetes`` section naming the Secret of each password.
SECRET_REF_FIELDS = {
    MARIADB_PASSWORD_ENV: "mariadb_password_secret",
    REDIS_PASSWORD_ENV: "redis_password_secret",
    KAFKA_SASL_PASSWORD_ENV: "kafka_sasl_password_secret",
}
# Words of a variable that holds a credential: its value never goes on spark-submit's argv.
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "FERNET", "CREDENTIAL")
# Fencing token and lease key (streamops.supervision.job_processes.job_environment): numbers, not
# credentials, which the driver and the executors' Python workers need to fence their sinks.
_FENCE_ENV = frozenset({"STREAMOPS_JOB_TOKEN", "STREAMOPS_JOB_LEASE", "STREAMOPS_JOB_PIPELINE"})


def spark_submit_path(spark_home: Path) -> Path:
    return spark_home / "bin" / "spark-submit"


def module_file(module: str, root: Path = PROJECT_ROOT) -> Path:
    """A job module as the file spark-submit runs: spark_jobs.jobs.orders → …/orders.py."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def job_file(spec: PipelineSpec, root: Path = PROJECT_ROOT) -> Path:
    """The spec's job module as the file spark-submit runs."""
    return module_file(spec.job_module, root)


def app_name(spec: PipelineSpec) -> str:
    return f"streamops-{spec.name}"


@dataclass(frozen=True)
class SubmitRequest:
    """A pipeline's spark-submit, in the Spark provider's ``SparkSubmitHook`` terms; the master
    and the binary come from the Airflow Connection, not from here."""

    name: str
    # None: the Connection's deploy-mode (client when it has none).
    deploy_mode: str | None
    application: str
    conf: dict[str, str] = field(default_factory=dict)
    jars: list[str] = field(default_factory=list)
    application_args: list[str] = field(default_factory=list)


def check_connection(spec: PipelineSpec, master: str, deploy_mode: str | None) -> None:
    """A spec with a ``kubernetes`` section runs its driver in a pod: on a ``k8s://`` master in
    cluster mode. A spec without one runs its driver beside the launcher (client mode) on any
    master, ``k8s://`` included (executors in pods). A mismatch between the spec and its
    Connection is a clear error, never a job in the wrong place."""
    if spec.kubernetes is not None and not master.startswith("k8s://"):
        raise ValueError(
            f"{spec.name} has a 'kubernetes' section, but the master of its Spark Connection "
            f"{spec.spark_conn_id!r} is {master!r}; set it to k8s://https://<api server>"
        )
    if spec.kubernetes is None and deploy_mode == "cluster":
        raise ValueError(
            f"Spark Connection {spec.spark_conn_id!r} asks for cluster mode, but {spec.name} has "
            "no 'kubernetes' section (image, service account) to run a driver pod from"
        )


def build_submit_environment(spec: PipelineSpec, settings: Settings, master: str) -> dict[str, str]:
    """``STREAMOPS_*`` variables of the job: the settings, with the Connection's master and the
    spec's checkpoint.

    The job builds its own SparkSession from these (``settings.spark_master``), so they must agree
    with the command line: a builder's ``master()`` wins over ``--master``.
    """
    env = settings.as_env()
    env[MASTER_ENV] = master
    env[OUTAGE_RIDE_OUT_ENV] = f"{spec.outage_ride_out_seconds:g}"
    env[SETTLED_NICE_ENV] = str(spec.settled_nice)
    if spec.checkpoint_root is not None:
        env[CHECKPOINT_ENV] = spec.checkpoint_root
    return env


def is_secret_variable(name: str) -> bool:
    """A variable whose value is a credential (a password, a key, a token)."""
    if name in _FENCE_ENV:
        return False
    return any(word in name for word in _SECRET_WORDS) or name.endswith("_KEY")


def secret_key_ref_conf(
    spec: PipelineSpec, k8s: KubernetesSubmit, env: Mapping[str, str]
) -> dict[str, str]:
    """The passwords of ``env`` as Spark's ``secretKeyRef`` settings: the driver and executor pods
    read them from the spec's Secrets (``valueFrom.secretKeyRef``); only a Secret's name and key
    are on the command line. A password of the settings without a Secret named in the spec is an
    error, never a value on the argv nor a driver without it."""
    conf: dict[str, str] = {}
    refs = k8s.secret_key_refs()
    for name, spec_field in SECRET_REF_FIELDS.items():
        ref = refs.get(name)
        if ref is None:
            if env.get(name):
                raise ValueError(
                    f"{spec.name} runs in cluster mode and the settings have {name}: its driver "
                    "pod reads it from a Kubernetes Secret, never from spark-submit's command "
                    f"line. Set kubernetes.{spec_field}: '<secret name>:<key>' in its spec (the "
                    "Helm chart's Secrets are <release>-streamops-mariadb:mariadb-password and "
                    "<release>-streamops-redis:redis-password)."
                )
            continue
        conf[f"spark.kubernetes.driver.secretKeyRef.{name}"] = ref
        conf[f"spark.kubernetes.executor.secretKeyRef.{name}"] = ref
    return conf


def with_class_archive(java_options: str, archive: Path) -> str:
    """A driver's JVM options plus the class-data archive ``archive`` (made by
    `streamops install`): the JVM maps the classes Spark loads at start from it instead of
    parsing and verifying them again. A stale archive (another JDK, other jars) is ignored by the
    JVM (``-Xshare:auto``), never fatal."""
    return " ".join(part for part in (java_options, f"-XX:SharedArchiveFile={archive}") if part)


def build_submit_request(
    spec: PipelineSpec,
    settings: Settings,
    *,
    master: str,
    deploy_mode: str | None = None,
    connector_jars: Sequence[Path] = (),
    spark_version: str = "4.2.0",
    class_archive: Path | None = None,
    job_env: Mapping[str, str] | None = None,
) -> SubmitRequest:
    """``spec``'s job for ``spark-submit [options] <job file> [job args]`` on ``master`` in
    ``deploy_mode`` (its Spark Connection's).

    Cluster mode: the driver pod gets the settings that are no credential as
    ``spark.kubernetes.driverEnv.*``, and the passwords it needs through ``secretKeyRef`` settings
    that name the spec's Secrets (:func:`secret_key_ref_conf`): no password is on the argv, and
    none the job does not read (Airflow's, PostgreSQL's) is passed to the pod. ``job_env``: the
    launch's fence (lease key and token) for the driver and the executors; in local mode the
    launcher puts it in spark-submit's environment instead.

    ``connector_jars`` are the Kafka connector jars of the install cache (local mode: their paths;
    cluster mode: the same file names under the image's ``jars_dir``). ``class_archive``: the
    drivers' class-data archive of the install, used in local mode (a relaunched driver starts with
    a quarter less work, see docs/performance.md); the caller passes it only when the file exists.
    """
    check_connection(spec, master, deploy_mode)
    conf: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
    k8s = spec.kubernetes
    if k8s is None:
        python = str(settings.spark_python)
        # Driver and Python workers run the Spark environment's interpreter.
        conf["spark.pyspark.python"] = python
        conf["spark.pyspark.driver.python"] = python
        jars = [str(jar) for jar in connector_jars]
        application = str(job_file(spec))
    else:
        deploy_mode = "cluster"
        jars_dir = k8s.jars_dir.format(spark_version=spark_version)
        jars = [f"{jars_dir}/{jar.name}" for jar in connector_jars]
        conf |= {
            "spark.kubernetes.namespace": k8s.namespace,
            "spark.kubernetes.container.image": k8s.image,
            "spark.kubernetes.authenticate.driver.serviceAccountName": k8s.service_account,
            "spark.executor.instances": str(k8s.executor_instances),
            # The submitter returns once the driver pod runs; the hook watches the pod instead.
            "spark.kubernetes.submission.waitAppCompletion": "false",
            "spark.kubernetes.driver.label.streamops/pipeline": spec.name,
            "spark.kubernetes.executor.label.streamops/pipeline": spec.name,
        }
        env = build_submit_environment(spec, settings, master)
        for name, value in sorted({**env, **(job_env or {})}.items()):
            if name not in _LAUNCHER_ONLY_ENV and not is_secret_variable(name):
                conf[f"spark.kubernetes.driverEnv.{name}"] = value
        # The executors' Python workers write partitions of large batches: fenced as well.
        for name, value in sorted((job_env or {}).items()):
            if not is_secret_variable(name):
                conf[f"spark.executorEnv.{name}"] = value
        conf |= secret_key_ref_conf(spec, k8s, env)
        module_path = PurePosixPath(*spec.job_module.split(".")).with_suffix(".py")
        application = f"{k8s.application_root}/{module_path}"
    conf |= spec.spark_conf
    if class_archive is not None and k8s is None:
        options = conf.get(DRIVER_JAVA_OPTIONS, "")
        conf[DRIVER_JAVA_OPTIONS] = with_class_archive(options, class_archive)
    return SubmitRequest(
        name=app_name(spec),
        deploy_mode=deploy_mode,
        application=application,
        conf=conf,
        jars=jars,
        application_args=list(spec.job_arguments()),
    )


# --- batch jobs ----------------------------------------------------------------------------------
def build_batch_submit_request(
    name: str,
    job_module: str,
    settings: Settings,
    *,
    deploy_mode: str | None = None,
    application_args: Sequence[str] = (),
) -> SubmitRequest:
    """A batch job's spark-submit: a job that ends by itself (the vitals model's training,
    ``spark_jobs.jobs.vitals_train``), launched by an Airflow task that waits for it.

    Its driver runs beside the launcher (client mode, on any master of the Connection) and reads
    its settings from the environment (:func:`build_batch_environment`), as a local pipeline's
    does; the job file is found as a pipeline's is (:func:`job_file`). No Kafka connector: a batch
    job reads MariaDB.
    """
    if deploy_mode == "cluster":
        raise ValueError(
            f"{name} is a batch job whose driver runs beside its Airflow task; its Spark "
            "Connection asks for cluster mode, which needs a driver image: use client mode"
        )
    python = str(settings.spark_python)
    return SubmitRequest(
        name=f"streamops-{name}",
        deploy_mode=deploy_mode,
        application=str(module_file(job_module)),
        conf={
            "spark.sql.session.timeZone": "UTC",
            # Driver and Python workers run the Spark environment's interpreter.
            "spark.pyspark.python": python,
            "spark.pyspark.driver.python": python,
        },
        application_args=list(application_args),
    )


def build_batch_environment(settings: Settings, master: str) -> dict[str, str]:
    """``STREAMOPS_*`` variables of a batch job: the settings (passwords included, which is why
    they go to spark-submit's environment and never its command line), with the Connection's
    master, which the job's own session builder would otherwise override."""
    env = settings.as_env()
    env[MASTER_ENV] = master
    return env
