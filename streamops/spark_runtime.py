"""Where the Spark runtime is, found without importing it.

The platform's core (the CLI, Airflow's processes, the dashboard) launches and watches Spark
jobs but never runs Spark itself, so it must not import ``pyspark``: that costs about 70 MB and
a second per process. Spark lives in an environment of its own (``settings.spark_venv_dir``,
ADR 0006): the Airflow environment's ``pyspark`` is the Spark provider's pyspark-client, with no
``bin/`` and no ``jars/``. These functions read what they need from the Spark environment's
files instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamops.config import Settings
from streamops.errors import StreamopsError

_VERSION = re.compile(r"""^__version__(?:\s*:\s*str)?\s*=\s*["']([^"']+)["']""", re.M)


def spark_home(settings: Settings) -> Path:
    """The Spark environment's PySpark folder, which is a whole Spark (``bin/spark-submit``,
    ``jars/``)."""
    venv = settings.spark_venv_dir
    homes = sorted(venv.glob("lib/python3*/site-packages/pyspark"))
    home = next((h for h in homes if (h / "bin" / "spark-submit").is_file()), None)
    if home is None:
        found = f" ({homes[0]} has no bin/spark-submit: pyspark-client?)" if homes else ""
        raise StreamopsError(
            f"No PySpark in the Spark environment {venv}{found}. Run `streamops install`, which "
            "makes it, or set STREAMOPS_SPARK_VENV_DIR to the environment that holds PySpark."
        )
    return home


def spark_version(settings: Settings, home: Path | None = None) -> str:
    """The Spark version of the PySpark at ``home`` (default: the Spark environment's), from its
    ``version.py``: the version the JVM reports too (tests/integration/test_spark.py)."""
    folder = spark_home(settings) if home is None else home
    path = folder / "version.py"
    try:
        match = _VERSION.search(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StreamopsError(f"Cannot read PySpark's version from {path}: {exc}") from exc
    if match is None:
        raise StreamopsError(f"{path} does not say which PySpark version it is.")
    return match.group(1)


def kafka_connector_jars(settings: Settings, version: str | None = None) -> list[Path]:
    """The connector jars `streamops install` resolved for PySpark ``version`` (default: the Spark
    environment's, read from its files). A job's driver passes ``pyspark.__version__``: under
    spark-submit, PySpark is imported from ``pyspark.zip``, which has no folder to read."""
    version = spark_version(settings) if version is None else version
    folder = settings.spark_kafka_jars_dir(version)
    jars = sorted(folder.glob("*.jar"))
    if not any(jar.name.startswith("spark-sql-kafka-0-10") for jar in jars):
        raise StreamopsError(
            f"Spark's Kafka connector for PySpark {version} is not in {folder}. "
            "Run `streamops install`, which resolves it with Maven."
        )
    return jars
