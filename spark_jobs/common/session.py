"""The SparkSession every job and test uses: Kafka connector jars from the install cache, UTC."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

from streamops.config import Settings
from streamops.spark_runtime import kafka_connector_jars
from streamops.supervision.submit import DRIVER_JAVA_OPTIONS, with_class_archive

# Set by spark-submit for the Python driver it starts: the JVM runs already.
GATEWAY_ENV = "PYSPARK_GATEWAY_PORT"


def build_spark_session(
    app_name: str, settings: Settings, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A session on settings.spark_master (local[*] by default) able to read and write Kafka,
    with ``conf`` applied as given (:func:`session_conf`)."""
    # Python workers must run this interpreter (the venv with the sinks' drivers), not whatever
    # `python3` comes first on PATH; PySpark reads only the environment variable for that.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    requested = _with_class_archive(settings, conf or {})
    builder = SparkSession.builder.appName(app_name)
    for key, value in session_conf(
        settings, kafka_connector_jars(settings, pyspark.__version__), requested
    ).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def session_conf(
    settings: Settings, connector_jars: Sequence[Path], conf: Mapping[str, str]
) -> dict[str, str]:
    """Every setting a session is built with: the platform's defaults, under ``conf``.

    ``conf`` wins on every key: a pipeline's ``spark_conf`` is applied as its spec writes it.
    Under spark-submit the spec's settings are on the command line already, and a default set
    here would still replace them in the session (a builder's settings win over the launcher's),
    so the job passes them here too."""
    defaults = {
        "spark.master": settings.spark_master,
        "spark.jars": ",".join(str(jar) for jar in connector_jars),
        # Event times are UTC everywhere in the contract; the session must not shift them.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(max(2, settings.kafka_partitions)),
        # A sink's `limit(n).collect()` (sinks.write_partitions) scans every partition in one
        # job instead of one partition first and the rest in a second job.
        "spark.sql.limit.initialNumPartitions": "64",
    }
    return {**defaults, **conf}


def _with_class_archive(settings: Settings, conf: Mapping[str, str]) -> dict[str, str]:
    """``conf``, plus the drivers' class-data archive when this interpreter is about to start the
    JVM itself (`streamops run`, tests) and the archive exists. Under spark-submit (the supervised
    jobs) the JVM already runs: the hook put the archive on its command line."""
    archive = settings.spark_class_archive(pyspark.__version__)
    if GATEWAY_ENV in os.environ or not archive.is_file():
        return dict(conf)
    options = with_class_archive(conf.get(DRIVER_JAVA_OPTIONS, ""), archive)
    return {**conf, DRIVER_JAVA_OPTIONS: options}
