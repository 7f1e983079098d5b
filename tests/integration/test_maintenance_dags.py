"""The maintenance DAGs run by the test stack's own Airflow (scheduler, executor, task processes),
triggered through its REST API, with their effects checked in MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import datetime

import pytest

from spark_jobs.jobs import PIPELINE_QUERIES
from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.db import connect
from streamops.maintenance.compaction import ROLLUP_STATE

COMPACTION_DAG = "streamops_mariadb_compaction"
CHECKPOINT_DAG = "streamops_checkpoint_health"


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[AirflowRest]:
    with AirflowRest.login(settings, timeout=30) as client:
        yield client


def scalar(settings: Settings, statement: str, params: tuple = ()) -> object:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        row = cursor.fetchone()
        connection.commit()
        return None if row is None else row[0]


def database_now(settings: Settings, clock: str = "UTC_TIMESTAMP(3)") -> datetime:
    value = scalar(settings, f"SELECT {clock}")
    assert isinstance(value, datetime)
    return value


def test_the_compaction_dag_runs_every_step_in_airflow(
    api: AirflowRest, settings: Settings
) -> None:
    # updated_at is the server's CURRENT_TIMESTAMP, so the run's start is read on the same clock.
    started = database_now(settings, "NOW(3)")
    run_id, state = api.trigger_and_wait(COMPACTION_DAG, timeout_seconds=600)
    assert state == "success", api.task_states(COMPACTION_DAG, run_id)
    assert api.task_states(COMPACTION_DAG, run_id) == {
        "partitions": "success",
        "reconcile": "success",
        "rollup": "success",
        "retention": "success",
        "analyze": "success",
    }
    # The rollup task moved its high-water mark during this run, from its own process.
    mark = scalar(
        settings, "SELECT updated_at FROM maintenance_state WHERE name = ?", (ROLLUP_STATE,)
    )
    assert isinstance(mark, datetime) and mark >= started


def test_the_checkpoint_health_dag_records_every_checkpoint_and_fails_only_on_critical(
    api: AirflowRest, settings: Settings
) -> None:
    started = database_now(settings)
    _, state = api.trigger_and_wait(CHECKPOINT_DAG, timeout_seconds=600)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT pipeline, query_name, status FROM checkpoint_health WHERE checked_at >= ?",
            (started,),
        )
        rows = cursor.fetchall()
    checked = {(pipeline, query) for pipeline, query, _ in rows}
    expected = {(p, q) for p, queries in PIPELINE_QUERIES.items() for q in queries}
    assert checked == expected
    critical = any(status == "critical" for _, _, status in rows)
    # One mapped task per checkpoint: the run fails exactly when a check found something critical.
    assert state == ("failed" if critical else "success")
