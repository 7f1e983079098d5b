"""DAG factories, all of them: a DAG file declares a spec and calls one of these; no DAG body is
copied.

- :func:`build_health_dag`: the platform health checks (``dags/platform_health.py``);
- :func:`build_compaction_dag`, :func:`build_checkpoint_health_dag`: maintenance, MariaDB
  compaction and checkpoint health (docs/maintenance.md);
- :func:`build_model_training_dag`: a model trained by a Spark batch job through the Spark
  provider's operator (docs/maintenance.md);
- :func:`build_supervision_dag`: one per pipeline spec, a long-lived deferred task that keeps the
  job up. The schedule is a safety net, not a batch cadence: ``max_active_runs=1`` keeps one
  supervisor per pipeline, and a tick only starts a run when none is active — after a run failed
  (breaker open) or finished (stopped on request). While the breaker is open such a run fails at
  once with the reason.

Nothing here touches Kafka, MariaDB, Redis or the checkpoints at import time: the dag-processor
parses DAG files constantly, and only tasks do I/O. Building reads nothing but the specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from streamops.maintenance.checkpoints import CheckpointTarget, CheckpointThresholds
from streamops.maintenance.compaction import CompactionConfig
from streamops.supervision.spec import DEFAULT_SPARK_CONN_ID, PipelineSpec
from streamops_airflow.operators import StreamingJobOperator

DEFAULT_OWNER = "streamops"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
# Every streamops DAG runs one task at a time (a supervision DAG has one anyway): with five
# executor slots (AIRFLOW__CORE__PARALLELISM), the four maintenance, health and training DAGs
# leave one free for a supervisor. Their ten checkpoint checks and four health checks at once,
# every five minutes, held all four slots there were for about 12 s, and a job killed then
# waited that long for its supervisor to relaunch it (issue 16).
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
    params: Mapping[str, Param] | None = None,
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
        params=dict(params or {}),
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
        from streamops.platform_health import CHECKS

        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown:
            raise ValueError(
                f"{self.dag_id}: unknown health checks {unknown}; known: {sorted(CHECKS)}"
            )


def build_health_dag(spec: HealthCheckSpec) -> DAG:
    with _scheduled_dag(
        spec,
        doc_md=f"Checks {', '.join(spec.checks)} and publishes the results to Redis"
        + ("; rotates and prunes the state folder's logs." if spec.rotate_logs else "."),
    ) as dag:

        @task
        def check(service: str) -> dict[str, str]:
            from streamops.config import load_settings
            from streamops.platform_health import CHECKS

            return {service: CHECKS[service](load_settings())}

        @task
        def publish(results: list[dict[str, str]]) -> dict[str, str]:
            from streamops.config import load_settings
            from streamops.platform_health import publish_health

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


# --- maintenance ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactionDagSpec:
    """Rollups, retention and ANALYZE/OPTIMIZE of MariaDB, hourly by default."""

    dag_id: str
    schedule: str = "17 * * * *"
    config: CompactionConfig = field(default_factory=CompactionConfig)
    owner: str = DEFAULT_OWNER
    retries: int = 2
    retry_delay: timedelta = timedelta(minutes=2)
    # Longer than any healthy run; a run stuck on locks is failed and the next one resumes.
    execution_timeout: timedelta = timedelta(minutes=30)
    tags: tuple[str, ...] = ("streamops", "maintenance")
    paused_upon_creation: bool = False


@dataclass(frozen=True)
class CheckpointHealthDagSpec:
    """Health of every streaming checkpoint, every 5 minutes by default."""

    dag_id: str
    schedule: str = "*/5 * * * *"
    # None: every query of every pipeline spec, at its checkpoint, resolved at parse time from
    # the specs file (streamops.supervision.spec.load_specs: that one local file, nothing else).
    targets: tuple[CheckpointTarget, ...] | None = None
    thresholds: CheckpointThresholds = field(default_factory=CheckpointThresholds)
    owner: str = DEFAULT_OWNER
    retries: int = 1
    retry_delay: timedelta = timedelta(seconds=30)
    execution_timeout: timedelta = timedelta(minutes=4)
    tags: tuple[str, ...] = ("streamops", "maintenance", "health")
    paused_upon_creation: bool = False

    def resolved_targets(self) -> tuple[CheckpointTarget, ...]:
        if self.targets is not None:
            return self.targets
        from streamops.maintenance.checkpoints import default_targets

        return default_targets()


def build_compaction_dag(spec: CompactionDagSpec) -> DAG:
    """partitions -> reconcile -> rollup -> retention -> analyze; each task idempotent, so a
    retry or the next run after a failure anywhere finishes the work. archive_retention (the
    Parquet archive's expired days) touches no table, so it has no order among them (the DAG runs
    one task at a time)."""
    config = spec.config
    with _scheduled_dag(
        spec,
        doc_md=(
            "Rolls order_revenue_5s up into 1-minute and 1-hour tables, reconciles late windows, "
            "applies retention (partition drops or chunked deletes) and ANALYZE/OPTIMIZE, "
            "verifying totals around every step; deletes the Parquet archive's day partitions "
            "older than archive_retention_days. See docs/maintenance.md."
        ),
    ) as dag:

        @task
        def partitions() -> dict[str, list[str]]:
            from streamops.config import load_settings
            from streamops.maintenance.compaction import ensure_partitions

            return ensure_partitions(load_settings(), config)

        @task
        def reconcile() -> dict[str, Any]:
            from streamops.config import load_settings
            from streamops.maintenance.compaction import reconcile_late_windows

            return reconcile_late_windows(load_settings(), config)

        @task
        def rollup(reconciled: dict[str, Any]) -> dict[str, Any]:
            from streamops.config import load_settings
            from streamops.maintenance import compaction

            return compaction.rollup(
                load_settings(), config, None, compaction.ranges_of(reconciled)
            )

        @task
        def retention() -> dict[str, dict[str, Any]]:
            from streamops.config import load_settings
            from streamops.maintenance.compaction import apply_retention

            return apply_retention(load_settings(), config)

        @task
        def analyze() -> dict[str, list[str]]:
            from streamops.config import load_settings
            from streamops.maintenance.compaction import analyze_and_optimize

            return analyze_and_optimize(load_settings(), config)

        @task
        def archive_retention() -> dict[str, Any]:
            from streamops.config import load_settings
            from streamops.maintenance.archive import apply_archive_retention

            return apply_archive_retention(load_settings())

        reconciled = reconcile()
        rolled = rollup(reconciled)  # type: ignore[arg-type]
        partitions() >> reconciled
        rolled >> retention() >> analyze()
        archive_retention()
    return dag


def build_checkpoint_health_dag(spec: CheckpointHealthDagSpec) -> DAG:
    """One mapped task per checkpoint, so each shows (and fails) on its own in Airflow."""
    thresholds = spec.thresholds
    targets = spec.resolved_targets()
    with _scheduled_dag(
        spec,
        doc_md=(
            "Checks every streaming checkpoint: last commit and its age, uncommitted batches, "
            "Kafka lag, offsets lost to retention, size growth, corrupt files, stale temp files. "
            "Results to checkpoint_health and Redis, alerts to Kafka; fails on a critical finding."
            " See docs/maintenance.md."
        ),
    ) as dag:

        @task
        def check(target: dict[str, Any]) -> dict[str, Any]:
            from streamops.config import load_settings
            from streamops.maintenance.checkpoints import CheckpointTarget, run_checkpoint_check

            return run_checkpoint_check(load_settings(), CheckpointTarget(**target), thresholds)

        check.expand(target=[_as_dict(t) for t in targets])
    return dag


@dataclass(frozen=True)
class ModelTrainingDagSpec:
    """A model trained from MariaDB's history by a Spark batch job, daily by default.

    The job takes ``--history-days`` and ``--min-samples``, as ``spark_jobs.jobs.vitals_train``
    does; both are the DAG's params, so a manual run can change them.
    """

    dag_id: str
    # The job's name in Spark (streamops-<job_name>) and its module, run by the Spark environment.
    job_name: str = "vitals-train"
    job_module: str = "spark_jobs.jobs.vitals_train"
    # Away from the compaction's :17, at night.
    schedule: str = "43 2 * * *"
    history_days: float = 7.0
    # The job's own default (spark_jobs.transforms.vitals.DEFAULT_MIN_SAMPLES): not imported,
    # because that module imports PySpark, which Airflow's environment does not hold.
    min_samples: int = 30
    spark_conn_id: str = DEFAULT_SPARK_CONN_ID
    owner: str = DEFAULT_OWNER
    retries: int = 1
    retry_delay: timedelta = timedelta(minutes=3)
    # A week of readings trains in minutes; a run past this is killed (on_kill stops the job).
    execution_timeout: timedelta = timedelta(hours=1)
    tags: tuple[str, ...] = ("streamops", "maintenance", "model")
    paused_upon_creation: bool = False


def build_model_training_dag(spec: ModelTrainingDagSpec) -> DAG:
    """One task: the provider's SparkSubmitOperator (our subclass) runs the training job on the
    spec's Spark Connection and waits for it; the new model version is the job's output."""
    # Here, not at the top: only this DAG pays for importing the provider's operator.
    from streamops_airflow.batch import SparkBatchJobOperator

    with _scheduled_dag(
        spec,
        doc_md=(
            f"Runs `{spec.job_module}` as a Spark batch job (spark-submit from the Spark "
            f"environment, on the `{spec.spark_conn_id}` Connection): trains the model on the "
            "last `history_days` of history and saves it as the next version, which the running "
            "stream picks up without a restart. See docs/maintenance.md."
        ),
        params={
            "history_days": Param(
                spec.history_days,
                type="number",
                exclusiveMinimum=0,
                description="Days of history, up to now, the model is trained on.",
            ),
            "min_samples": Param(
                spec.min_samples,
                type="integer",
                minimum=1,
                description="Readings a patient needs for a baseline of their own.",
            ),
        },
    ) as dag:
        SparkBatchJobOperator(
            task_id="train",
            job_name=spec.job_name,
            job_module=spec.job_module,
            conn_id=spec.spark_conn_id,
            application_args=[
                "--history-days",
                "{{ params.history_days }}",
                "--min-samples",
                "{{ params.min_samples }}",
            ],
        )
    return dag


def _as_dict(target: CheckpointTarget) -> dict[str, Any]:
    return {
        "pipeline": target.pipeline,
        "query_name": target.query_name,
        "path": target.path,
        "trigger_interval_seconds": target.trigger_interval_seconds,
    }


def _scheduled_dag(
    spec: HealthCheckSpec | CompactionDagSpec | CheckpointHealthDagSpec | ModelTrainingDagSpec,
    doc_md: str,
    params: Mapping[str, Param] | None = None,
) -> DAG:
    """The DAG of a health, maintenance or training spec: every setting from the spec, never
    supervision."""
    return streamops_dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        paused=spec.paused_upon_creation,
        tags=spec.tags,
        owner=spec.owner,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        execution_timeout=getattr(spec, "execution_timeout", None),
        doc_md=doc_md,
        params=params,
    )


# --- supervision ---------------------------------------------------------------------------------


SUPERVISION_TAGS = ("streamops", "supervision")


def build_supervision_dag(spec: PipelineSpec, *, specs_path: str | None = None) -> DAG:
    with streamops_dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        # `streamops up` unpauses them; a spec with enabled: false stays paused.
        paused=not spec.enabled,
        tags=[*SUPERVISION_TAGS, f"pipeline:{spec.name}", *spec.tags],
        owner=spec.owner,
        retries=spec.retries,
        retry_delay=timedelta(seconds=30),
        supervision=True,
        doc_md=(
            f"Keeps `{spec.job_module}` running on `{spec.name}`'s checkpoint: restarts it with "
            f"backoff, opens the breaker after {spec.restart.max_failures} failures within "
            f"{spec.restart.failure_window_seconds:g} s."
        ),
    ) as dag:
        StreamingJobOperator(task_id="supervise", pipeline=spec.name, specs_path=specs_path)
    return dag
