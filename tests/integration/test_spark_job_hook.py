"""SparkJobHook against a real spark-submit of the orders job: launch, find, health, stop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamops_airflow.hooks import HealthStatus, JobHandle, JobHealth, SparkJobHook

from streamops.config import Settings
from streamops.supervision.lease import LeaseHeldError
from streamops.supervision.spec import PipelineSpec, load_spec

OWNER = "test:hook"


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineSpec:
    # The real orders spec, on a checkpoint of its own and a small local master. This process
    # is no Airflow task and reads no metadata database: its Connection comes from the
    # environment (the supervised jobs' is a database row, tests/integration/test_supervision).
    conn = {"conn_type": "spark", "host": "local[1]", "extra": {"deploy-mode": "client"}}
    monkeypatch.setenv("AIRFLOW_CONN_STREAMOPS_TEST_LOCAL1", json.dumps(conn))
    return load_spec("orders").model_copy(
        update={
            "checkpoint_root": str(tmp_path / "checkpoints"),
            "spark_conn_id": "streamops_test_local1",
            "trigger_interval": "2 seconds",
            "stop_timeout_seconds": 45.0,
        }
    )


def _wait_for(hook: SparkJobHook, handle: JobHandle, wanted: HealthStatus) -> JobHealth:
    deadline = time.monotonic() + 90
    health = hook.read_health(handle)
    while health.status is not wanted and time.monotonic() < deadline:
        assert health.status in (HealthStatus.STARTING, wanted), (health, _log(handle))
        time.sleep(1.0)
        health = hook.read_health(handle)
    assert health.status is wanted, (health, _log(handle))
    return health


def _log(handle: JobHandle) -> str:
    return Path(handle.log_file).read_text(errors="replace")[-3000:]


def test_launch_find_watch_and_stop_gracefully(settings: Settings, spec: PipelineSpec) -> None:
    hook = SparkJobHook(spec, settings)
    handle = hook.start_or_reattach(OWNER)
    try:
        assert SparkJobHook.is_running(handle)
        assert not handle.reattached
        # Another launcher is refused with the holder's name; the same one finds the job.
        with pytest.raises(LeaseHeldError, match=f"held by {OWNER}"):
            SparkJobHook(spec, settings).start_or_reattach("test:someone-else")
        again = SparkJobHook(spec, settings).start_or_reattach(OWNER)
        assert again.reattached
        assert (again.pid, again.fencing_token) == (handle.pid, handle.fencing_token)
        assert again.exit_file == handle.exit_file

        health = _wait_for(hook, handle, HealthStatus.HEALTHY)
        assert "orders_records" in health.detail and "orders_revenue" in health.detail

        started = time.monotonic()
        assert hook.stop(handle, spec.stop_timeout_seconds) == 0, _log(handle)
        assert time.monotonic() - started < spec.stop_timeout_seconds
        assert not SparkJobHook.is_running(handle)
        assert hook.read_health(handle).status is HealthStatus.STOPPED
        # The listener recorded each query's termination before the driver exited.
        for fields in hook.query_states(handle).values():
            assert fields.get("state") == "stopped", fields
    finally:
        hook.stop(handle, 5)
        hook.release(handle)


def test_a_pid_with_another_start_time_is_not_the_job(settings: Settings) -> None:
    import os

    import psutil

    me = psutil.Process(os.getpid())
    handle = JobHandle(
        pipeline="orders",
        queries=("orders_records",),
        checkpoint_location="/x",
        owner=OWNER,
        fencing_token=1,
        host=__import__("socket").gethostname(),
        pid=me.pid,
        process_start_epoch=me.create_time(),
        exit_file="/nonexistent",
        log_file="/nonexistent",
    )
    assert SparkJobHook.is_running(handle)
    reused = JobHandle.from_dict({**handle.to_dict(), "process_start_epoch": me.create_time() - 60})
    assert not SparkJobHook.is_running(reused)
