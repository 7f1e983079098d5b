"""The vitals model's training DAG, run by the test stack's own Airflow (scheduler, executor, task
process) through its REST API: the task launches spark_jobs/jobs/vitals_train.py with the Spark
provider's operator on the stack's spark_default Connection (a database row, as `streamops up`
makes it), and the job saves a new model version from the history seeded in MariaDB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.db import connect

TRAINING_DAG = "streamops_vitals_model_training"


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[AirflowRest]:
    with AirflowRest.login(settings, timeout=30) as client:
        yield client


def _seed_history(settings: Settings, tag: str) -> None:
    """An hour of readings of three patients, every vital sign, within the normal ranges."""
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    rows = [
        (
            f"IT-{tag}-{patient}",
            start + timedelta(minutes=2 * i),
            70.0 + patient + (i % 5),
            96.0 + (i % 3),
            118.0 + (i % 7),
            76.0 + (i % 4),
            36.6 + 0.1 * (i % 3),
            14.0 + (i % 4),
        )
        for patient in range(3)
        for i in range(25)
    ]
    with closing(connect(settings)) as connection:
        connection.cursor().executemany(
            "INSERT INTO vitals_readings (patient_id, event_time, device_id, heart_rate, spo2, "
            "systolic_bp, diastolic_bp, temperature_c, respiratory_rate) "
            "VALUES (?, ?, 'history', ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()


def _versions(model_dir: Path) -> set[str]:
    if not model_dir.is_dir():
        return set()
    return {entry.name for entry in model_dir.iterdir() if entry.is_dir() and entry.name[0] == "v"}


def _wait_for_dag(api: AirflowRest, dag_id: str, timeout_seconds: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while api.dag(dag_id) is None:
        assert time.monotonic() < deadline, f"the dag-processor never parsed {dag_id}"
        time.sleep(2)


def test_the_training_dag_saves_a_new_model_version_from_mariadb_history(
    api: AirflowRest, settings: Settings
) -> None:
    _seed_history(settings, uuid.uuid4().hex[:8])
    # Where the running vitals job reads its model (spark_jobs.common.vitals_reference).
    model_dir = settings.state_dir / "models" / "vitals"
    before = _versions(model_dir)
    _wait_for_dag(api, TRAINING_DAG)
    # A small history and a low bar for per-patient baselines: the seeded hour suffices.
    response = api.request(
        "POST",
        f"/dags/{TRAINING_DAG}/dagRuns",
        json={"logical_date": None, "conf": {"history_days": 0.25, "min_samples": 5}},
    )
    run_id = str(response.json()["dag_run_id"])
    state = api.wait_for_run(TRAINING_DAG, run_id, timeout_seconds=600)
    assert state == "success", api.task_states(TRAINING_DAG, run_id)

    (new,) = _versions(model_dir) - before
    assert (model_dir / new / "model.json").is_file()
    assert (model_dir / "latest").read_text().strip() == new


def test_too_little_history_trains_nothing_and_starts_no_spark(
    settings: Settings, tmp_path: Path
) -> None:
    """A first `streamops up` runs the daily DAG at once, on an empty table: the job must say why
    it trained nothing, keep the current model and succeed, before starting a Spark driver."""
    import subprocess

    model_dir = tmp_path / "models"
    finished = subprocess.run(
        [
            str(settings.spark_python),
            "-m",
            "spark_jobs.jobs.vitals_train",
            "--history-days",
            "0.0001",
            "--min-samples",
            "1000000",
            "--model-dir",
            str(model_dir),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "vitals model not trained" in finished.stderr
    assert "fewer than min_samples (1000000)" in finished.stderr
    assert _versions(model_dir) == set()
    # No SparkContext was made (its log would say so).
    assert "SparkContext" not in finished.stderr, finished.stderr[-2000:]
