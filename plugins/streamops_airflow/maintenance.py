"""Maintenance DAG factories: MariaDB compaction and checkpoint health (docs/maintenance.md).

A DAG file declares a spec and calls one factory. Every setting lives in the spec; nothing here
touches MariaDB, Kafka, Redis or the checkpoints at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from streamops.maintenance.checkpoints import CheckpointTarget, CheckpointThresholds
from streamops.maintenance.compaction import CompactionConfig
from streamops_airflow.dag_factory import DEFAULT_OWNER, streamops_dag


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
    # None: every query of every pipeline (spark_jobs.jobs.PIPELINE_QUERIES), resolved at parse
    # time from that registry (no I/O).
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
    with streamops_dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        paused=spec.paused_upon_creation,
        tags=spec.tags,
        owner=spec.owner,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        execution_timeout=spec.execution_timeout,
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
    with streamops_dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        paused=spec.paused_upon_creation,
        tags=spec.tags,
        owner=spec.owner,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        execution_timeout=spec.execution_timeout,
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


def _as_dict(target: CheckpointTarget) -> dict[str, Any]:
    return {
        "pipeline": target.pipeline,
        "query_name": target.query_name,
        "path": target.path,
        "trigger_interval_seconds": target.trigger_interval_seconds,
    }
