"""A query restarted in its own driver after a transient start failure: the policy, and how the
health rule reads the ``restarting`` state the listener writes (pure, no services)."""

from __future__ import annotations

import threading

import pytest

from spark_jobs.common.restarts import RestartPolicy, transient_reason
from streamops.supervision.job_health import HealthStatus, JobHealth, StallBounds, classify_health

# What Spark 4.3 raised here when transformWithState's pre-init worker was slow (first lines).
CONNECT_BACK = (
    "[STREAM_FAILED] Query [id = 85e3, runId = 831b] terminated with exception: Python worker "
    "failed to connect back. SQLSTATE: XXKST\norg.apache.spark.SparkException: Python worker "
    "failed to connect back.\n\tat org.apache.spark.api.python.PythonWorkerFactory."
    "createSimpleWorker(PythonWorkerFactory.scala:303)"
)
BAD_DATA = "[STREAM_FAILED] ... org.apache.spark.SparkArithmeticException: [DIVIDE_BY_ZERO]"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_only_the_known_transient_failures_restart() -> None:
    assert transient_reason(CONNECT_BACK) == "Python worker failed to connect back"
    assert transient_reason(BAD_DATA) is None
    assert transient_reason(None) is None
    assert transient_reason("") is None
    policy = RestartPolicy()
    assert policy.decide("q", "run-1", BAD_DATA) is None
    assert policy.decide("q", "run-2", None) is None
    assert policy.restarts("q") == 0


def test_restarts_pause_longer_each_time_and_stop_at_the_limit() -> None:
    clock = Clock()
    policy = RestartPolicy(max_restarts=3, first_pause_seconds=5, max_pause_seconds=15, clock=clock)
    pauses = []
    for run in range(3):
        restart = policy.decide("vitals_signal", f"run-{run}", CONNECT_BACK)
        assert restart is not None
        assert (restart.attempt, restart.of) == (run + 1, 3)
        assert restart.reason == "Python worker failed to connect back"
        pauses.append(restart.at - clock.now)
    assert pauses == [5, 10, 15]  # doubling, capped
    # The fourth failure ends the job: the supervisor judges it.
    assert policy.decide("vitals_signal", "run-3", CONNECT_BACK) is None
    # Another query of the job has its own count.
    assert policy.decide("vitals_records", "run-9", CONNECT_BACK) is not None


def test_the_listener_and_the_driver_get_one_answer_per_run() -> None:
    """Both ask about the same failed run, in either order and from two threads: one restart."""
    policy = RestartPolicy(max_restarts=1)
    answers: list[object] = []

    def ask() -> None:
        answers.append(policy.decide("q", "run-1", CONNECT_BACK))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(a) for a in answers}) == 1 and answers[0] is not None
    assert policy.restarts("q") == 1
    # The limit (1) is used up by that one run, not by the eight questions about it.
    assert policy.decide("q", "run-2", CONNECT_BACK) is None


def test_bad_policy_values_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pause_seconds"):
        RestartPolicy(first_pause_seconds=10, max_pause_seconds=5)
    with pytest.raises(ValueError, match="must not be negative"):
        RestartPolicy(max_restarts=-1)


# --- the health rule ------------------------------------------------------------------------------

START = 10_000.0
BOUNDS = StallBounds(heartbeat_max_age_seconds=60.0, startup_grace_seconds=180.0)


def restarting(heartbeat_at: float, restart_at: float) -> dict[str, str]:
    return {
        "state": "restarting",
        "heartbeat_at": f"{heartbeat_at}",
        "status_at": f"{heartbeat_at - 1}",
        "last_exception": "",
        "restart_at": f"{restart_at}",
        "restart_attempt": "2 of 5",
        "restart_reason": "Python worker failed to connect back",
    }


def running(now: float) -> dict[str, str]:
    return {"state": "running", "heartbeat_at": f"{now - 3}", "status_at": f"{now - 1}"}


def judge(
    states: dict[str, dict[str, str]], now: float, alive: bool = True, exit_code: int | None = None
) -> JobHealth:
    return classify_health(
        alive=alive,
        exit_code=exit_code,
        query_states=states,
        now=now,
        process_start_epoch=START,
        bounds=BOUNDS,
        load_per_core=0.5,
    )


def test_a_query_the_driver_restarts_is_starting_not_failed() -> None:
    now = START + 400  # long past the start-up grace: the restart is judged on its own clock
    health = judge({"a": running(now), "b": restarting(now - 4, now + 6)}, now)
    assert health.status is HealthStatus.STARTING
    assert health.detail == (
        "b restarting in 6 s (attempt 2 of 5): Python worker failed to connect back"
    )


def test_an_overdue_restart_is_a_stall() -> None:
    now = START + 400
    health = judge({"a": running(now), "b": restarting(now - 90, now - 61)}, now)
    assert health.status is HealthStatus.STALLED
    assert "b: restart overdue for 61 s (allowed 60 s)" in health.detail


def test_a_restarting_query_of_a_dead_job_is_a_failure() -> None:
    now = START + 400
    health = judge({"b": restarting(now - 4, now + 6)}, now, alive=False, exit_code=1)
    assert health.status is HealthStatus.FAILED


def test_a_restarting_state_left_by_the_previous_run_is_not_read() -> None:
    # The hash still says "restarting" from a job that died before this one started.
    now = START + 30
    health = judge({"b": restarting(START - 100, START - 90)}, now)
    assert health.status is HealthStatus.STARTING
    assert health.detail == "waiting for b"
