"""The supervision DAG of a pipeline spec: one long-lived, deferred task that keeps the job up.

A DAG file stays thin: ``dag = build_supervision_dag(load_spec("orders"))``. Building reads
nothing but the spec (already loaded), so parsing does no I/O.

The schedule is a safety net, not a batch cadence: ``max_active_runs=1`` keeps one supervisor per
pipeline, and a tick only starts a run when none is active — after a run failed (breaker open) or
finished (stopped on request). While the breaker is open such a run fails at once with the reason.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from streamops.pipelines.spec import PipelineSpec
from streamops_airflow.dag_factory import streamops_dag
from streamops_airflow.operators import StreamingJobOperator

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
