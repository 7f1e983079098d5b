"""The supervision DAG factory (a DAG per spec, no I/O) and the operator's steps (fake hook)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
from streamops_airflow.dag_factory import build_supervision_dag
from streamops_airflow.hooks import HealthStatus, JobHandle, JobHealth
from streamops_airflow.operators import StreamingJobOperator
from streamops_airflow.triggers import DependencyWaitTrigger, SparkJobHealthTrigger

from streamops.supervision.restart import DependencyDown, Phase, RestartState
from streamops.supervision.spec import PipelineSpecError, load_specs, parse_specs


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("building a DAG opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.usefixtures("no_network")
def test_every_spec_builds_its_supervision_dag() -> None:
    for name, spec in load_specs().items():
        dag = build_supervision_dag(spec)
        assert dag.dag_id == f"streamops_supervise_{name}"
        assert {"streamops", "supervision", f"pipeline:{name}"} <= set(dag.tags)
        assert dag.max_active_runs == 1
        assert not dag.catchup
        (task,) = dag.tasks
        assert isinstance(task, StreamingJobOperator)
        assert task.task_id == "supervise"
        assert task.pipeline == name
        assert task.owner == "streamops"
        assert task.retries >= 1
        assert task.lease_owner == f"airflow:streamops_supervise_{name}.supervise"


def test_spec_settings_reach_the_dag() -> None:
    body = {
        "job_module": "spark_jobs.jobs.orders",
        "queries": ["q"],
        "owner": "data-team",
        "retries": 3,
        "schedule": "*/10 * * * *",
        "tags": ["payments"],
        "enabled": False,
    }
    spec = parse_specs({"pipelines": {"payments": body}})["payments"]
    dag = build_supervision_dag(spec, specs_path="/etc/streamops/pipelines.yaml")
    task = dag.get_task("supervise")
    assert (task.owner, task.retries) == ("data-team", 3)
    assert "payments" in dag.tags
    assert dag.is_paused_upon_creation is True
    assert task.specs_path == "/etc/streamops/pipelines.yaml"


def test_operator_rejects_a_bad_pipeline_name() -> None:
    with pytest.raises(ValueError, match="not a pipeline name"):
        StreamingJobOperator(task_id="t", pipeline="../orders")


# --- the operator's steps, with a fake hook (no services) ----------------------------------------


class FakeHook:
    def __init__(self, state: RestartState, initial_backoff_seconds: float = 30.0) -> None:
        restart = {
            "max_failures": 2,
            "jitter_ratio": 0,
            "initial_backoff_seconds": initial_backoff_seconds,
        }
        self.spec = parse_specs(
            {
                "pipelines": {
                    "orders": {
                        "job_module": "spark_jobs.jobs.orders",
                        "queries": ["q"],
                        "restart": restart,
                    }
                }
            }
        )["orders"]
        self.state = state
        self.calls: list[str] = []
        # What the lease says of a job that died while no task watched it.
        self.unwatched: tuple[JobHandle, JobHealth] | None = None
        # What the dependency probes and the failure's text say (None: the job's own fault).
        self.outage_found: DependencyDown | None = None
        # Why the job refused to start (it exited with EXIT_REFUSED), None for any other end.
        self.refused: str | None = None
        # Whether a job whose query failed exits by itself within the grace.
        self.exits_itself = True

    def load_restart_state(self) -> RestartState:
        return self.state

    def save_restart_state(self, state: RestartState) -> None:
        self.state = state

    def start_or_reattach(self, owner: str) -> JobHandle:
        self.calls.append(f"start:{owner}")
        return HANDLE

    def unwatched_failure(self, owner: str) -> tuple[JobHandle, JobHealth] | None:
        self.calls.append(f"unwatched:{owner}")
        return self.unwatched

    def find_job(self) -> JobHandle | None:
        self.calls.append("find")
        return HANDLE

    def refusal(self, handle: JobHandle) -> str | None:
        return self.refused

    def outage(self, handle: JobHandle, reason: str) -> DependencyDown | None:
        self.calls.append("probe")
        return self.outage_found

    def await_exit(self, handle: JobHandle, timeout_seconds: float) -> bool:
        self.calls.append(f"await_exit:{timeout_seconds:.0f}")
        return self.exits_itself

    def stop(self, handle: JobHandle, timeout: float) -> int:
        self.calls.append("stop")
        return 0

    def release(self, handle: JobHandle) -> bool:
        self.calls.append("release")
        return True

    def publish_breaker_alert(self, state: RestartState) -> None:
        self.calls.append("alert")


HANDLE = JobHandle(
    pipeline="orders",
    queries=("q",),
    checkpoint_location="/c/orders",
    owner="airflow:d.supervise",
    fencing_token=3,
    host="h",
    pid=10,
    process_start_epoch=1.0,
    exit_file="/x",
    log_file="/y",
)


def _operator(monkeypatch: pytest.MonkeyPatch, hook: FakeHook) -> StreamingJobOperator:
    operator = StreamingJobOperator(task_id="supervise", pipeline="orders")
    monkeypatch.setattr(operator, "_hook", lambda: hook)
    return operator


def _event(status: str) -> dict[str, object]:
    return {"status": status, "detail": "why", "handle": HANDLE.to_dict()}


def test_execute_launches_and_defers_to_the_health_trigger(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(RestartState())
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).execute({})
    assert isinstance(deferred.value.trigger, SparkJobHealthTrigger)
    assert deferred.value.method_name == "on_health_event"
    assert hook.calls == ["start:airflow:adhoc_airflow.supervise"]
    assert hook.state.phase is Phase.RUNNING


def test_execute_refuses_while_the_breaker_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(RestartState(phase=Phase.BREAKER_OPEN, last_failure_reason="boom"))
    with pytest.raises(AirflowFailException, match=r"circuit breaker is open.*boom"):
        _operator(monkeypatch, hook).execute({})
    assert hook.calls == []


def test_a_failure_backs_off_on_a_timer_then_the_breaker_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    operator = _operator(monkeypatch, hook)
    with pytest.raises(TaskDeferred) as deferred:
        operator.on_health_event({}, _event("failed"))
    assert type(deferred.value.trigger).__name__ == "TimeDeltaTrigger"
    assert deferred.value.method_name == "restart_job"
    assert hook.state.phase is Phase.BACKING_OFF
    with pytest.raises(TaskDeferred):
        operator.restart_job({}, None)
    assert hook.state.restarts_total == 1
    with pytest.raises(AirflowFailException, match="circuit breaker is open"):
        operator.on_health_event({}, _event("stalled"))
    assert hook.state.phase is Phase.BREAKER_OPEN
    assert hook.calls[-4:] == ["stop", "probe", "alert", "release"]


def test_a_short_backoff_is_waited_out_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0), initial_backoff_seconds=2)
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).on_health_event({}, _event("failed"))
    # No timer trigger: relaunched after the sleep, straight back to the health trigger.
    assert slept == [2.0]
    assert isinstance(deferred.value.trigger, SparkJobHealthTrigger)
    assert hook.calls == ["await_exit:30", "stop", "probe", "start:airflow:adhoc_airflow.supervise"]
    assert hook.state.phase is Phase.RUNNING and hook.state.restarts_total == 1


def test_a_failed_query_lets_the_job_exit_with_its_own_code_before_it_is_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job whose query failed exits by itself with the code that says why (74: a full disk,
    78: a refusal): the supervisor waits for that before its stop, whose signal would leave 143.
    A stalled job is stopped at once, and one that does not exit in time is stopped too."""
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    with pytest.raises(TaskDeferred):
        _operator(monkeypatch, hook).on_health_event({}, _event("failed"))
    assert hook.calls[:2] == ["await_exit:30", "stop"]

    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    with pytest.raises(TaskDeferred):
        _operator(monkeypatch, hook).on_health_event({}, _event("stalled"))
    assert hook.calls[0] == "stop"

    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    hook.exits_itself = False
    with pytest.raises(TaskDeferred):
        _operator(monkeypatch, hook).on_health_event({}, _event("failed"))
    assert hook.calls[:3] == ["await_exit:30", "stop", "probe"]


def test_a_retried_try_counts_the_failure_nobody_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry (or a run after a lost worker) finds the lease's job dead: that is a failure for
    the breaker, not a free relaunch."""
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    hook.unwatched = (HANDLE, JobHealth(HealthStatus.FAILED, "the job process exited with 1"))
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).execute({})
    assert deferred.value.method_name == "restart_job"
    assert hook.calls == [
        "unwatched:airflow:adhoc_airflow.supervise",
        "await_exit:30",
        "stop",
        "probe",
    ]
    assert hook.state.phase is Phase.BACKING_OFF
    assert hook.state.last_failure_reason == "failed: the job process exited with 1"
    # The second unwatched death opens the breaker (max_failures 2) instead of a launch.
    hook.state = replace(hook.state, phase=Phase.RUNNING)
    with pytest.raises(AirflowFailException, match="circuit breaker is open"):
        _operator(monkeypatch, hook).execute({})
    assert hook.state.phase is Phase.BREAKER_OPEN
    assert hook.calls[-4:] == ["stop", "probe", "alert", "release"]
    assert not any(call.startswith("start:") for call in hook.calls)


def test_a_refusal_to_start_opens_the_breaker_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job exited with EXIT_REFUSED (its database lacks a migration): no probe of the
    dependencies (the reason names MariaDB, which is up), no backoff, no relaunch."""
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    hook.refused = "The orders job refuses to start: lacks 0011_x.sql. Run `streamops db migrate`"
    with pytest.raises(AirflowFailException, match=r"refused to start.*0011_x\.sql"):
        _operator(monkeypatch, hook).on_health_event({}, _event("failed"))
    assert hook.state.phase is Phase.BREAKER_OPEN
    assert hook.state.last_failure_reason == hook.refused
    assert hook.calls == ["await_exit:30", "alert", "release"]
    # The next run is refused with the reason until an operator resets the breaker.
    with pytest.raises(AirflowFailException, match=r"circuit breaker is open.*0011_x\.sql"):
        _operator(monkeypatch, hook).execute({})
    assert not any(call.startswith("start:") for call in hook.calls)


def test_a_retried_try_reattaches_when_nothing_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).execute({})
    assert deferred.value.method_name == "on_health_event"
    owner = "airflow:adhoc_airflow.supervise"
    assert hook.calls == [f"unwatched:{owner}", f"start:{owner}"]
    assert hook.state.failure_times == ()


def test_an_outage_waits_for_the_dependencies_and_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    hook.outage_found = DependencyDown(("redis",), "redis: Connection refused")
    operator = _operator(monkeypatch, hook)
    for _ in range(5):  # more than max_failures (2): still no breaker
        with pytest.raises(TaskDeferred) as deferred:
            operator.on_health_event({}, _event("failed"))
        assert isinstance(deferred.value.trigger, DependencyWaitTrigger)
        assert deferred.value.method_name == "restart_job"
    assert hook.state.phase is Phase.WAITING and hook.state.failure_times == ()
    assert hook.state.outages_total == 5
    assert "alert" not in hook.calls and "release" not in hook.calls
    # Back: relaunched from the checkpoint, watched again.
    with pytest.raises(TaskDeferred) as deferred:
        operator.restart_job({}, {"status": "dependencies_up", "waited_seconds": 12.0})
    assert isinstance(deferred.value.trigger, SparkJobHealthTrigger)
    assert hook.state.phase is Phase.RUNNING and hook.state.restarts_total == 1


def test_mariadb_down_waits_without_touching_the_restart_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    hook.outage_found = DependencyDown(("mariadb",), "mariadb: Can't connect to server")

    def unreachable(*args: object) -> None:
        raise AssertionError("the restart state is in MariaDB, which is down")

    monkeypatch.setattr(hook, "load_restart_state", unreachable)
    monkeypatch.setattr(hook, "save_restart_state", unreachable)
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).on_health_event({}, _event("failed"))
    assert isinstance(deferred.value.trigger, DependencyWaitTrigger)
    assert hook.calls == ["await_exit:30", "stop", "probe"]


def test_a_new_try_while_waiting_looks_at_the_dependencies_before_a_launch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(
        RestartState(phase=Phase.WAITING, waiting_for=("kafka",), last_outage_reason="kafka: x")
    )
    with pytest.raises(TaskDeferred) as deferred:
        _operator(monkeypatch, hook).execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DependencyWaitTrigger) and trigger.dependencies == ["kafka"]
    assert hook.calls == ["find"]


def test_an_outage_seen_while_mariadb_was_down_is_recorded_once_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0, restarts_total=2))
    event = {
        "status": "dependencies_up",
        "waited_seconds": 70.0,
        "dependencies": ["mariadb"],
        "reason": "mariadb: Can't connect to server",
    }
    with pytest.raises(TaskDeferred):
        _operator(monkeypatch, hook).restart_job({}, event)
    # Recorded as an outage (not a failure), then relaunched: a restart, a fresh running_since.
    assert hook.state.outages_total == 1 and hook.state.failure_times == ()
    assert hook.state.phase is Phase.RUNNING and hook.state.restarts_total == 3
    assert hook.state.running_since != 1.0


def test_a_graceful_stop_releases_the_lease_and_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    _operator(monkeypatch, hook).on_health_event({}, _event("stopped"))
    assert hook.calls == ["release"]
    assert hook.state.phase is Phase.STOPPED


def test_a_lost_lease_stops_the_job_but_keeps_hands_off_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))
    with pytest.raises(AirflowException, match="why"):
        _operator(monkeypatch, hook).on_health_event({}, _event("lease_lost"))
    assert hook.calls == ["stop"]


# --- where the specs come from, and the platform alert -------------------------------------------


def test_the_pipelines_file_can_be_replaced_for_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamops.supervision.spec import PIPELINES_FILE_ENV, load_spec, pipelines_file

    other = tmp_path / "pipelines.yaml"
    other.write_text(
        "pipelines:\n  quick:\n    job_module: spark_jobs.jobs.orders\n    queries: [q]\n"
        "    restart: {initial_backoff_seconds: 1, max_backoff_seconds: 2}\n"
    )
    monkeypatch.setenv(PIPELINES_FILE_ENV, str(other))
    assert pipelines_file() == other
    assert list(load_specs()) == ["quick"]
    assert load_spec("quick").restart.initial_backoff_seconds == 1
    with pytest.raises(PipelineSpecError, match=f"No pipeline 'orders' in {other}"):
        load_spec("orders")


def test_platform_alerts_have_the_contract_shape_and_a_stable_id() -> None:
    from datetime import UTC, datetime

    from streamops.supervision.platform_alerts import platform_alert

    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    alert = platform_alert(
        rule_id="streaming-circuit-breaker",
        service="orders",
        identity="orders:1",
        message="x" * 5000,
        at=at,
        event_count=3,
    )
    assert set(alert) == {
        "alert_id",
        "rule_id",
        "level",
        "service",
        "window_start",
        "window_end",
        "event_count",
        "sample_message",
    }
    assert alert["window_start"] == alert["window_end"] == "2026-11-25T12:00:00+00:00"
    assert len(str(alert["sample_message"])) == 1000
    again = platform_alert(
        rule_id="streaming-circuit-breaker", service="orders", identity="orders:1", message="y"
    )
    assert again["alert_id"] == alert["alert_id"]
    other = platform_alert(
        rule_id="streaming-data-loss", service="orders", identity="orders:1", message="y"
    )
    assert other["alert_id"] != alert["alert_id"]


def test_the_triggers_on_kill_releases_the_lease_even_when_the_stop_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    hook = FakeHook(RestartState(phase=Phase.RUNNING, running_since=1.0))

    def failing_stop(handle: JobHandle, timeout: float) -> int:
        hook.calls.append(f"stop:{timeout:g}")
        raise OSError("kill failed")

    monkeypatch.setattr(hook, "stop", failing_stop)
    trigger = SparkJobHealthTrigger(pipeline="orders", handle=HANDLE.to_dict())
    monkeypatch.setattr(trigger, "_hook", lambda: hook)
    with pytest.raises(OSError, match="kill failed"):
        asyncio.run(trigger.on_kill())
    # At most 20 s of grace: the triggerer's on_kill budget is 30 s.
    assert hook.calls == ["stop:20", "release"]


def test_the_dependency_wait_fires_once_everything_answers(monkeypatch: pytest.MonkeyPatch) -> None:

    from streamops.supervision import dependencies
    from streamops.supervision.dependencies import Outage

    answers = [[Outage("mariadb", "refused")], [Outage("redis", "refused")], []]
    monkeypatch.setattr(dependencies, "probe", lambda settings: answers.pop(0))
    renewed: list[int] = []

    class Hook:
        probe_settings = None

        def renew(self, handle: JobHandle) -> None:
            renewed.append(handle.fencing_token)

    trigger = DependencyWaitTrigger(
        pipeline="orders", handle=HANDLE.to_dict(), initial_poll_seconds=0.01
    )
    monkeypatch.setattr(trigger, "_hook", Hook)
    name, kwargs = trigger.serialize()
    assert name == "streamops_airflow.triggers.DependencyWaitTrigger"
    assert DependencyWaitTrigger(**kwargs).serialize() == (name, kwargs)

    event = _first_event(trigger)
    assert event["status"] == "dependencies_up" and answers == []
    # The lease is renewed only while MariaDB answers.
    assert renewed == [HANDLE.fencing_token]


def test_the_dependency_wait_alerts_once_when_long_and_frees_the_lease_when_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from streamops_airflow import triggers

    from streamops.supervision import dependencies
    from streamops.supervision.dependencies import Outage

    answers = [[Outage("kafka", "refused")]] * 3 + [[]]
    monkeypatch.setattr(dependencies, "probe", lambda settings: answers.pop(0))
    monkeypatch.setattr(triggers, "OUTAGE_ALERT_SECONDS", 0.0)
    calls: list[str] = []

    class Hook:
        probe_settings = None

        def renew(self, handle: JobHandle) -> None:
            calls.append("renew")

        def publish_outage_alert(self, down: str, waited: float) -> None:
            calls.append(f"alert:{down}")

        def release(self, handle: JobHandle) -> bool:
            calls.append(f"release:{handle.fencing_token}")
            return True

    trigger = DependencyWaitTrigger(
        pipeline="orders",
        handle=HANDLE.to_dict(),
        dependencies=["kafka"],
        reason="kafka: refused",
        initial_delay_seconds=0.01,
        initial_poll_seconds=0.01,
    )
    monkeypatch.setattr(trigger, "_hook", Hook)

    event = _first_event(trigger)
    assert event["dependencies"] == ["kafka"] and event["reason"] == "kafka: refused"
    assert calls == ["alert:kafka: refused", "renew", "renew", "renew"]
    asyncio.run(trigger.on_kill())
    assert calls[-1] == f"release:{HANDLE.fencing_token}"


def _scripted_health_trigger(
    monkeypatch: pytest.MonkeyPatch,
    reads: list[object],
    renewed: list[int],
    *,
    poll_interval_seconds: float,
) -> SparkJobHealthTrigger:
    """A health trigger whose hook answers ``reads`` in turn (the last one from then on; an
    exception is raised) and notes each lease renewal in ``renewed``."""
    from streamops.supervision.job_health import JobHealth

    class Hook:
        def read_health(self, handle: JobHandle) -> JobHealth:
            answer = reads.pop(0) if len(reads) > 1 else reads[0]
            if isinstance(answer, Exception):
                raise answer
            assert isinstance(answer, JobHealth)
            return answer

        def renew(self, handle: JobHandle) -> None:
            renewed.append(1)

        def exit_watch_pids(self, handle: JobHandle) -> list[int]:
            return []

        def publish_overload_alert(self, health: JobHealth) -> None:
            raise AssertionError("not overloaded")

    trigger = SparkJobHealthTrigger(
        pipeline="orders", handle=HANDLE.to_dict(), poll_interval_seconds=poll_interval_seconds
    )
    monkeypatch.setattr(trigger, "_hook", Hook)
    return trigger


def test_a_stall_read_just_after_redis_came_back_is_held_not_acted_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While Redis was away the job could not refresh its reports: the first reads after it
    answers again show old times, and a live job must not be restarted on them."""

    from streamops_airflow import triggers

    from streamops.supervision.job_health import HealthStatus, JobHealth

    monkeypatch.setattr(triggers, "STALE_AFTER_OUTAGE_SECONDS", 0.05)
    stalled = JobHealth(HealthStatus.STALLED, "q: no batch started for 129 s (allowed 60 s)")
    reads: list[object] = [ConnectionError("Redis away"), stalled, stalled]
    renewed: list[int] = []
    trigger = _scripted_health_trigger(monkeypatch, reads, renewed, poll_interval_seconds=0.03)

    event = _first_event(trigger)
    # Held (renewed, no event) inside the grace, acted on once it was over and still stalled.
    assert renewed
    assert event["status"] == "stalled"


def test_a_stall_read_just_after_the_clock_stepped_is_held_not_acted_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step of the wall clock (a time synchronisation, a resumed VM) ages every heartbeat by
    the step at once: a live job must not be restarted on that."""

    from streamops_airflow import triggers

    from streamops.supervision.job_health import HealthStatus, JobHealth

    monkeypatch.setattr(triggers, "STALE_AFTER_OUTAGE_SECONDS", 0.05)
    offsets = [1000.0, 1000.0, 1300.0]  # the clock stepped 300 s before the third poll
    monkeypatch.setattr(triggers, "clock_offset", lambda: offsets.pop(0) if offsets else 1300.0)
    healthy = JobHealth(HealthStatus.HEALTHY, "q: batch 2 s ago")
    stalled = JobHealth(HealthStatus.STALLED, "q: no batch started for 305 s (allowed 60 s)")
    reads: list[object] = [healthy, stalled]
    renewed: list[int] = []
    trigger = _scripted_health_trigger(monkeypatch, reads, renewed, poll_interval_seconds=0.02)

    event = _first_event(trigger)
    # The healthy poll and at least one held stall were renewed; acted on after the grace.
    assert len(renewed) >= 2
    assert event["status"] == "stalled"


def test_a_stall_without_an_outage_is_acted_on_at_once(monkeypatch: pytest.MonkeyPatch) -> None:

    from streamops.supervision.job_health import HealthStatus, JobHealth

    class Hook:
        def read_health(self, handle: JobHandle) -> JobHealth:
            return JobHealth(HealthStatus.STALLED, "q: no batch started for 90 s (allowed 60 s)")

    trigger = SparkJobHealthTrigger(pipeline="orders", handle=HANDLE.to_dict())
    monkeypatch.setattr(trigger, "_hook", Hook)

    assert _first_event(trigger)["status"] == "stalled"


def _first_event(trigger: Any) -> dict[str, object]:
    """Run ``trigger`` until its first event; that event's payload."""
    import asyncio

    async def first() -> dict[str, object]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())
