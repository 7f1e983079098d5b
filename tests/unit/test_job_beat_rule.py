"""A job on another host, judged by its driver's job heartbeat (pure rule, no services).

The watcher (the triggerer in compose) cannot see the launcher's processes: a heartbeat under the
handle's fencing token, younger than the bound, is a live job; the exit code the driver recorded
(or the wrapper's exit file, where the state folder is shared) is a job that ended; a stale
heartbeat, or none after the start-up grace, is a job that stopped without a word. A stop request
counts only for its own token and launch; a newer token anywhere fences the job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamops.config import load_settings
from streamops.supervision import job_processes
from streamops.supervision.job_health import (
    JOB_BEAT_AT,
    JOB_EXIT_CODE,
    JOB_HOST,
    JOB_LOAD_PER_CORE,
    JOB_PID,
    JOB_STARTED_AT,
    JOB_STOPPING,
    JOB_TOKEN,
    HealthStatus,
    JobReport,
    StallBounds,
    classify_remote_health,
    driver_must_stop,
    judge_job_beat,
    stop_request,
)
from streamops.supervision.job_processes import JobHandle
from streamops.supervision.lease import Lease
from streamops.supervision.spec import HealthThresholds

NOW = 1_800_000_000.0
LAUNCHED = NOW - 100.0
MAX_AGE = 30.0
GRACE = 60.0


def beat(**fields: object) -> dict[str, str]:
    """A job heartbeat as the driver writes it: token 7, started 1 s after the launch, last beat
    2 s ago; ``fields`` change or add fields."""
    base = {
        JOB_TOKEN: 7,
        JOB_HOST: "scheduler-1",
        JOB_PID: 4242,
        JOB_STARTED_AT: LAUNCHED + 1,
        JOB_BEAT_AT: NOW - 2,
        JOB_LOAD_PER_CORE: 0.5,
        JOB_STOPPING: "",
    }
    return {name: str(value) for name, value in {**base, **fields}.items()}


def judge(fields: dict[str, str], *, now: float = NOW, **overrides: object) -> JobReport:
    arguments: dict[str, object] = {
        "token": 7,
        "now": now,
        "launched_at": LAUNCHED,
        "max_age": MAX_AGE,
        "startup_grace": GRACE,
        **overrides,
    }
    return judge_job_beat(fields, **arguments)  # type: ignore[arg-type]


def test_a_fresh_heartbeat_under_the_handles_token_is_a_live_job() -> None:
    report = judge(beat())
    assert report.alive and report.exit_code is None
    assert "scheduler-1 (pid 4242)" in report.detail and "2 s ago" in report.detail
    assert report.load_per_core == 0.5


def test_a_heartbeat_at_the_bound_still_lives_and_past_it_went_without_a_word() -> None:
    assert judge(beat(**{JOB_BEAT_AT: NOW - MAX_AGE})).alive
    stale = judge(beat(**{JOB_BEAT_AT: NOW - MAX_AGE - 1}))
    assert not stale.alive and stale.exit_code is None
    assert "stopped without a word (killed?)" in stale.detail and "31 s old" in stale.detail


def test_the_exit_code_the_driver_recorded_ends_the_job() -> None:
    stopped = judge(beat(**{JOB_EXIT_CODE: 0}))
    assert not stopped.alive and stopped.exit_code == 0
    refused = judge(beat(**{JOB_EXIT_CODE: 78, JOB_BEAT_AT: NOW - 500}))
    assert (refused.alive, refused.exit_code) == (False, 78)


def test_the_wrapper_exit_file_wins_over_the_heartbeat() -> None:
    # spark-submit's own code (as a local stop returns it), though the driver's beat is fresh.
    report = judge(beat(**{JOB_EXIT_CODE: 0}), wrapper_exit_code=143)
    assert (report.alive, report.exit_code) == (False, 143)
    assert judge({}, wrapper_exit_code=0).exit_code == 0


def test_a_heartbeat_of_an_older_token_or_launch_is_not_this_jobs() -> None:
    # Within the start-up grace: the job has not beaten yet (JVM start), it is starting.
    older = judge(beat(**{JOB_TOKEN: 6, JOB_EXIT_CODE: 0}), now=LAUNCHED + 20)
    assert older.alive and older.exit_code is None and "no job heartbeat yet" in older.detail
    # The same token, started before this launch (a relaunch under one lease): the earlier
    # launch's exit code is not this one's.
    earlier = beat(**{JOB_STARTED_AT: LAUNCHED - 300, JOB_EXIT_CODE: 0})
    assert judge(earlier, now=LAUNCHED + 20).alive
    # After the grace, nothing from this launch means it went without a word.
    silent = judge(beat(**{JOB_TOKEN: 6}), now=LAUNCHED + GRACE + 1)
    assert not silent.alive and silent.exit_code is None
    assert "no job heartbeat 61 s after its launch" in silent.detail
    assert not judge({}, now=LAUNCHED + GRACE + 1).alive


def test_a_newer_token_reporting_means_this_job_was_fenced() -> None:
    report = judge(beat(**{JOB_TOKEN: 8}))
    assert not report.alive and report.exit_code is None
    assert "fencing token 8" in report.detail


def test_a_beat_from_far_in_the_future_is_not_trusted() -> None:
    future = judge(beat(**{JOB_BEAT_AT: NOW + 3600}), now=LAUNCHED + GRACE + 1)
    assert not future.alive


def test_remote_health_judges_the_queries_of_a_live_job_busy_is_not_stalled() -> None:
    bounds = StallBounds(heartbeat_max_age_seconds=60, startup_grace_seconds=GRACE)
    busy = {
        "orders_records": {
            "status_at": str(NOW - 1),
            "trigger_active": "1",
            "batch_started_at": str(NOW - 200),
            "first_batch": "0",
            "heartbeat_at": str(NOW - 200),
        }
    }
    health = classify_remote_health(
        judge(beat()),
        query_states=busy,
        now=NOW,
        process_start_epoch=LAUNCHED,
        bounds=bounds,
    )
    assert health.status is HealthStatus.HEALTHY and health.detail.startswith("busy: ")
    assert "job heartbeat 2 s ago" in health.detail and not health.silent
    # Dead: the rule's own verdicts, from the recorded code or from silence.
    stopped = classify_remote_health(
        judge(beat(**{JOB_EXIT_CODE: 0})),
        query_states=busy,
        now=NOW,
        process_start_epoch=LAUNCHED,
        bounds=bounds,
    )
    assert stopped.status is HealthStatus.STOPPED
    silent = classify_remote_health(
        judge(beat(**{JOB_BEAT_AT: NOW - 100})),
        query_states=busy,
        now=NOW,
        process_start_epoch=LAUNCHED,
        bounds=bounds,
    )
    assert silent.status is HealthStatus.FAILED and silent.silent
    assert "stopped without a word" in silent.detail


def test_the_bound_is_named_in_the_spec_and_follows_the_poll_interval() -> None:
    # Three polls of the default 15 s; pipelines.yaml polls every 5 s: the 30 s floor.
    assert HealthThresholds().job_heartbeat_max_age_seconds() == 45.0
    assert HealthThresholds(poll_interval_seconds=5).job_heartbeat_max_age_seconds() == 30.0
    slow = HealthThresholds(poll_interval_seconds=20)
    assert slow.job_heartbeat_max_age_seconds() == 60.0
    assert slow.stall_bounds().job_heartbeat_max_age_seconds == 60.0
    assert (
        HealthThresholds(job_heartbeat_timeout_seconds=90)
        .stall_bounds()
        .job_heartbeat_max_age_seconds
        == 90.0
    )


# --- the stop request, seen from the driver's beat ------------------------------------------------


def test_a_stop_request_round_trip_stops_only_the_launch_it_names() -> None:
    lineage = {4242, 4200, 4100}  # the driver, spark-submit's JVM, the sh wrapper
    request = stop_request(7, 4100)
    assert driver_must_stop(7, lineage, reporting_token=7, mirror_token=7, request=request) == (
        "stop requested"
    )
    # Whichever launch of the token (a watcher that knows no pid yet).
    assert (
        driver_must_stop(
            7, lineage, reporting_token=None, mirror_token=None, request=stop_request(7, 0)
        )
        == "stop requested"
    )
    # A request left over from an earlier launch under the same lease, or another token's.
    for other in (stop_request(7, 999), stop_request(6, 4100), stop_request(8, 4100)):
        assert (
            driver_must_stop(7, lineage, reporting_token=7, mirror_token=7, request=other) is None
        )
    # Nothing asked, or nonsense.
    for nothing in (None, "", "seven", "7", "7 x", "-1 4100"):
        assert (
            driver_must_stop(7, lineage, reporting_token=7, mirror_token=7, request=nothing) is None
        )


def test_a_newer_token_fences_the_driver_whatever_the_request() -> None:
    lineage = {4242}
    mirror = driver_must_stop(7, lineage, reporting_token=7, mirror_token=8, request=None)
    assert mirror is not None and mirror.startswith("fenced") and "8" in mirror
    reporting = driver_must_stop(7, lineage, reporting_token=9, mirror_token=7, request=None)
    assert reporting is not None and "9" in reporting
    # Its own or older tokens are no fence.
    assert driver_must_stop(7, lineage, reporting_token=6, mirror_token=7, request=None) is None


# --- which host judges, and strays ----------------------------------------------------------------


def _handle(host: str, *, pid: int = 4100, driver_pod: str = "") -> JobHandle:
    return JobHandle(
        pipeline="orders",
        queries=("orders_records",),
        checkpoint_location="/tmp/checkpoints/orders",
        owner="test",
        fencing_token=7,
        host=host,
        pid=pid,
        process_start_epoch=LAUNCHED,
        exit_file="/nonexistent/pid-4100.exit",
        log_file="/nonexistent/job.log",
        driver_pod=driver_pod,
    )


def test_only_a_client_mode_job_of_another_host_is_judged_by_its_heartbeat() -> None:
    assert job_processes.is_remote(_handle("scheduler-1"))
    assert not job_processes.is_remote(_handle(socket.gethostname()))
    assert not job_processes.is_remote(_handle(""))  # launch not recorded yet
    assert not job_processes.is_remote(_handle("k8s:streamops", pid=0, driver_pod="orders-1"))
    # Never by its processes: the pid is another host's.
    assert job_processes.job_processes(_handle("scheduler-1", pid=os.getpid())) == []


@pytest.fixture
def marked_sleepers(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two processes of the orders pipeline (same state folder, another token than the holder's):
    one launched on this host, one whose launch names another host."""
    settings = load_settings(state_dir=tmp_path / "state")
    marked = {
        **job_processes.job_environment("orders", Lease("/tmp/checkpoints/orders", "t", 6)),
        job_processes.STATE_DIR_ENV: str(settings.state_dir),
    }
    assert marked[job_processes.JOB_HOST_ENV] == socket.gethostname()
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    here = subprocess.Popen(command, env={**os.environ, **marked}, start_new_session=True)
    other_env = {**os.environ, **marked, job_processes.JOB_HOST_ENV: "scheduler-elsewhere"}
    other = subprocess.Popen(command, env=other_env, start_new_session=True)
    time.sleep(0.3)
    try:
        yield settings, here, other
    finally:
        for process in (here, other):
            process.kill()
            process.wait()


def test_a_job_another_host_launched_is_never_a_stray_here(marked_sleepers) -> None:  # type: ignore[no-untyped-def]
    settings, here, other = marked_sleepers
    strays = job_processes.stray_jobs(settings, "orders")
    sessions = {stray.session for stray in strays}
    assert here.pid in sessions
    assert other.pid not in sessions
    assert other.poll() is None
