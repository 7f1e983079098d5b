"""The restart policy of a supervised job as a pure state machine.

``transition(policy, state, event, now, rng)`` returns the next state and what the supervisor must
do; it reads no clock and no database (``now`` is epoch seconds, ``rng`` draws the jitter), so
every path — backoff, the stable-run reset, the breaker, the operator's reset — is unit-tested
with plain numbers. The supervisor (``StreamingJobOperator``) persists the state between steps.

States::

    stopped ──Started──▶ running ──Failed──▶ backing_off ──Started──▶ running
                            │  ▲                  │
                            │  └─────Started──────┘
                            ├──Stopped──▶ stopped
                            └──Failed (K within window)──▶ breaker_open ──OperatorReset──▶ stopped
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from streamops.pipelines.spec import RestartPolicy


class Phase(StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    BREAKER_OPEN = "breaker_open"


class Action(StrEnum):
    NONE = "none"
    # Wait until state.next_restart_at, then launch from the checkpoint.
    RESTART_LATER = "restart_later"
    # Crash loop: no more restarts, fail the run, alert.
    OPEN_BREAKER = "open_breaker"


class Random(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class Started:
    """The job was launched (or reattached to) and runs."""


@dataclass(frozen=True)
class Failed:
    """The job died, stalled or reported an exception."""

    reason: str = ""


@dataclass(frozen=True)
class Stopped:
    """The job was stopped on request (graceful stop, exit 0): not a failure."""


@dataclass(frozen=True)
class OperatorReset:
    """An operator closed the breaker (or cleared the failure history)."""


Event = Started | Failed | Stopped | OperatorReset


class InvalidTransitionError(ValueError):
    """The event cannot happen in this state, e.g. a start while the breaker is open."""


@dataclass(frozen=True)
class RestartState:
    phase: Phase = Phase.STOPPED
    # Failures since the last stable run; drives the backoff.
    consecutive_failures: int = 0
    # Epoch seconds of the failures inside the breaker's window, oldest first.
    failure_times: tuple[float, ...] = ()
    running_since: float | None = None
    next_restart_at: float | None = None
    breaker_opened_at: float | None = None
    last_failure_reason: str | None = None
    restarts_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "consecutive_failures": self.consecutive_failures,
            "failure_times": list(self.failure_times),
            "running_since": self.running_since,
            "next_restart_at": self.next_restart_at,
            "breaker_opened_at": self.breaker_opened_at,
            "last_failure_reason": self.last_failure_reason,
            "restarts_total": self.restarts_total,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestartState:
        return cls(
            phase=Phase(data.get("phase", Phase.STOPPED)),
            consecutive_failures=int(data.get("consecutive_failures", 0)),
            failure_times=tuple(float(t) for t in data.get("failure_times", ())),
            running_since=_optional_float(data.get("running_since")),
            next_restart_at=_optional_float(data.get("next_restart_at")),
            breaker_opened_at=_optional_float(data.get("breaker_opened_at")),
            last_failure_reason=data.get("last_failure_reason"),
            restarts_total=int(data.get("restarts_total", 0)),
        )


@dataclass(frozen=True)
class Decision:
    state: RestartState
    action: Action = Action.NONE
    # Seconds from now until the restart, for RESTART_LATER.
    delay_seconds: float | None = None
    notes: tuple[str, ...] = field(default=())


def backoff_seconds(policy: RestartPolicy, failures: int, rng: Random) -> float:
    """Delay before restart number ``failures`` (1-based): exponential, capped, then jittered.

    The jitter is ±``jitter_ratio`` of the capped delay, and the result never exceeds the cap, so
    ``max_backoff_seconds`` stays a promise to the operator.
    """
    exponent = max(0, failures - 1)
    base = min(
        policy.max_backoff_seconds,
        policy.initial_backoff_seconds * policy.backoff_multiplier**exponent,
    )
    jitter = base * policy.jitter_ratio * (2.0 * rng.random() - 1.0)
    return max(0.0, min(policy.max_backoff_seconds, base + jitter))


def is_stable(policy: RestartPolicy, state: RestartState, now: float) -> bool:
    return (
        state.running_since is not None and now - state.running_since >= policy.stable_run_seconds
    )


def transition(
    policy: RestartPolicy,
    state: RestartState,
    event: Event,
    now: float,
    rng: Random | None = None,
) -> Decision:
    """The next state for ``event`` at ``now``; raises InvalidTransitionError when impossible."""
    rng = rng if rng is not None else random.Random()
    match event:
        case OperatorReset():
            # Whatever the phase: the operator takes responsibility for the next start.
            return Decision(RestartState(restarts_total=state.restarts_total))
        case Started():
            if state.phase is Phase.BREAKER_OPEN:
                raise InvalidTransitionError(
                    "the circuit breaker is open; an operator must reset it before a start"
                )
            restarted = state.phase is Phase.BACKING_OFF
            return Decision(
                replace(
                    state,
                    phase=Phase.RUNNING,
                    running_since=now if state.phase is not Phase.RUNNING else state.running_since,
                    next_restart_at=None,
                    restarts_total=state.restarts_total + (1 if restarted else 0),
                )
            )
        case Stopped():
            if state.phase is Phase.BREAKER_OPEN:
                return Decision(state)
            # A deliberate stop keeps the failure history: stop/start must not dodge the breaker.
            return Decision(
                replace(state, phase=Phase.STOPPED, running_since=None, next_restart_at=None)
            )
        case Failed(reason=reason):
            return _failed(policy, state, reason, now, rng)
    raise InvalidTransitionError(f"unknown event {event!r}")  # pragma: no cover


def _failed(
    policy: RestartPolicy, state: RestartState, reason: str, now: float, rng: Random
) -> Decision:
    if state.phase is Phase.BREAKER_OPEN:
        return Decision(state)
    # From stopped or backing_off too: a launch that fails at once is a failure like any other.
    notes: list[str] = []
    consecutive = state.consecutive_failures
    if is_stable(policy, state, now):
        consecutive = 0
        notes.append("the run was stable: the failure counter starts again")
    window_start = now - policy.failure_window_seconds
    failure_times = (*(t for t in state.failure_times if t > window_start), now)
    consecutive += 1
    if len(failure_times) >= policy.max_failures:
        return Decision(
            replace(
                state,
                phase=Phase.BREAKER_OPEN,
                consecutive_failures=consecutive,
                failure_times=failure_times,
                running_since=None,
                next_restart_at=None,
                breaker_opened_at=now,
                last_failure_reason=reason,
            ),
            Action.OPEN_BREAKER,
            notes=(
                *notes,
                f"{len(failure_times)} failures within {policy.failure_window_seconds:g} s",
            ),
        )
    delay = backoff_seconds(policy, consecutive, rng)
    return Decision(
        replace(
            state,
            phase=Phase.BACKING_OFF,
            consecutive_failures=consecutive,
            failure_times=failure_times,
            running_since=None,
            next_restart_at=now + delay,
            last_failure_reason=reason,
        ),
        Action.RESTART_LATER,
        delay_seconds=delay,
        notes=tuple(notes),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
