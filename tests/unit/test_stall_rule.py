"""The stall rule: busy, idle, stalled, replaying and overloaded queries (pure, no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.common.query_status import BatchTracker, planned_rows
from streamops.supervision.job_health import (
    HealthStatus,
    JobHealth,
    StallBounds,
    classify_health,
)
from streamops.supervision.spec import load_specs

START = 10_000.0
BOUNDS = StallBounds(
    heartbeat_max_age_seconds=60.0,
    startup_grace_seconds=180.0,
    max_batch_seconds=240.0,
    replay_rows_per_second=500.0,
    overload_load_per_core=2.0,
    overload_stretch=4.0,
)


def judge(states: dict[str, dict[str, str]], now: float, load: float | None = 0.5) -> JobHealth:
    return classify_health(
        alive=True,
        exit_code=None,
        query_states=states,
        now=now,
        process_start_epoch=START,
        bounds=BOUNDS,
        load_per_core=load,
    )


def query(
    *,
    status_at: float,
    active: bool,
    batch_started_at: float | None = None,
    heartbeat_at: float | None = None,
    rows: int | None = None,
    first_batch: bool = False,
    last_trigger_at: float | None = None,
) -> dict[str, str]:
    fields: dict[str, Any] = {
        "state": "running",
        "status_at": status_at,
        "trigger_active": "1" if active else "0",
        "batch_started_at": batch_started_at,
        "batch_planned_rows": rows,
        "first_batch": "1" if first_batch else "0",
        "last_trigger_at": last_trigger_at,
        "heartbeat_at": heartbeat_at,
    }
    return {k: "" if v is None else str(v) for k, v in fields.items()}


# --- busy is not stalled ------------------------------------------------------------------------


def test_a_query_inside_a_long_batch_is_busy_not_stalled() -> None:
    # No progress event for 200 s (the batch has not ended), but the driver reports it running.
    now = START + 500
    states = {"q": query(status_at=now - 2, active=True, batch_started_at=now - 200)}
    health = judge(states, now)
    assert health.status is HealthStatus.HEALTHY
    assert health.detail.startswith("busy: q batch running 200 s")


def test_a_batch_past_its_allowance_is_stalled() -> None:
    now = START + 1000
    states = {"q": query(status_at=now - 2, active=True, batch_started_at=now - 241)}
    health = judge(states, now)
    assert health.status is HealthStatus.STALLED
    assert health.detail == "q: one batch running for 241 s (allowed 240 s)"


def test_an_idle_query_with_fresh_idle_events_is_healthy() -> None:
    now = START + 600
    states = {"q": query(status_at=now - 1, active=False, heartbeat_at=now - 8)}
    assert judge(states, now).status is HealthStatus.HEALTHY


def test_no_batch_started_within_the_bound_is_a_stall() -> None:
    now = START + 600
    states = {
        "q": query(status_at=now - 1, active=False, heartbeat_at=now - 90, last_trigger_at=now - 80)
    }
    health = judge(states, now)
    assert health.status is HealthStatus.STALLED
    assert health.detail == "q: no batch started for 80 s (allowed 60 s)"


def test_a_trigger_seen_recently_counts_as_activity_even_if_events_lag() -> None:
    # The listener bus is behind (heartbeat 90 s old) but the driver saw a trigger 5 s ago.
    now = START + 600
    states = {
        "q": query(status_at=now - 1, active=False, heartbeat_at=now - 90, last_trigger_at=now - 5)
    }
    assert judge(states, now).status is HealthStatus.HEALTHY


def test_a_driver_that_stopped_reporting_is_stalled_even_mid_batch() -> None:
    now = START + 600
    states = {"q": query(status_at=now - 61, active=True, batch_started_at=now - 70)}
    health = judge(states, now)
    assert health.status is HealthStatus.STALLED
    assert "the driver has not reported its status for 61 s" in health.detail


# --- replay after a restart ---------------------------------------------------------------------


def test_the_first_batch_of_a_run_gets_the_grace_and_time_for_its_rows() -> None:
    # 100,000 rows at 500 rows/s = 200 s, + 240 s floor + 180 s start-up grace = 620 s.
    now = START + 700
    replay = query(
        status_at=now - 1, active=True, batch_started_at=START + 90, rows=100_000, first_batch=True
    )
    assert judge({"q": replay}, now).status is HealthStatus.HEALTHY
    later = now + 20  # 630 s into the batch
    replay_late = {**replay, "status_at": str(later - 1)}
    health = judge({"q": replay_late}, later)
    assert health.status is HealthStatus.STALLED
    assert "(allowed 620 s)" in health.detail


def test_the_allowance_grows_with_the_backlog() -> None:
    small = BOUNDS.batch_allowance(1_000, first_batch=False)
    large = BOUNDS.batch_allowance(1_000_000, first_batch=False)
    assert small == pytest.approx(242.0)
    assert large == pytest.approx(2240.0)
    assert BOUNDS.batch_allowance(None, first_batch=True) == pytest.approx(420.0)


def test_nothing_from_this_run_is_starting_then_stalled() -> None:
    old = {"q": {"heartbeat_at": str(START - 30), "status_at": str(START - 30), "state": "failed"}}
    assert judge(old, START + 100).status is HealthStatus.STARTING
    late = judge(old, START + 181)
    assert late.status is HealthStatus.STALLED
    assert "no heartbeat 181 s after the start" in late.detail


def test_a_query_not_triggered_yet_is_starting_within_the_grace() -> None:
    # The JVM took 150 s to start; the driver reports the query, which has not triggered yet.
    initializing = {"q": query(status_at=START + 150, active=False, first_batch=True)}
    assert judge(initializing, START + 152).status is HealthStatus.STARTING
    late = judge({"q": {**initializing["q"], "status_at": str(START + 185)}}, START + 186)
    assert late.status is HealthStatus.STALLED
    assert "no heartbeat 186 s after the start" in late.detail


def test_a_job_without_status_fields_is_judged_by_its_heartbeat() -> None:
    now = START + 500
    fresh = {"q": {"state": "running", "heartbeat_at": str(now - 10)}}
    old = {"q": {"state": "running", "heartbeat_at": str(now - 61)}}
    assert judge(fresh, now).status is HealthStatus.HEALTHY
    assert judge(old, now).detail == "q: no progress for 61 s (allowed 60 s)"


# --- overload -----------------------------------------------------------------------------------


def test_a_slow_query_on_an_overloaded_machine_is_overloaded_not_restarted() -> None:
    now = START + 1000
    states = {"q": query(status_at=now - 2, active=True, batch_started_at=now - 300)}
    health = judge(states, now, load=10.5)
    assert health.status is HealthStatus.OVERLOADED
    assert not health.status.needs_action
    assert "load 10.5 per core" in health.detail
    assert "one batch running for 300 s" in health.detail


def test_overload_stretches_the_bound_but_a_real_hang_is_still_caught() -> None:
    now = START + 5000
    hung = {"q": query(status_at=now - 2, active=True, batch_started_at=now - 961)}  # > 4 × 240
    health = judge(hung, now, load=10.0)
    assert health.status is HealthStatus.STALLED
    assert health.status.needs_action


def test_an_unknown_load_never_says_overloaded() -> None:
    now = START + 1000
    states = {"q": query(status_at=now - 2, active=True, batch_started_at=now - 300)}
    assert judge(states, now, load=None).status is HealthStatus.STALLED


def test_a_failure_beats_overload() -> None:
    now = START + 1000
    failed = query(status_at=now - 2, active=False, heartbeat_at=now - 1)
    failed["last_exception"] = "StreamingQueryException: boom"
    health = judge({"q": failed}, now, load=9.0)
    assert health.status is HealthStatus.FAILED


# --- the tracker and the planned rows ------------------------------------------------------------


def test_the_tracker_dates_a_batch_from_its_first_active_look() -> None:
    tracker = BatchTracker()
    assert tracker.observe(100.0, active=False, completed_batch_id=None) is False
    assert tracker.first_batch
    assert tracker.observe(101.0, active=True, completed_batch_id=None) is True
    assert tracker.observe(102.0, active=True, completed_batch_id=None) is False
    assert tracker.batch_started_at == 101.0
    # Back to back: batch 0 ended and batch 1 runs between two looks.
    assert tracker.observe(103.0, active=True, completed_batch_id=0) is True
    assert tracker.batch_started_at == 103.0
    assert not tracker.first_batch
    tracker.observe(104.0, active=False, completed_batch_id=1)
    assert tracker.batch_started_at is None
    assert tracker.last_trigger_at == 103.0


def _offsets(folder: Path, batch: int, partitions: dict[str, int]) -> None:
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": 1}
    lines = ["v1", json.dumps(meta), json.dumps({"orders": partitions})]
    (folder / str(batch)).write_text("\n".join(lines))


def test_planned_rows_is_the_newest_batch_less_the_one_before(tmp_path: Path) -> None:
    _offsets(tmp_path, 4, {"0": 100, "1": 50})
    _offsets(tmp_path, 5, {"0": 40_100, "1": 60_050})
    assert planned_rows(tmp_path, completed_batch_id=4) == 100_000
    # The running batch has not written its offsets yet: unknown, not the previous batch's.
    assert planned_rows(tmp_path, completed_batch_id=5) is None
    assert planned_rows(tmp_path / "missing", completed_batch_id=None) is None


def test_planned_rows_of_a_first_batch_without_a_predecessor_is_unknown(tmp_path: Path) -> None:
    _offsets(tmp_path, 0, {"0": 10})
    assert planned_rows(tmp_path, completed_batch_id=None) is None


def test_every_shipped_spec_keeps_the_stall_bound_tight() -> None:
    # A hung query must be caught within minutes, not hours, even on a loaded machine.
    for spec in load_specs().values():
        bounds = spec.stall_bounds
        assert bounds.heartbeat_max_age_seconds <= 120, spec.name
        assert bounds.max_batch_seconds <= 600, spec.name
        assert bounds.overload_stretch * bounds.max_batch_seconds <= 2400, spec.name


# --- the start gate -------------------------------------------------------------------------------


def test_a_job_is_starting_until_every_query_completed_a_batch_of_this_run() -> None:
    from streamops.supervision.job_processes import is_starting

    warm = query(status_at=START + 50, active=False, first_batch=False)
    first = query(status_at=START + 50, active=True, first_batch=True)
    previous_run = query(status_at=START - 5, active=False, first_batch=False)
    assert not is_starting({"a": warm, "b": warm}, START)
    assert is_starting({"a": warm, "b": first}, START)
    assert is_starting({"a": warm, "b": previous_run}, START)
    assert is_starting({"a": warm, "b": {}}, START)
    # A query whose topic is quiet never completes a batch; an idle event of this run is enough.
    idle = {**first, "trigger_active": "0", "heartbeat_at": str(START + 40)}
    assert not is_starting({"a": warm, "b": idle}, START)


# --- a corrupted heartbeat is reported, never trusted -------------------------------------------


def test_a_heartbeat_from_the_future_does_not_keep_a_dead_query_fresh() -> None:
    # Without the status, only the (impossible) heartbeat would say "fresh": not trusted, the
    # query has reported nothing of this run, and the start-up grace is long over.
    now = START + 600
    states = {"q": {"state": "running", "heartbeat_at": str(now + 86_400)}}
    health = judge(states, now)
    assert health.status is HealthStatus.STALLED
    assert "corrupted heartbeat, not trusted: heartbeat_at=" in health.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status_at", "yesterday"),
        ("status_at", "nan"),
        ("batch_started_at", "-5"),
        ("batch_planned_rows", "inf"),
        ("trigger_active", "yes"),
    ],
)
def test_corrupted_fields_are_left_out_and_named(field: str, value: str) -> None:
    now = START + 600
    fields = query(status_at=now - 1, active=False, heartbeat_at=now - 8)
    fields[field] = value
    health = judge({"q": fields}, now)
    assert f"{field}={value!r}" in health.detail
    assert "corrupted heartbeat, not trusted" in health.detail
    # The rest of the hash still speaks: a corrupted status time leaves the heartbeat to judge.
    assert health.status is HealthStatus.HEALTHY


def test_a_clean_hash_has_no_corrupted_fields() -> None:
    from streamops.supervision.job_health import corrupted_fields

    now = START + 600
    assert (
        corrupted_fields(query(status_at=now, active=True, batch_started_at=now, rows=3), now) == {}
    )


def test_a_report_seconds_ahead_after_the_clock_stepped_back_reads_as_now() -> None:
    # The clock stepped back 10 s: the last idle event is "2 s in the future". Healthy, and
    # said as 0 s ago, not -2 s.
    states = {"q": query(status_at=START + 100, active=False, heartbeat_at=START + 102)}
    health = judge(states, now=START + 100)
    assert health.status is HealthStatus.HEALTHY
    assert "q 0 s ago" in health.detail and "-" not in health.detail
