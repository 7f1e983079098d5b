"""The health rule of a supervised streaming job, in one place.

The supervision hook (Airflow), ``streamops status`` and the operations page all judge a job the
same way, so the rule is a pure function here and everyone calls it:

- the process is gone → *stopped* with exit code 0 (the job's own SIGTERM path), else *failed*;
- a query reports an exception → *failed*;
- a query's heartbeat (written by the listener to Redis) is older than the spec allows →
  *stalled* (alive but not progressing counts as failed);
- heartbeats older than the process belong to an earlier run: *starting* during the start-up
  grace, *stalled* after it;
- otherwise *healthy*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class HealthStatus(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    STALLED = "stalled"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def needs_action(self) -> bool:
        """The supervisor must act: restart (stalled, failed) or wind down (stopped)."""
        return self in (HealthStatus.STALLED, HealthStatus.FAILED, HealthStatus.STOPPED)


@dataclass(frozen=True)
class JobHealth:
    status: HealthStatus
    detail: str


def classify_health(
    *,
    alive: bool,
    exit_code: int | None,
    query_states: Mapping[str, Mapping[str, str]],
    now: float,
    process_start_epoch: float,
    heartbeat_max_age_seconds: float,
    startup_grace_seconds: float,
) -> JobHealth:
    """The health rule as a pure function (``query_states``: query → its Redis hash)."""
    if not alive:
        if exit_code == 0:
            return JobHealth(HealthStatus.STOPPED, "the job stopped on request (exit 0)")
        how = "was killed" if exit_code is None else f"exited with {exit_code}"
        return JobHealth(HealthStatus.FAILED, f"the job process {how}")
    ages: list[str] = []
    waiting: list[str] = []
    for query, fields in query_states.items():
        heartbeat = _float(fields.get("heartbeat_at"))
        if heartbeat is None or heartbeat < process_start_epoch:
            # Nothing from this run yet (the hash may hold the previous run's last words).
            waiting.append(query)
            continue
        if fields.get("state") == "failed" or fields.get("last_exception"):
            exception = (fields.get("last_exception") or "").strip().splitlines()
            first_line = exception[0] if exception else "no message"
            return JobHealth(HealthStatus.FAILED, f"{query} failed: {first_line}")
        age = now - heartbeat
        if age > heartbeat_max_age_seconds:
            return JobHealth(
                HealthStatus.STALLED,
                f"{query}: no progress for {age:.0f} s (allowed {heartbeat_max_age_seconds:g} s)",
            )
        ages.append(f"{query} {age:.0f} s ago")
    if waiting:
        running_for = now - process_start_epoch
        if running_for <= startup_grace_seconds:
            return JobHealth(HealthStatus.STARTING, f"waiting for {', '.join(waiting)}")
        return JobHealth(
            HealthStatus.STALLED,
            f"{', '.join(waiting)}: no heartbeat {running_for:.0f} s after the start "
            f"(allowed {startup_grace_seconds:g} s)",
        )
    return JobHealth(HealthStatus.HEALTHY, "heartbeat " + ", ".join(ages))


def _float(value: str | None) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None
