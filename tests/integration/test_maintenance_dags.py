"""The maintenance DAGs run by the test stack's own Airflow (scheduler, executor, task processes),
triggered through its REST API, with their effects checked in MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.db import connect
from streamops.maintenance.compaction import ROLLUP_STATE
from streamops.supervision.spec import load_specs

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
    # An archive folder no pipeline writes: a day far past the retention, and today.
    archive = Path(settings.archive_root) / "retention_test"
    expired = archive / "date=2000-01-01" / "hour=0" / "batch_id=0"
    current = archive / f"date={datetime.now(UTC).date().isoformat()}" / "hour=0" / "batch_id=1"
    for folder in (expired, current):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"order_id": ["a", "b"]}), folder / "part-00000.parquet")
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
        "archive_retention": "success",
    }
    # The archive's retention ran in the task's own process, with the stack's settings.
    assert not (archive / "date=2000-01-01").exists()
    assert (current / "part-00000.parquet").is_file()
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
    expected = {(spec.name, query) for spec in load_specs().values() for query in spec.queries}
    assert checked == expected
    critical = any(status == "critical" for _, _, status in rows)
    # One mapped task per checkpoint: the run fails exactly when a check found something critical.
    assert state == ("failed" if critical else "success")
