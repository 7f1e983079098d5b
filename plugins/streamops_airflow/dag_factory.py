"""DAG factories: a DAG file declares a spec and calls one of these; no DAG body is copied.

Nothing here touches Kafka, MariaDB or Redis at import time: the dag-processor parses DAG files
constantly, and only tasks do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

DEFAULT_OWNER = "streamops"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
# Every streamops DAG runs one task at a time (a supervision DAG has one anyway): with four
# executor slots (AIRFLOW__CORE__PARALLELISM), the three maintenance and health DAGs leave one
# free for a supervisor. Their ten checkpoint checks and four health checks at once, every five
# minutes, held all four slots for about 12 s, and a job killed then waited that long for its
# supervisor to relaunch it (issue 16).
MAX_ACTIVE_TASKS = 1
# A supervisor's task goes first whenever tasks wait for a slot: the scheduler queues by
# priority weight, and every other streamops task has the default weight, 1.
SUPERVISION_PRIORITY_WEIGHT = 100


def streamops_dag(
    *,
    dag_id: str,
    schedule: str | None,
    paused: bool,
    tags: list[str] | tuple[str, ...],
    owner: str,
    retries: int,
    retry_delay: timedelta,
    doc_md: str,
    execution_timeout: timedelta | None = None,
    supervision: bool = False,
) -> DAG:
    """What every streamops DAG shares: no catch-up, one run at a time, owner and retries.

    One task at a time (``MAX_ACTIVE_TASKS``), so that a supervisor always finds a slot; a
    ``supervision`` DAG's task is queued before any other waiting task."""
    default_args: dict[str, object] = {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay,
    }
    if execution_timeout is not None:
        default_args["execution_timeout"] = execution_timeout
    if supervision:
        default_args["priority_weight"] = SUPERVISION_PRIORITY_WEIGHT
        default_args["weight_rule"] = "absolute"
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=MAX_ACTIVE_TASKS,
        is_paused_upon_creation=paused,
        tags=list(tags),
        default_args=default_args,
        doc_md=doc_md,
    )


@dataclass(frozen=True)
class HealthCheckSpec:
    """A periodic check of the platform's services, published to Redis for the dashboard."""

    dag_id: str
    schedule: str = "*/5 * * * *"
    checks: tuple[str, ...] = ("kafka", "mariadb", "redis", "disk")
    owner: str = DEFAULT_OWNER
    retries: int = 1
    retry_delay: timedelta = timedelta(seconds=30)
    tags: tuple[str, ...] = field(default=("streamops", "health"))
    # A health check is only useful when it runs: unpaused from the first parse.
    paused_upon_creation: bool = False
    # Every 5 minutes is also how often the state folder's logs are rotated and pruned
    # (streamops.maintenance.logs): a busy job's log stays near log_max_mb.
    rotate_logs: bool = True

    def __post_init__(self) -> None:
        from streamops.health import CHECKS

        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown:
            raise ValueError(
                f"{self.dag_id}: unknown health checks {unknown}; known: {sorted(CHECKS)}"
            )


def build_health_dag(spec: HealthCheckSpec) -> DAG:
    with streamops_dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        paused=spec.paused_upon_creation,
        tags=spec.tags,
        owner=spec.owner,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        doc_md=f"Checks {', '.join(spec.checks)} and publishes the results to Redis"
        + ("; rotates and prunes the state folder's logs." if spec.rotate_logs else "."),
    ) as dag:

        @task
        def check(service: str) -> dict[str, str]:
            from streamops.config import load_settings
            from streamops.health import CHECKS

            return {service: CHECKS[service](load_settings())}

        @task
        def publish(results: list[dict[str, str]]) -> dict[str, str]:
            from streamops.config import load_settings
            from streamops.health import publish_health

            merged = {name: detail for result in results for name, detail in result.items()}
            publish_health(load_settings(), merged)
            return merged

        # At run time the mapped results arrive as a list; the XComArg stands in for it here.
        publish(check.expand(service=list(spec.checks)))  # type: ignore[arg-type]

        if spec.rotate_logs:

            @task
            def rotate_logs() -> dict[str, int]:
                from streamops.config import load_settings
                from streamops.maintenance.logs import rotate_logs as rotate

                report = rotate(load_settings(), report=print)
                return {
                    "rotated": len(report["rotated"]),
                    "deleted": len(report["deleted"]),
                    "skipped": len(report["skipped"]),
                    "freed_bytes": report["freed_bytes"],
                }

            rotate_logs()
    return dag
