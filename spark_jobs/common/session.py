"""The SparkSession every job and test uses: Kafka connector jars from the install cache, UTC."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.pipelines.submit import DRIVER_JAVA_OPTIONS, with_class_archive

# Set by spark-submit for the Python driver it starts: the JVM runs already.
GATEWAY_ENV = "PYSPARK_GATEWAY_PORT"


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The connector jars `streamops install` resolved for the installed PySpark version."""
    import pyspark

    folder = settings.spark_kafka_jars_dir(pyspark.__version__)
    jars = sorted(folder.glob("*.jar"))
    if not any(jar.name.startswith("spark-sql-kafka-0-10") for jar in jars):
        raise StreamopsError(
            f"Spark's Kafka connector for PySpark {pyspark.__version__} is not in {folder}. "
            "Run `streamops install`, which resolves it with Maven."
        )
    return jars


def build_spark_session(
    app_name: str, settings: Settings, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A session on settings.spark_master (local[*] by default) able to read and write Kafka."""
    # Python workers must run this interpreter (the venv with the sinks' drivers), not whatever
    # `python3` comes first on PATH; PySpark reads only the environment variable for that.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(str(jar) for jar in kafka_connector_jars(settings)))
        # Event times are UTC everywhere in the contract; the session must not shift them.
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(2, settings.kafka_partitions)))
        # A sink's `limit(n).collect()` (sinks.write_partitions) scans every partition in one
        # job instead of one partition first and the rest in a second job.
        .config("spark.sql.limit.initialNumPartitions", "64")
    )
    for key, value in _with_class_archive(settings, conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _with_class_archive(settings: Settings, conf: Mapping[str, str]) -> dict[str, str]:
    """``conf``, plus the drivers' class-data archive when this interpreter is about to start the
    JVM itself (`streamops run`, tests) and the archive exists. Under spark-submit (the supervised
    jobs) the JVM already runs: the hook put the archive on its command line."""
    import pyspark

    archive = settings.spark_class_archive(pyspark.__version__)
    if GATEWAY_ENV in os.environ or not archive.is_file():
        return dict(conf)
    options = with_class_archive(conf.get(DRIVER_JAVA_OPTIONS, ""), archive)
    return {**conf, DRIVER_JAVA_OPTIONS: options}
