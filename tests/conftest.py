"""Test-wide settings: the suite runs its own stack on its own ports and state folder, so a
platform started with `make up` on the same machine is never touched."""

from __future__ import annotations

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
        stack.up(with_airflow=True, report=print)
        yield stack
    finally:
        stack.down(report=print)
