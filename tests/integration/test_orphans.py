"""Orphans are fenced, never doubled: a pipeline's process outside the lease holder's job is
refused by ``streamops pipeline start``/``run`` and stopped, logged and alerted by the supervisor
before it launches (real MariaDB, Redis and Kafka; the orphan is a real process that carries the
job's environment mark, standing in for a JVM or driver left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
import redis
from streamops_airflow.hooks import ORPHAN_RULE_ID, SparkJobHook

from streamops.config import Settings
from streamops.contract.redis_keys import PLATFORM_ALERTS_KEY
from streamops.errors import StreamopsError
from streamops.supervision import job_processes
from streamops.supervision.foreground import refuse_stray_jobs
from streamops.supervision.lease import Lease
from streamops.supervision.spec import PipelineSpec, load_specs


@pytest.fixture
def spec() -> PipelineSpec:
    """The orders spec under a name of its own: no other test's job can pass for the orphan."""
    return load_specs()["orders"].model_copy(update={"name": f"orphan-{uuid.uuid4().hex[:8]}"})


@pytest.fixture
def orphan(settings: Settings, spec: PipelineSpec) -> Iterator[psutil.Process]:
    lease = Lease(spec.checkpoint_location(settings.checkpoint_root), "airflow:gone", 41)
    env = {
        **os.environ,
        **job_processes.job_environment(spec.name, lease),
        job_processes.STATE_DIR_ENV: str(settings.state_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.2)"],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not job_processes.stray_jobs(settings, spec.name):
        time.sleep(0.1)
    yield psutil.Process(process.pid)
    if process.poll() is None:
        process.kill()
    process.wait()


def test_start_beside_an_orphan_is_refused_with_its_pid(
    settings: Settings, spec: PipelineSpec, orphan: psutil.Process
) -> None:
    with pytest.raises(StreamopsError) as refused:
        refuse_stray_jobs(settings, spec, "Stop it first.")
    message = str(refused.value)
    assert "runs without the checkpoint's lease (an orphan)" in message
    assert str(orphan.pid) in message and "fencing token 41" in message
    assert "started " in message and "Stop it first." in message


def test_the_supervisor_stops_an_orphan_before_it_launches_and_alerts(
    settings: Settings, spec: PipelineSpec, orphan: psutil.Process
) -> None:
    hook = SparkJobHook(spec, settings)
    stopped = hook.stop_stray_jobs()
    assert [s.pids for s in stopped] == [(orphan.pid,)]
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
    assert job_processes.stray_jobs(settings, spec.name) == []
    alerts = [
        json.loads(item)
        for item in redis.Redis.from_url(settings.redis_url).lrange(PLATFORM_ALERTS_KEY, 0, 50)
    ]
    mine = [
        a
        for a in alerts
        if a["rule_id"] == ORPHAN_RULE_ID and str(orphan.pid) in a["sample_message"]
    ]
    assert len(mine) == 1 and mine[0]["service"] == spec.name, alerts[:3]
