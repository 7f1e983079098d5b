"""Where the Spark runtime is, found without importing it.

The platform's core (the CLI, Airflow's processes, the dashboard) launches and watches Spark
jobs but never runs Spark itself, so it must not import ``pyspark``: that costs about 70 MB and
a second per process, and the Spark runtime may live in an environment of its own. These
functions read what they need from PySpark's files instead.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from streamops.config import Settings
from streamops.errors import StreamopsError

_VERSION = re.compile(r"""^__version__(?:\s*:\s*str)?\s*=\s*["']([^"']+)["']""", re.M)


def spark_home() -> Path:
    """PySpark's package folder, which is a whole Spark (``bin/spark-submit``, ``jars/``)."""
    # find_spec locates a top-level package without running its __init__.
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise StreamopsError(
            "PySpark is not installed in this environment. Run `streamops install`."
        )
    return Path(spec.origin).resolve().parent


def spark_version(home: Path | None = None) -> str:
    """The Spark version of the PySpark at ``home`` (default: this environment's), from its
    ``version.py``: the version the JVM reports too (tests/integration/test_spark.py)."""
    folder = spark_home() if home is None else home
    path = folder / "version.py"
    try:
        match = _VERSION.search(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StreamopsError(f"Cannot read PySpark's version from {path}: {exc}") from exc
    if match is None:
        raise StreamopsError(f"{path} does not say which PySpark version it is.")
    return match.group(1)


def kafka_connector_jars(settings: Settings, version: str | None = None) -> list[Path]:
    """The connector jars `streamops install` resolved for PySpark ``version`` (default: this
    environment's, read from its files). A job's driver passes ``pyspark.__version__``: under
    spark-submit, PySpark is imported from ``pyspark.zip``, which has no folder to read."""
    version = spark_version() if version is None else version
    folder = settings.spark_kafka_jars_dir(version)
    jars = sorted(folder.glob("*.jar"))
    if not any(jar.name.startswith("spark-sql-kafka-0-10") for jar in jars):
        raise StreamopsError(
            f"Spark's Kafka connector for PySpark {version} is not in {folder}. "
            "Run `streamops install`, which resolves it with Maven."
        )
    return jars
