"""Every DAG file imports cleanly, without I/O, and builds the DAGs its spec declares."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
EXPECTED_DAGS = {
    "streamops_platform_health",
    "streamops_mariadb_compaction",
    "streamops_checkpoint_health",
}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}


def test_expected_dag_ids(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


def test_owners_tags_and_retries(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert "streamops" in dag.tags
        assert dag.max_active_runs == 1
        for task in dag.tasks:
            assert task.owner == "streamops"
            assert task.retries >= 1


def test_health_dag_checks_every_service_then_publishes(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["streamops_platform_health"]
    assert {t.task_id for t in dag.tasks} == {"check", "publish"}
    assert dag.get_task("publish").upstream_task_ids == {"check"}


def test_unknown_health_check_is_rejected() -> None:
    from streamops_airflow.dag_factory import HealthCheckSpec

    with pytest.raises(ValueError, match="unknown health checks"):
        HealthCheckSpec(dag_id="x", checks=("kafka", "zookeeper"))
