"""Every DAG file imports cleanly, without I/O, and builds the DAGs its spec declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "dags"
FIXED_DAGS = {
    "streamops_platform_health",
    "streamops_mariadb_compaction",
    "streamops_checkpoint_health",
    "streamops_vitals_model_training",
}
# One supervision DAG per pipeline, read straight from the file (not through the code under test),
# so a pipeline added to pipelines.yaml is expected without touching this test.
SUPERVISION_DAGS = {
    f"streamops_supervise_{name}"
    for name in yaml.safe_load((PROJECT_ROOT / "pipelines.yaml").read_text())["pipelines"]
}
EXPECTED_DAGS = FIXED_DAGS | SUPERVISION_DAGS


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}


def test_expected_dag_ids(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert "streamops_supervise_orders" in SUPERVISION_DAGS
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


def test_one_supervision_task_per_pipeline(dagbag) -> None:  # type: ignore[no-untyped-def]
    from streamops_airflow.operators import StreamingJobOperator

    for dag_id in SUPERVISION_DAGS:
        dag = dagbag.dags[dag_id]
        assert "supervision" in dag.tags
        (task,) = dag.tasks
        assert isinstance(task, StreamingJobOperator)
        assert f"streamops_supervise_{task.pipeline}" == dag_id


def test_owners_tags_and_retries(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert "streamops" in dag.tags
        assert dag.max_active_runs == 1
        for task in dag.tasks:
            assert task.owner == "streamops"
            assert task.retries >= 1


def test_a_supervisor_always_finds_an_executor_slot(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Every DAG runs one task at a time, so the maintenance, health and training DAGs together
    hold fewer slots than the local stack has, and a supervisor's task outranks every other
    task."""
    from streamops.stack.airflow import PARALLELISM

    others = [d for d in dagbag.dag_ids if d not in SUPERVISION_DAGS]
    assert all(dagbag.dags[d].max_active_tasks == 1 for d in dagbag.dag_ids)
    assert len(others) < PARALLELISM
    top = max(t.priority_weight for d in others for t in dagbag.dags[d].tasks)
    for dag_id in SUPERVISION_DAGS:
        (task,) = dagbag.dags[dag_id].tasks
        assert task.weight_rule == "absolute"
        assert task.priority_weight > top


def test_health_dag_checks_every_service_then_publishes(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["streamops_platform_health"]
    assert {t.task_id for t in dag.tasks} == {"check", "publish", "rotate_logs"}
    assert dag.get_task("publish").upstream_task_ids == {"check"}


def test_unknown_health_check_is_rejected() -> None:
    from streamops_airflow.dag_factory import HealthCheckSpec

    with pytest.raises(ValueError, match="unknown health checks"):
        HealthCheckSpec(dag_id="x", checks=("kafka", "zookeeper"))


def test_training_dag_runs_vitals_train_through_the_spark_provider(dagbag) -> None:  # type: ignore[no-untyped-def]
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from streamops_airflow.batch import SparkBatchJobOperator

    dag = dagbag.dags["streamops_vitals_model_training"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"maintenance", "model"} <= set(dag.tags)
    assert dag.params["history_days"] == 7.0
    assert dag.params["min_samples"] == 30
    (task,) = dag.tasks
    assert isinstance(task, SparkBatchJobOperator)
    assert isinstance(task, SparkSubmitOperator)  # the provider's launch, wait and failure
    assert task.job_module == "spark_jobs.jobs.vitals_train"
    assert task._conn_id == "spark_default"
    assert task.execution_timeout is not None
