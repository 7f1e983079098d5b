"""The health trigger logs a verdict when the status changes, and otherwise every few minutes."""

from __future__ import annotations

from streamops_airflow.triggers import HEALTH_LOG_EVERY_SECONDS, should_log_health

from streamops.supervision.job_health import HealthStatus


def test_the_first_verdict_is_logged() -> None:
    assert should_log_health(HealthStatus.STARTING, (None, 0.0), now=1.0)


def test_the_same_status_is_quiet_until_the_line_is_old() -> None:
    logged = (HealthStatus.HEALTHY, 100.0)
    assert not should_log_health(HealthStatus.HEALTHY, logged, now=105.0)
    assert not should_log_health(
        HealthStatus.HEALTHY, logged, now=100.0 + HEALTH_LOG_EVERY_SECONDS - 0.1
    )
    assert should_log_health(HealthStatus.HEALTHY, logged, now=100.0 + HEALTH_LOG_EVERY_SECONDS)


def test_a_change_of_status_is_logged_at_once() -> None:
    logged = (HealthStatus.HEALTHY, 100.0)
    assert should_log_health(HealthStatus.STALLED, logged, now=100.5)
    assert should_log_health(HealthStatus.OVERLOADED, logged, now=100.5)
