"""The health trigger survives serialization, and the health rule it applies, without services."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from streamops_airflow.hooks import HealthStatus, JobHandle, JobHealth, classify_health
from streamops_airflow.triggers import LEASE_LOST, SparkJobHealthTrigger

from streamops.supervision.job_health import StallBounds

HANDLE = JobHandle(
    pipeline="orders",
    queries=("orders_records", "orders_revenue"),
    checkpoint_location="/ckpt/orders",
    owner="airflow:streamops_supervise_orders.supervise",
    fencing_token=7,
    host="worker-1",
    pid=4242,
    process_start_epoch=1_700_000_000.25,
    exit_file="/state/pipelines/orders/pid-4242.exit",
    log_file="/state/pipelines/orders/token-7.log",
)


def _trigger() -> SparkJobHealthTrigger:
    return SparkJobHealthTrigger(
        pipeline="orders", handle=HANDLE.to_dict(), poll_interval_seconds=2.5, specs_path="/p.yaml"
    )


def test_serialize_round_trips_through_the_classpath() -> None:
    classpath, kwargs = _trigger().serialize()
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls is SparkJobHealthTrigger
    rebuilt = cls(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert JobHandle.from_dict(rebuilt.handle) == HANDLE


def test_serialized_kwargs_are_plain_json() -> None:
    import json

    _classpath, kwargs = _trigger().serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_airflow_serializes_the_trigger() -> None:
    from airflow.serialization.serialized_objects import BaseSerialization

    _classpath, kwargs = _trigger().serialize()
    assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs


class FakeHook:
    def __init__(self, healths: list[JobHealth], renew_error: Exception | None = None) -> None:
        self.healths = healths
        self.renew_error = renew_error
        self.renewed = 0
        self.overload_alerts: list[str] = []

    def publish_overload_alert(self, health: JobHealth) -> None:
        self.overload_alerts.append(health.detail)

    def read_health(self, handle: JobHandle) -> JobHealth:
        return self.healths.pop(0)

    def exit_watch_pids(self, handle: JobHandle) -> list[int]:
        return []

    def renew(self, handle: JobHandle) -> None:
        self.renewed += 1
        if self.renew_error:
            raise self.renew_error


async def _first_event(trigger: SparkJobHealthTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def _payload(hook: FakeHook, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The first event of a trigger (polling without a pause) whose hook is ``hook``."""
    trigger = SparkJobHealthTrigger(
        pipeline="orders", handle=HANDLE.to_dict(), poll_interval_seconds=0
    )
    monkeypatch.setattr(trigger, "_hook", lambda: hook)
    return asyncio.run(_first_event(trigger))


def test_run_renews_while_healthy_and_fires_on_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(
        [
            JobHealth(HealthStatus.STARTING, "waiting"),
            JobHealth(HealthStatus.HEALTHY, "fine"),
            JobHealth(HealthStatus.STALLED, "no progress for 99 s"),
        ]
    )
    payload = _payload(hook, monkeypatch)
    assert payload == {
        "status": "stalled",
        "detail": "no progress for 99 s",
        "handle": HANDLE.to_dict(),
        "ran_healthy": True,
    }
    assert hook.renewed == 2


def test_a_job_that_never_got_healthy_is_reported_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator backs such a failure off (a crash loop in the making)."""
    hook = FakeHook(
        [
            JobHealth(HealthStatus.STARTING, "waiting"),
            JobHealth(HealthStatus.FAILED, "the job process was killed"),
        ]
    )
    payload = _payload(hook, monkeypatch)
    assert payload["status"] == "failed"
    assert payload["ran_healthy"] is False


def test_run_fires_when_the_lease_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamops.supervision.lease import LeaseLostError

    hook = FakeHook([JobHealth(HealthStatus.HEALTHY, "fine")], LeaseLostError("taken by x"))
    payload = _payload(hook, monkeypatch)
    assert payload["status"] == LEASE_LOST
    assert "taken by x" in payload["detail"]


def test_overload_is_reported_once_and_never_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(
        [
            JobHealth(HealthStatus.OVERLOADED, "machine overloaded: slow"),
            JobHealth(HealthStatus.OVERLOADED, "machine overloaded: slower"),
            JobHealth(HealthStatus.HEALTHY, "caught up"),
            JobHealth(HealthStatus.OVERLOADED, "machine overloaded: again"),
            JobHealth(HealthStatus.STALLED, "q: one batch running for 999 s"),
        ]
    )
    payload = _payload(hook, monkeypatch)
    # The lease was renewed through both overload episodes; one alert per episode.
    assert hook.renewed == 4
    assert hook.overload_alerts == ["machine overloaded: slow", "machine overloaded: again"]
    assert payload["status"] == "stalled"


# --- the health rule ----------------------------------------------------------------------------

START = 1000.0


def _health(states: dict[str, dict[str, str]], now: float, **overrides: Any) -> JobHealth:
    arguments: dict[str, Any] = {
        "alive": True,
        "exit_code": None,
        "query_states": states,
        "now": now,
        "process_start_epoch": START,
        "bounds": StallBounds(heartbeat_max_age_seconds=60.0, startup_grace_seconds=120.0),
    }
    return classify_health(**(arguments | overrides))


def _beat(at: float, state: str = "running", exception: str = "") -> dict[str, str]:
    return {"state": state, "heartbeat_at": f"{at:.3f}", "last_exception": exception}


def test_fresh_heartbeats_are_healthy() -> None:
    health = _health({"a": _beat(START + 100), "b": _beat(START + 90)}, START + 110)
    assert health.status is HealthStatus.HEALTHY


def test_an_old_heartbeat_is_a_stall() -> None:
    health = _health({"a": _beat(START + 100), "b": _beat(START + 20)}, START + 110)
    assert health.status is HealthStatus.STALLED
    assert health.detail.startswith("b: no progress for 90 s")


def test_a_reported_exception_is_a_failure_even_while_alive() -> None:
    states = {"a": _beat(START + 100, "failed", "StreamingQueryException: boom\n\tat ...")}
    health = _health(states, START + 101)
    assert health.status is HealthStatus.FAILED
    assert health.detail == "a failed: StreamingQueryException: boom"


def test_the_previous_runs_hash_is_ignored_within_the_grace() -> None:
    # The hash still says failed, but from before this process started.
    states = {"a": _beat(START - 50, "failed", "old"), "b": {}}
    assert _health(states, START + 30).status is HealthStatus.STARTING
    late = _health(states, START + 121)
    assert late.status is HealthStatus.STALLED
    assert "no heartbeat 121 s after the start" in late.detail


@pytest.mark.parametrize(
    ("exit_code", "status", "detail"),
    [
        (0, HealthStatus.STOPPED, "exit 0"),
        (1, HealthStatus.FAILED, "exited with 1"),
        (None, HealthStatus.FAILED, "was killed"),
    ],
)
def test_a_dead_process_is_stopped_only_with_exit_0(
    exit_code: int | None, status: HealthStatus, detail: str
) -> None:
    health = _health({}, START + 5, alive=False, exit_code=exit_code)
    assert health.status is status
    assert detail in health.detail
