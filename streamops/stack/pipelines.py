"""Supervised pipelines in the local stack: Airflow runs the jobs, the stack enables and watches.

``streamops up`` unpauses every enabled spec's supervision DAG ``streamops_supervise_<name>``
through Airflow's REST API, starts a run where none is active, and waits (bounded) until each job
reports healthy. From then on Airflow launches, watches and restarts the jobs
(docs/adr/0003-supervision.md); the stack never starts a job itself.

Each pipeline still shows up as a component, ``pipeline-<name>``, so ``status``, ``logs`` and
``down`` cover it: the job is found through its checkpoint's lease, judged by the one health rule
(:func:`streamops.supervision.job_health.classify_health`) and stopped gracefully on ``down``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.stack.base import Component, Health
from streamops.supervision import job_processes
from streamops.supervision.job_health import HealthStatus
from streamops.supervision.job_processes import JobHandle
from streamops.supervision.spec import PipelineSpec, load_specs

Reporter = Callable[[str], None]
# The dag-processor parses new DAG files within its refresh interval (30 s in the local stack).
DAG_PARSE_TIMEOUT_SECONDS = 180.0
# A job that is not healthy this long after `up` is left to Airflow, with a warning.
EXTRA_START_SECONDS = 120.0
_POLL_SECONDS = 5.0


class SupervisedPipeline(Component):
    """A pipeline's job as Airflow runs it: found by its lease, never started by the stack."""

    def __init__(self, settings: Settings, spec: PipelineSpec) -> None:
        super().__init__(settings)
        self.spec = spec
        self.name = f"pipeline-{spec.name}"
        self.stop_timeout_seconds = spec.stop_timeout_seconds

    def ports(self) -> dict[str, int]:
        return {}

    def command(self) -> list[str]:
        # What Airflow's hook runs through spark-submit; shown, never started from here.
        python = str(self.settings.spark_python)
        return [python, "-m", self.spec.job_module, *self.spec.job_arguments()]

    @property
    def log_path(self) -> Path:
        """The newest launch's log (one per lease token: <state>/pipelines/<name>/token-N.log)."""
        folder = job_processes.run_dir(self.settings, self.spec.name)
        logs = sorted(folder.glob("token-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else folder / "token-0.log"

    def job(self) -> JobHandle | None:
        """The job recorded in the checkpoint's lease, or None (never launched, MariaDB away)."""
        from streamops.db import connect
        from streamops.supervision import lease as leases

        location = self.spec.checkpoint_location(self.settings.checkpoint_root)
        try:
            connection = connect(self.settings)
        except Exception:
            return None
        try:
            current = leases.current(connection, location)
        finally:
            connection.close()
        if current is None or not current.pid:
            return None
        return job_processes.handle_from_lease(self.spec, self.settings, current)

    def start(self) -> bool:
        """Airflow starts the job (see :func:`supervise`); the stack never does."""
        return False

    def running_pid(self) -> int | None:
        handle = self.job()
        return (
            handle.pid if handle is not None and job_processes.process_is_running(handle) else None
        )

    def health(self) -> Health:
        handle = self.job()
        if handle is None:
            return Health(False, f"not launched yet (Airflow DAG {self.spec.dag_id})")
        try:
            health = job_processes.local_health(self.spec, self.settings, handle)
        except Exception as exc:  # Redis away: unknown, not a crash of `status`
            return Health(False, f"{type(exc).__name__}: {exc}")
        return Health(health.status is HealthStatus.HEALTHY, f"{health.status}: {health.detail}")

    def check_health(self) -> Health:
        return self.health()

    def stop(self) -> bool:
        """Stop the job gracefully (exit 0: the supervisor records a stop, not a crash)."""
        handle = self.job()
        if handle is None or not job_processes.process_is_running(handle):
            return False
        job_processes.stop_process(handle, self.spec.stop_timeout_seconds)
        return True


def pipeline_components(settings: Settings) -> list[SupervisedPipeline]:
    """One component per spec of the pipelines file (every spec, enabled or not)."""
    return [SupervisedPipeline(settings, spec) for spec in load_specs().values()]


def supervise(
    settings: Settings,
    pipelines: Sequence[SupervisedPipeline],
    report: Reporter,
    *,
    wait: bool = True,
) -> dict[str, Health]:
    """Enable the supervision DAG of every enabled spec and, with ``wait``, see the jobs run.

    Unpauses each DAG (once the dag-processor has parsed it) and triggers a run where none is
    queued or running. While waiting, a pipeline whose run ended without a healthy job gets a new
    run; one whose breaker is open is reported, not retried (an operator resets it). Returns the
    last health of each enabled pipeline; a job still starting at the deadline is left to Airflow
    with a warning rather than failing `up`.
    """
    enabled = [p for p in pipelines if p.spec.enabled]
    for pipeline in pipelines:
        if not pipeline.spec.enabled:
            report(f"{pipeline.name}: disabled in the pipelines file, its DAG stays paused")
    if not enabled:
        return {}
    with AirflowRest.login(settings) as api:
        _wait_parsed(api, [p.spec.dag_id for p in enabled])
        for pipeline in enabled:
            api.set_paused(pipeline.spec.dag_id, False)
            report(f"{pipeline.name}: supervision DAG {pipeline.spec.dag_id} enabled")
        grace = max(p.spec.health.startup_grace_seconds for p in enabled)
        deadline = time.monotonic() + grace + EXTRA_START_SECONDS
        healths: dict[str, Health] = {}
        pending = list(enabled)
        while pending:
            for pipeline in list(pending):
                health = pipeline.health()
                healths[pipeline.name] = health
                if health.healthy:
                    report(f"{pipeline.name}: healthy ({health.detail})")
                    pending.remove(pipeline)
                elif _breaker_open(settings, pipeline.spec):
                    report(
                        f"{pipeline.name}: the circuit breaker is open; not started. Fix the "
                        "cause, then reset it (docs/operations.md)"
                    )
                    pending.remove(pipeline)
                else:
                    run_id, triggered = api.trigger_unless_active(
                        pipeline.spec.dag_id, note="started by streamops up"
                    )
                    if triggered:
                        report(f"{pipeline.name}: supervision run {run_id} started")
            if not wait or not pending or time.monotonic() > deadline:
                break
            time.sleep(_POLL_SECONDS)
        for pipeline in pending if wait else ():
            report(
                f"{pipeline.name}: not healthy yet ({healths[pipeline.name].detail}); Airflow "
                f"keeps supervising it: `streamops status`, DAG {pipeline.spec.dag_id}"
            )
        return healths


def _wait_parsed(api: AirflowRest, dag_ids: list[str]) -> None:
    deadline = time.monotonic() + DAG_PARSE_TIMEOUT_SECONDS
    missing = list(dag_ids)
    while missing and time.monotonic() < deadline:
        missing = [dag_id for dag_id in missing if api.dag(dag_id) is None]
        if missing:
            time.sleep(2.0)
    if missing:
        detail = "; ".join(
            f"{e.get('filename')}: {str(e.get('stack_trace', '')).strip().splitlines()[-1:]}"
            for e in api.import_errors()
        )
        raise StreamopsError(
            f"Airflow has not parsed the supervision DAGs {missing} within "
            f"{DAG_PARSE_TIMEOUT_SECONDS:.0f} s"
            + (f"; import errors: {detail}" if detail else "")
            + ". Read `streamops logs airflow-dag-processor`."
        )


def _breaker_open(settings: Settings, spec: PipelineSpec) -> bool:
    from streamops.db import connect
    from streamops.supervision import lease as leases
    from streamops.supervision.restart import Phase

    connection = connect(settings)
    try:
        return leases.load_restart_state(connection, spec.name).phase is Phase.BREAKER_OPEN
    finally:
        connection.close()
