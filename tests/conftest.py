"""Test-wide settings: the suite runs its own stack on its own ports and state folder, so a
platform started with `make up` on the same machine is never touched."""

from __future__ import annotations

import ast
import functools
import gc
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamops.config import Settings
    from streamops.stack import Stack

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Set before any streamops import reads the environment; subprocesses (CLI, Airflow) inherit it.
TEST_ENVIRONMENT = {
    "STREAMOPS_STATE_DIR": str(PROJECT_ROOT / ".streamops-test"),
    "STREAMOPS_KAFKA_PORT": "19092",
    "STREAMOPS_KAFKA_CONTROLLER_PORT": "19093",
    "STREAMOPS_MARIADB_PORT": "13306",
    "STREAMOPS_REDIS_PORT": "16379",
    "STREAMOPS_POSTGRES_PORT": "15432",
    "STREAMOPS_AIRFLOW_PORT": "18080",
    "STREAMOPS_DASHBOARD_PORT": "18090",
    # The test stack's Airflow runs only the DAG runs a test triggers: a scheduled maintenance run
    # must not change rows while a test compares them.
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
}
for _name, _value in TEST_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

# In-process Airflow (DagBag tests) gets a home of its own, never ~/airflow.
_AIRFLOW_PYTEST_HOME = PROJECT_ROOT / ".streamops-test-airflow"
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_PYTEST_HOME))
os.environ.setdefault(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_PYTEST_HOME / 'airflow.db'}"
)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))


# --- two environments, two halves of the suite (ADR 0006) -----------------------------------------
# Airflow's environment (.venv) holds the Spark provider's pyspark-client, not Spark; Spark's
# (.venv-spark) holds PySpark and no Airflow. A test file runs in the one it needs: the Spark side
# takes every file that imports pyspark, spark_jobs or benchmarks (directly or through a tests.*
# helper) or asks for the `spark` fixture; the Airflow side takes all the others. A file that
# needs both is an error: split it. `make test` runs pytest once in each environment.
SPARK_SIDE_MODULES = frozenset({"pyspark", "spark_jobs", "benchmarks"})
AIRFLOW_SIDE_MODULES = frozenset({"airflow", "streamops_airflow", "dags"})
THIS_SIDE = "airflow" if importlib.util.find_spec("airflow") is not None else "spark"


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@functools.cache
def _imports(path: Path) -> frozenset[str]:
    """Top-level names of every module ``path`` imports, anywhere in it, with those of the
    ``tests.*`` helpers it imports."""
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            names.add(module.partition(".")[0])
            helper = PROJECT_ROOT.joinpath(*module.split(".")).with_suffix(".py")
            # conftest files are pytest's own, loaded on both sides.
            is_helper = module.startswith("tests.") and not module.endswith(".conftest")
            if is_helper and helper.is_file() and helper != path:
                names |= _imports(helper)
    return frozenset(names)


def _asks_for_spark(path: Path) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(arg.arg == "spark" for arg in node.args.args)
        for node in ast.walk(_tree(path))
    )


def test_file_side(path: Path) -> str:
    """``"spark"`` or ``"airflow"``: the environment that runs the test file ``path``."""
    imports = _imports(path)
    spark = bool(imports & SPARK_SIDE_MODULES) or _asks_for_spark(path)
    airflow = bool(imports & AIRFLOW_SIDE_MODULES)
    if spark and airflow:
        raise pytest.UsageError(
            f"{path} needs both Spark ({', '.join(sorted(imports & SPARK_SIDE_MODULES))}) and "
            f"Airflow ({', '.join(sorted(imports & AIRFLOW_SIDE_MODULES))}), which live in "
            "environments of their own: split it into two files."
        )
    return "spark" if spark else "airflow"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    is_test_file = collection_path.suffix == ".py" and collection_path.name.startswith("test_")
    if is_test_file and test_file_side(collection_path) != THIS_SIDE:
        return True
    return None


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_main_thread() -> Iterator[None]:
    """On the Spark side, a test's cyclic garbage is collected here, at its end, on the main
    thread. Left to chance, a collection may run in py4j's callback thread inside a later test's
    foreachBatch, and a librdkafka client freed there can crash the interpreter
    (confluent-kafka-python#1761: one CI run ended in a segfault so, in test_joins_pipeline)."""
    yield
    if THIS_SIDE == "spark":
        gc.collect()


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One SparkSession for the whole test session (unit and integration alike)."""
    from spark_jobs.common.session import build_spark_session
    from streamops.config import load_settings

    session = build_spark_session(
        "streamops-tests",
        load_settings(),
        {
            "spark.ui.enabled": "false",
            "spark.default.parallelism": "2",
            "spark.sql.shuffle.partitions": "2",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def settings() -> Settings:
    from streamops.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    """The real local stack (tests/chaos and tests/integration), started once per session on the
    test ports and stopped at its end."""
    import shutil

    from streamops.stack import Stack

    stack = Stack(settings)
    # A fresh state folder per session: leftovers of an aborted run must not decide a result.
    stack.down()
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    try:
        # The Spark side's tests never reach Airflow: its four processes would only take CPU.
        stack.up(with_airflow=THIS_SIDE == "airflow", report=print)
        yield stack
    finally:
        stack.down(report=print)
