"""The Redis keys, channels and streams the platform writes and reads (docs/redis-keys.md).

One source for the jobs that write them, the dashboard and the checks that read them, and the
supervision that keeps its own state beside them. A writer takes a prefix (tests give their own
so they never touch the platform's keys); the names below are the platform's.
"""

from __future__ import annotations

# Per query: latest progress and heartbeat (spark_jobs.common.listener), and its events.
QUERY_KEY_PREFIX = "streamops:query"
QUERY_KEY_PATTERN = f"{QUERY_KEY_PREFIX}:*"
QUERY_EVENTS_CHANNEL = f"{QUERY_KEY_PREFIX}:events"

# orders: revenue windows and running totals (streamops.contract.orders_redis).
ORDERS_KEY_PREFIX = "streamops:orders"
ORDERS_UPDATES_CHANNEL = f"{ORDERS_KEY_PREFIX}:updates"

# alerts: one key per alert state, a capped stream of them, and a channel.
ALERTS_KEY_PREFIX = "streamops:alerts"
ALERTS_STREAM = f"{ALERTS_KEY_PREFIX}:stream"
ALERTS_CHANNEL = f"{ALERTS_KEY_PREFIX}:live"
REALTIME_STATS_KEY = f"{ALERTS_KEY_PREFIX}:realtime"
# Platform alerts (a breaker opened, a job gave up) share the alerts' namespace on purpose: the
# dashboard shows them in the same list.
PLATFORM_ALERTS_KEY = f"{ALERTS_KEY_PREFIX}:platform"

# joins and vitals: live state per window and per patient.
JOINS_KEY_PREFIX = "streamops:joins"
VITALS_KEY_PREFIX = "streamops:vitals"
VITALS_PATIENTS_KEY = f"{VITALS_KEY_PREFIX}:patients"

# Supervision and maintenance.
FENCE_KEY_PREFIX = "streamops:fence:"
# Per pipeline: the job's own heartbeat, from its driver (streamops.supervision.job_beat), and a
# watcher's request that it stop: how a supervisor on another host sees and stops the job.
JOB_KEY_PREFIX = "streamops:job"
CHECKPOINT_KEY_PREFIX = "streamops:checkpoint"
PLATFORM_HEALTH_KEY = "streamops:health:platform"


def query_key(pipeline: str, query_name: str, prefix: str = QUERY_KEY_PREFIX) -> str:
    """The Redis hash holding a query's latest progress and heartbeat."""
    return f"{prefix}:{pipeline}:{query_name}"


def job_key(pipeline: str, lease_key: str, prefix: str = JOB_KEY_PREFIX) -> str:
    """The Redis hash holding the job heartbeat of the running (or last) job of a pipeline on one
    checkpoint (``lease_key``: its lease's key, ``streamops.supervision.lease.checkpoint_key``).
    Per checkpoint, as fencing tokens are: a job on another checkpoint of the same pipeline (a
    test's, a benchmark's) has tokens of its own, and must neither read nor fence this one."""
    return f"{prefix}:{pipeline}:{lease_key}"


def job_stop_key(pipeline: str, lease_key: str, prefix: str = JOB_KEY_PREFIX) -> str:
    """The Redis string asking the job of a pipeline on one checkpoint (by fencing token and
    launch) to stop."""
    return f"{prefix}:{pipeline}:{lease_key}:stop"


def alert_key(alert_id: str, prefix: str = ALERTS_KEY_PREFIX) -> str:
    """The Redis string holding an alert's latest state (its JSON payload)."""
    return f"{prefix}:alert:{alert_id}"


def vitals_patient_key(patient_id: str, part: str, prefix: str = VITALS_KEY_PREFIX) -> str:
    """A patient's ``latest``, ``summary``, ``flags`` or ``discharged`` record."""
    return f"{prefix}:patient:{patient_id}:{part}"


def orders_window_key(currency: str, window_start: str, prefix: str = ORDERS_KEY_PREFIX) -> str:
    """One revenue window's hash (``window_start`` in the contract's ISO form)."""
    return f"{prefix}:window:{currency}:{window_start}"


def orders_windows_key(currency: str, prefix: str = ORDERS_KEY_PREFIX) -> str:
    """A currency's sorted set of window starts."""
    return f"{prefix}:windows:{currency}"


def orders_totals_key(prefix: str = ORDERS_KEY_PREFIX) -> str:
    return f"{prefix}:totals"
