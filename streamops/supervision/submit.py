"""The ``spark-submit`` command line of a pipeline: a pure function of its spec and the settings.

Local (client mode, the default ``local[*]`` master) and Kubernetes cluster mode come from the same
spec. Nothing here touches the file system or the network, so every branch is unit-tested; the
hook resolves what needs I/O (the connector jars in the cache) and passes it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from streamops.config import PROJECT_ROOT, Settings
from streamops.supervision.spec import PipelineSpec

CHECKPOINT_ENV = "STREAMOPS_CHECKPOINT_URI"
MASTER_ENV = "STREAMOPS_SPARK_MASTER"
# Read by spark_jobs.common.outages: how long a sink write rides out a MariaDB or Redis outage.
OUTAGE_RIDE_OUT_ENV = "STREAMOPS_OUTAGE_RIDE_OUT_SECONDS"
# Read by spark_jobs.common.priority: the niceness a job takes once its queries settled.
SETTLED_NICE_ENV = "STREAMOPS_SETTLED_NICE"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# Settings the driver must not inherit from the launcher: paths of this machine, not the pod's.
_LAUNCHER_ONLY_ENV = frozenset({"STREAMOPS_STATE_DIR", "STREAMOPS_VENV_DIR", "STREAMOPS_CACHE_DIR"})


def spark_submit_path(spark_home: Path) -> Path:
    return spark_home / "bin" / "spark-submit"


def job_file(spec: PipelineSpec, root: Path = PROJECT_ROOT) -> Path:
    """The job module as the file spark-submit runs: spark_jobs.jobs.orders → …/orders.py."""
    return root.joinpath(*spec.job_module.split(".")).with_suffix(".py")


def master_of(spec: PipelineSpec, settings: Settings) -> str:
    if spec.kubernetes is not None:
        return f"k8s://{spec.kubernetes.api_server}"
    return spec.master or settings.spark_master


def app_name(spec: PipelineSpec) -> str:
    return f"streamops-{spec.name}"


def build_submit_environment(spec: PipelineSpec, settings: Settings) -> dict[str, str]:
    """``STREAMOPS_*`` variables of the job: the settings, with the spec's master and checkpoint.

    The job builds its own SparkSession from these (``settings.spark_master``), so they must agree
    with the command line: a builder's ``master()`` wins over ``--master``.
    """
    env = settings.as_env()
    env[MASTER_ENV] = master_of(spec, settings)
    env[OUTAGE_RIDE_OUT_ENV] = f"{spec.outage_ride_out_seconds:g}"
    env[SETTLED_NICE_ENV] = str(spec.settled_nice)
    if spec.checkpoint_root is not None:
        env[CHECKPOINT_ENV] = spec.checkpoint_root
    return env


def with_class_archive(java_options: str, archive: Path) -> str:
    """A driver's JVM options plus the class-data archive ``archive`` (made by
    `streamops install`): the JVM maps the classes Spark loads at start from it instead of
    parsing and verifying them again. A stale archive (another JDK, other jars) is ignored by the
    JVM (``-Xshare:auto``), never fatal."""
    return " ".join(part for part in (java_options, f"-XX:SharedArchiveFile={archive}") if part)


def build_submit_command(
    spec: PipelineSpec,
    settings: Settings,
    *,
    connector_jars: Sequence[Path] = (),
    spark_home: Path | None = None,
    spark_version: str = "4.2.0",
    class_archive: Path | None = None,
) -> list[str]:
    """The argv that starts ``spec``'s job: ``spark-submit [options] <job file> [job args]``.

    ``connector_jars`` are the Kafka connector jars of the install cache (local mode: their paths;
    cluster mode: the same file names under the image's ``jars_dir``). ``spark_home`` defaults to
    ``spark-submit`` on PATH. ``class_archive``: the drivers' class-data archive of the install
    cache, used in local mode (a relaunched driver starts with a quarter less work, see
    docs/performance.md); the caller passes it only when the file exists.
    """
    submit = str(spark_submit_path(spark_home)) if spark_home is not None else "spark-submit"
    command = [submit, "--master", master_of(spec, settings), "--name", app_name(spec)]
    conf: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
    k8s = spec.kubernetes
    if k8s is None:
        command += ["--deploy-mode", "client"]
        python = str(settings.venv_dir / "bin" / "python")
        # Driver and Python workers run the venv's interpreter (the sinks' drivers live there).
        conf["spark.pyspark.python"] = python
        conf["spark.pyspark.driver.python"] = python
        jars = [str(jar) for jar in connector_jars]
        application = str(job_file(spec))
    else:
        command += ["--deploy-mode", "cluster"]
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
        for name, value in sorted(build_submit_environment(spec, settings).items()):
            if name not in _LAUNCHER_ONLY_ENV:
                conf[f"spark.kubernetes.driverEnv.{name}"] = value
        module_path = PurePosixPath(*spec.job_module.split(".")).with_suffix(".py")
        application = f"{k8s.application_root}/{module_path}"
    conf |= spec.spark_conf
    if class_archive is not None and k8s is None:
        options = conf.get(DRIVER_JAVA_OPTIONS, "")
        conf[DRIVER_JAVA_OPTIONS] = with_class_archive(options, class_archive)
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    if jars:
        command += ["--jars", ",".join(jars)]
    return [*command, application, *spec.job_arguments()]
