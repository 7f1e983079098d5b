"""The restart policy's state machine: backoff, jitter, stable-run reset, breaker, reset."""

from __future__ import annotations

import random

import pytest

from streamops.supervision.restart import (
    Action,
    DependencyDown,
    Failed,
    InvalidTransitionError,
    OperatorReset,
    Phase,
    Refused,
    RestartState,
    Started,
    Stopped,
    backoff_seconds,
    transition,
)
from streamops.supervision.spec import RestartPolicy

POLICY = RestartPolicy(
    initial_backoff_seconds=5,
    max_backoff_seconds=60,
    backoff_multiplier=2,
    jitter_ratio=0,
    stable_run_seconds=600,
    max_failures=4,
    failure_window_seconds=300,
)


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _run(state: RestartState, now: float) -> RestartState:
    return transition(POLICY, state, Started(), now).state


def _crash(state: RestartState, now: float, policy: RestartPolicy = POLICY):  # type: ignore[no-untyped-def]
    return transition(policy, state, Failed("boom"), now, FixedRandom(0.5))


def test_first_start_runs() -> None:
    state = _run(RestartState(), 100.0)
    assert state.phase is Phase.RUNNING
    assert state.running_since == 100.0
    assert state.restarts_total == 0


def test_backoff_doubles_and_is_capped() -> None:
    delays = []
    state, now = _run(RestartState(), 0.0), 0.0
    wide = POLICY.model_copy(update={"max_failures": 100, "failure_window_seconds": 1})
    for _ in range(6):
        decision = _crash(state, now, wide)
        assert decision.action is Action.RESTART_LATER
        assert decision.state.next_restart_at == now + decision.delay_seconds  # type: ignore[operator]
        delays.append(decision.delay_seconds)
        now += 10
        state = transition(wide, decision.state, Started(), now).state
    assert delays == [5, 10, 20, 40, 60, 60]
    assert state.restarts_total == 6


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 8.0), (0.5, 10.0), (0.999999, 12.0)])
def test_jitter_spreads_the_delay_by_the_ratio(draw: float, expected: float) -> None:
    policy = POLICY.model_copy(update={"jitter_ratio": 0.2})
    assert backoff_seconds(policy, 2, FixedRandom(draw)) == pytest.approx(expected, abs=1e-4)


def test_jitter_never_exceeds_the_cap_or_goes_negative() -> None:
    policy = POLICY.model_copy(update={"jitter_ratio": 1.0})
    rng = random.Random(7)
    for failures in range(1, 12):
        delay = backoff_seconds(policy, failures, rng)
        assert 0 <= delay <= policy.max_backoff_seconds


def test_same_rng_seed_same_decisions() -> None:
    policy = POLICY.model_copy(update={"jitter_ratio": 0.5})
    state = _run(RestartState(), 0.0)
    first = transition(policy, state, Failed(), 1.0, random.Random(42))
    second = transition(policy, state, Failed(), 1.0, random.Random(42))
    assert first == second


def test_a_stable_run_resets_the_failure_counter() -> None:
    wide = POLICY.model_copy(update={"failure_window_seconds": 1})
    state = _run(RestartState(), 0.0)
    for now in (10.0, 20.0, 30.0):
        state = _run(_crash(state, now, wide).state, now + 1)
    assert state.consecutive_failures == 3
    # Runs for longer than stable_run_seconds, then fails: back to the first backoff.
    decision = _crash(state, 31.0 + POLICY.stable_run_seconds, wide)
    assert decision.state.consecutive_failures == 1
    assert decision.delay_seconds == POLICY.initial_backoff_seconds
    assert decision.notes and "stable" in decision.notes[0]


def test_short_runs_keep_counting() -> None:
    state = _run(RestartState(), 0.0)
    decision = _crash(state, POLICY.stable_run_seconds - 1)
    assert decision.state.consecutive_failures == 1
    state = _run(decision.state, POLICY.stable_run_seconds)
    assert _crash(state, POLICY.stable_run_seconds + 1).state.consecutive_failures == 2


def test_breaker_opens_after_k_failures_within_the_window() -> None:
    state, now = _run(RestartState(), 0.0), 0.0
    for _ in range(POLICY.max_failures - 1):
        now += 20
        decision = _crash(state, now)
        assert decision.action is Action.RESTART_LATER
        state = _run(decision.state, now + 1)
    decision = _crash(state, now + 20)
    assert decision.action is Action.OPEN_BREAKER
    assert decision.state.phase is Phase.BREAKER_OPEN
    assert decision.state.breaker_opened_at == now + 20
    assert decision.state.last_failure_reason == "boom"
    assert decision.state.next_restart_at is None


def test_failures_spread_beyond_the_window_do_not_open_the_breaker() -> None:
    state, now = _run(RestartState(), 0.0), 0.0
    for _ in range(3 * POLICY.max_failures):
        now += POLICY.failure_window_seconds / (POLICY.max_failures - 1) + 1
        decision = _crash(state, now)
        assert decision.action is Action.RESTART_LATER
        assert len(decision.state.failure_times) < POLICY.max_failures
        state = _run(decision.state, now + 1)


def test_an_open_breaker_refuses_starts_and_ignores_more_failures() -> None:
    state = RestartState(phase=Phase.BREAKER_OPEN, breaker_opened_at=5.0, consecutive_failures=4)
    with pytest.raises(InvalidTransitionError, match="breaker is open"):
        transition(POLICY, state, Started(), 10.0)
    assert _crash(state, 10.0).state == state
    assert _crash(state, 10.0).action is Action.NONE
    assert transition(POLICY, state, Stopped(), 10.0).state == state


def test_operator_reset_closes_the_breaker_and_clears_the_history() -> None:
    state = RestartState(
        phase=Phase.BREAKER_OPEN,
        breaker_opened_at=5.0,
        consecutive_failures=4,
        failure_times=(1.0, 2.0, 3.0, 5.0),
        restarts_total=3,
    )
    reset = transition(POLICY, state, OperatorReset(), 10.0).state
    assert reset == RestartState(restarts_total=3)
    assert _run(reset, 11.0).phase is Phase.RUNNING


def test_a_graceful_stop_is_not_a_failure_and_keeps_the_history() -> None:
    state = _crash(_run(RestartState(), 0.0), 10.0).state
    state = _run(state, 20.0)
    stopped = transition(POLICY, state, Stopped(), 30.0).state
    assert stopped.phase is Phase.STOPPED
    assert stopped.failure_times == (10.0,)
    assert stopped.running_since is None


def test_a_launch_that_fails_at_once_counts() -> None:
    decision = _crash(RestartState(), 1.0)
    assert decision.action is Action.RESTART_LATER
    assert decision.state.consecutive_failures == 1


def test_reattaching_to_a_running_job_keeps_its_start_time() -> None:
    state = _run(RestartState(), 0.0)
    assert _run(state, 50.0).running_since == 0.0


def test_state_round_trips_through_json_ready_dicts() -> None:
    state = _crash(_run(RestartState(), 0.0), 10.0).state
    assert RestartState.from_dict(state.to_dict()) == state
    assert RestartState.from_dict({}) == RestartState()


# --- outages apart from crashes ---------------------------------------------------------------

MARIADB_DOWN = DependencyDown(("mariadb",), "mariadb: Can't connect to server", confirmed=True)


def test_an_outage_waits_without_counting_toward_the_breaker() -> None:
    running = RestartState(phase=Phase.RUNNING, running_since=0.0, failure_times=(90.0,))
    decision = transition(POLICY, running, MARIADB_DOWN, 100.0)
    assert decision.action is Action.WAIT_FOR_DEPENDENCIES and decision.delay_seconds is None
    state = decision.state
    assert state.phase is Phase.WAITING and state.waiting_for == ("mariadb",)
    assert state.failure_times == (90.0,) and state.consecutive_failures == 0
    assert state.outages_total == 1 and state.waiting_since == 100.0
    # Any number of outages never opens the breaker.
    for now in range(101, 101 + 3 * POLICY.max_failures):
        state = transition(POLICY, state, MARIADB_DOWN, float(now)).state
    assert state.phase is Phase.WAITING and state.waiting_since == 100.0
    assert state.outages_total == 1 + 3 * POLICY.max_failures
    # Back: the relaunch is a restart; the waiting is over.
    started = transition(POLICY, state, Started(), 200.0).state
    assert started.phase is Phase.RUNNING and started.restarts_total == 1
    assert started.waiting_for == () and started.waiting_since is None


def test_an_outage_only_the_failure_names_is_excused_a_bounded_number_of_times() -> None:
    named = DependencyDown(("redis",), "failed: redis.exceptions.ConnectionError", confirmed=False)
    state = RestartState(phase=Phase.RUNNING, running_since=0.0)
    for i in range(POLICY.max_failures):
        decision = transition(POLICY, state, named, 10.0 + i)
        assert decision.action is Action.WAIT_FOR_DEPENDENCIES
        # The dependency answers already, yet the relaunch waits a backoff all the same.
        assert decision.delay_seconds == POLICY.initial_backoff_seconds * 2**i
        assert decision.state.next_restart_at == 10.0 + i + decision.delay_seconds
        state = transition(POLICY, decision.state, Started(), 10.5 + i).state
    # One more within the window: the dependency answered every time, so the job is at fault.
    decision = transition(POLICY, state, named, 20.0)
    assert decision.action is Action.RESTART_LATER
    assert decision.state.failure_times == (20.0,)
    assert "counted" in (decision.state.last_failure_reason or "")
    # Outside the window the excuse holds again.
    later = transition(POLICY, decision.state, Started(), 21.0).state
    again = transition(POLICY, later, named, 20.0 + POLICY.failure_window_seconds + 1)
    assert again.action is Action.WAIT_FOR_DEPENDENCIES


def test_an_outage_leaves_an_open_breaker_open() -> None:
    open_ = RestartState(phase=Phase.BREAKER_OPEN, breaker_opened_at=5.0)
    assert transition(POLICY, open_, MARIADB_DOWN, 10.0).state == open_


def test_the_waiting_state_survives_a_round_trip_and_old_rows_still_load() -> None:
    state = transition(POLICY, RestartState(phase=Phase.RUNNING), MARIADB_DOWN, 7.0).state
    assert RestartState.from_dict(state.to_dict()) == state
    old_row = {"phase": "running", "consecutive_failures": 1, "restarts_total": 2}
    loaded = RestartState.from_dict(old_row)
    assert loaded.waiting_for == () and loaded.outages_total == 0


def test_a_refusal_opens_the_breaker_at_once() -> None:
    """A job that refused to start (its schema is not the code's) would refuse again: no
    backoff, no second launch, whatever the failure count."""
    running = _run(RestartState(), 100.0)

    decision = transition(POLICY, running, Refused("lacks 0011_x.sql"), 101.0)

    assert decision.action is Action.OPEN_BREAKER
    assert decision.state.phase is Phase.BREAKER_OPEN
    assert decision.state.breaker_opened_at == 101.0
    assert decision.state.last_failure_reason == "lacks 0011_x.sql"
    assert decision.state.failure_times == (101.0,)
    with pytest.raises(InvalidTransitionError):
        transition(POLICY, decision.state, Started(), 102.0)
    # Only the operator's reset (after the migration) lets it start again.
    reset = transition(POLICY, decision.state, OperatorReset(), 200.0).state
    assert transition(POLICY, reset, Started(), 201.0).state.phase is Phase.RUNNING


def test_a_failure_after_a_healthy_run_restarts_at_once_and_still_counts() -> None:
    """A job that ran healthy is no crash loop: no backoff, but the breaker counts it."""
    state = _run(RestartState(), 0.0)
    state = _crash(state, 10.0).state  # failed before it got healthy: 5 s
    state = _run(state, 15.0)
    decision = transition(POLICY, state, Failed("killed", after_healthy=True), 60.0)
    assert decision.action is Action.RESTART_LATER
    assert decision.delay_seconds == 0.0
    assert decision.state.consecutive_failures == 1  # counted again from this failure
    assert decision.state.failure_times == (10.0, 60.0)
    # The next failure before the job got healthy backs off from the counter kept.
    again = _crash(_run(decision.state, 60.0), 70.0)
    assert again.delay_seconds == 10.0
    # Healthy before each failure or not, the breaker opens at max_failures (4 here).
    last = transition(POLICY, _run(again.state, 75.0), Failed("killed", after_healthy=True), 80.0)
    assert last.action is Action.OPEN_BREAKER
    assert last.state.phase is Phase.BREAKER_OPEN


def test_restart_after_healthy_is_a_setting() -> None:
    policy = POLICY.model_copy(update={"restart_after_healthy_seconds": 3.0})
    state = transition(policy, RestartState(), Started(), 0.0).state
    decision = transition(policy, state, Failed("killed", after_healthy=True), 30.0)
    assert decision.delay_seconds == 3.0
