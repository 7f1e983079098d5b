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
                            ├──Failed (K within window)──▶ breaker_open ──OperatorReset──▶ stopped
                            ├──Refused──▶ breaker_open
                            └──DependencyDown──▶ waiting ──Started──▶ running

``waiting``: the job failed because Kafka, MariaDB, Redis or the disk was down. The supervisor
waits for that dependency's health and relaunches; the failure is not counted toward the breaker.
A failure whose text names a dependency that answers again by the time the supervisor looks is
excused too, but at most ``max_failures`` times within the failure window: a job that keeps
failing "because of" a dependency that always answers has a fault of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from streamops.supervision.spec import RestartPolicy


class Phase(StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    BREAKER_OPEN = "breaker_open"
    WAITING = "waiting"


class Action(StrEnum):
    NONE = "none"
    # Wait until state.next_restart_at, then launch from the checkpoint.
    RESTART_LATER = "restart_later"
    # Crash loop: no more restarts, fail the run, alert.
    OPEN_BREAKER = "open_breaker"
    # A dependency is down: wait for its health, then launch from the checkpoint.
    WAIT_FOR_DEPENDENCIES = "wait_for_dependencies"


class Random(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class Started:
    """The job was launched (or reattached to) and runs."""


@dataclass(frozen=True)
class Failed:
    """The job died, stalled or reported an exception.

    ``after_healthy``: the supervisor saw the job healthy (every query reporting) before this
    failure. Such a job is no crash loop: it restarts after ``restart_after_healthy_seconds``
    (by default at once) instead of the exponential backoff, and the breaker counts the failure
    all the same."""

    reason: str = ""
    after_healthy: bool = False


@dataclass(frozen=True)
class Stopped:
    """The job was stopped on request (graceful stop, exit 0): not a failure."""


@dataclass(frozen=True)
class Refused:
    """The job refused to start for a reason no restart fixes (exit ``EXIT_REFUSED``, e.g. a
    schema that is not the code's): the breaker opens at once, whatever the failure count."""

    reason: str = ""


@dataclass(frozen=True)
class OperatorReset:
    """An operator closed the breaker (or cleared the failure history)."""


@dataclass(frozen=True)
class DependencyDown:
    """The job failed because a dependency was down (see :mod:`streamops.supervision.dependencies`).

    ``confirmed``: a probe found it down now; otherwise only the failure's text names it.
    """

    dependencies: tuple[str, ...]
    reason: str = ""
    confirmed: bool = True


Event = Started | Failed | Refused | Stopped | OperatorReset | DependencyDown


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
    # Waiting for these dependencies (phase waiting) since waiting_since.
    waiting_for: tuple[str, ...] = ()
    waiting_since: float | None = None
    # Failures put down to an outage (never counted toward the breaker), and the last one's reason.
    outages_total: int = 0
    last_outage_reason: str | None = None
    # When failures were excused on their text alone (the dependency answered): the guard's window.
    unconfirmed_outage_times: tuple[float, ...] = ()

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
            "waiting_for": list(self.waiting_for),
            "waiting_since": self.waiting_since,
            "outages_total": self.outages_total,
            "last_outage_reason": self.last_outage_reason,
            "unconfirmed_outage_times": list(self.unconfirmed_outage_times),
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
            waiting_for=tuple(str(d) for d in data.get("waiting_for", ())),
            waiting_since=_optional_float(data.get("waiting_since")),
            outages_total=int(data.get("outages_total", 0)),
            last_outage_reason=data.get("last_outage_reason"),
            unconfirmed_outage_times=tuple(
                float(t) for t in data.get("unconfirmed_outage_times", ())
            ),
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
            restarted = state.phase in (Phase.BACKING_OFF, Phase.WAITING)
            return Decision(
                replace(
                    state,
                    phase=Phase.RUNNING,
                    running_since=now if state.phase is not Phase.RUNNING else state.running_since,
                    next_restart_at=None,
                    restarts_total=state.restarts_total + (1 if restarted else 0),
                    waiting_for=(),
                    waiting_since=None,
                )
            )
        case Stopped():
            if state.phase is Phase.BREAKER_OPEN:
                return Decision(state)
            # A deliberate stop keeps the failure history: stop/start must not dodge the breaker.
            return Decision(
                replace(
                    state,
                    phase=Phase.STOPPED,
                    running_since=None,
                    next_restart_at=None,
                    waiting_for=(),
                    waiting_since=None,
                )
            )
        case Failed(reason=reason, after_healthy=after_healthy):
            return _failed(policy, state, reason, now, rng, after_healthy=after_healthy)
        case Refused(reason=reason):
            if state.phase is Phase.BREAKER_OPEN:
                return Decision(state)
            return Decision(
                replace(
                    state,
                    phase=Phase.BREAKER_OPEN,
                    consecutive_failures=state.consecutive_failures + 1,
                    failure_times=(*state.failure_times, now),
                    running_since=None,
                    next_restart_at=None,
                    breaker_opened_at=now,
                    last_failure_reason=reason,
                    waiting_for=(),
                    waiting_since=None,
                ),
                Action.OPEN_BREAKER,
                notes=("the job refused to start: a restart would refuse again",),
            )
        case DependencyDown():
            return _dependency_down(policy, state, event, now, rng)
    raise InvalidTransitionError(f"unknown event {event!r}")  # pragma: no cover


def _failed(
    policy: RestartPolicy,
    state: RestartState,
    reason: str,
    now: float,
    rng: Random,
    *,
    after_healthy: bool = False,
) -> Decision:
    if state.phase is Phase.BREAKER_OPEN:
        return Decision(state)
    # From stopped or backing_off too: a launch that fails at once is a failure like any other.
    notes: list[str] = []
    consecutive = state.consecutive_failures
    if is_stable(policy, state, now):
        consecutive = 0
        notes.append("the run was stable: the failure counter starts again")
    elif after_healthy:
        consecutive = 0
        notes.append("the job ran healthy before it failed: restarted without the backoff")
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
    delay = (
        policy.restart_after_healthy_seconds
        if after_healthy
        else backoff_seconds(policy, consecutive, rng)
    )
    return Decision(
        replace(
            state,
            phase=Phase.BACKING_OFF,
            consecutive_failures=consecutive,
            failure_times=failure_times,
            running_since=None,
            next_restart_at=now + delay,
            last_failure_reason=reason,
            waiting_for=(),
            waiting_since=None,
        ),
        Action.RESTART_LATER,
        delay_seconds=delay,
        notes=tuple(notes),
    )


def _dependency_down(
    policy: RestartPolicy, state: RestartState, event: DependencyDown, now: float, rng: Random
) -> Decision:
    if state.phase is Phase.BREAKER_OPEN:
        return Decision(state)
    names = ", ".join(event.dependencies) or "a dependency"
    unconfirmed = state.unconfirmed_outage_times
    if not event.confirmed:
        window_start = now - policy.failure_window_seconds
        unconfirmed = (*(t for t in unconfirmed if t > window_start), now)
        if len(unconfirmed) > policy.max_failures:
            counted = _failed(
                policy,
                replace(state, unconfirmed_outage_times=unconfirmed),
                f"{event.reason} (counted: {len(unconfirmed)} failures within "
                f"{policy.failure_window_seconds:g} s named {names}, which answered each time)",
                now,
                rng,
            )
            return replace(counted, notes=(*counted.notes, "too many unconfirmed outages"))
    # Named only by the failure's text, the dependency answers already: wait a backoff before
    # the relaunch anyway, so repeated excuses cannot relaunch back to back.
    delay = backoff_seconds(policy, len(unconfirmed), rng) if not event.confirmed else None
    return Decision(
        replace(
            state,
            phase=Phase.WAITING,
            running_since=None,
            next_restart_at=None if delay is None else now + delay,
            waiting_for=tuple(event.dependencies),
            waiting_since=state.waiting_since if state.phase is Phase.WAITING else now,
            outages_total=state.outages_total + 1,
            last_outage_reason=event.reason,
            unconfirmed_outage_times=unconfirmed,
        ),
        Action.WAIT_FOR_DEPENDENCIES,
        delay_seconds=delay,
        notes=(f"waiting for {names}; not counted toward the breaker",),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
