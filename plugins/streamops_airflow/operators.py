"""``StreamingJobOperator``: keeps one pipeline's streaming job running, restarting it by policy.

Thin, like the Spark provider's operators: it validates its parameters and calls the hook; the
waiting happens in :class:`~streamops_airflow.triggers.SparkJobHealthTrigger` (deferred, no
worker slot) and the decisions in :mod:`streamops.supervision.restart` (pure).

One task instance supervises for as long as the job runs:

1. ``execute``: refuse while the breaker is open; take the checkpoint's lease and reattach to the
   running job or launch one; defer to the health trigger.
2. ``on_health_event``: stopped on request → release the lease, succeed. Failed or stalled →
   stop what is left. An outage of Kafka, MariaDB, Redis or the disk (down now, or named by the
   failure) is not the job's fault: wait for every dependency's health on
   :class:`~streamops_airflow.triggers.DependencyWaitTrigger`, uncounted. Otherwise apply the
   restart policy: wait out the backoff (in the worker when it is at most
   ``IN_WORKER_BACKOFF_SECONDS``, else deferred on a timer trigger), or — crash loop — open the
   breaker, alert, release the lease and fail.
   A job that refused to start (exit ``EXIT_REFUSED``: its database's schema is not the code's)
   opens the breaker at once: relaunching would only refuse again.
3. ``restart_job`` (after the backoff or the outage): relaunch from the checkpoint under the same
   lease and defer to the health trigger again.

The lease owner is ``airflow:<dag_id>.<task_id>``: a retried task or a restarted scheduler is the
same owner and reattaches; anyone else is told who holds the checkpoint until when.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from streamops.supervision.lease import LeaseHeldError
from streamops.supervision.restart import (
    Action,
    DependencyDown,
    Failed,
    Phase,
    Refused,
    Started,
    Stopped,
    transition,
)
from streamops.supervision.spec import PIPELINE_NAME, PipelineSpec, load_spec
from streamops_airflow.hooks import HealthStatus, JobHandle, SparkJobHook
from streamops_airflow.triggers import (
    DEPENDENCIES_UP,
    LEASE_LOST,
    DependencyWaitTrigger,
    SparkJobHealthTrigger,
)

# Backoffs up to this long are waited out in the worker instead of on a timer trigger.
IN_WORKER_BACKOFF_SECONDS = 10.0
# A job whose query failed stops the others (at most 8 s, spark_jobs.common.runner) and its JVM.
FAILED_EXIT_GRACE_SECONDS = 30.0


class StreamingJobOperator(BaseOperator):
    template_fields: Sequence[str] = ("pipeline",)
    ui_color = "#e8f4fd"

    def __init__(self, *, pipeline: str, specs_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not PIPELINE_NAME.match(pipeline):
            raise ValueError(f"pipeline {pipeline!r} is not a pipeline name (see pipelines.yaml)")
        self.pipeline = pipeline
        self.specs_path = specs_path
        self._handle: JobHandle | None = None

    # --- the steps ----------------------------------------------------------------------------
    def execute(self, context: Any) -> None:
        hook = self._hook()
        state = hook.load_restart_state()
        if state.phase is Phase.BREAKER_OPEN:
            raise AirflowFailException(self._breaker_message(hook.spec, state.last_failure_reason))
        if state.phase is Phase.WAITING:
            # A retried try, or a new run, while the last job waits out an outage: look first.
            outage = DependencyDown(state.waiting_for, state.last_outage_reason or "an outage")
            self._wait_for_dependencies(hook, hook.find_job(), outage)
            return
        if state.phase is Phase.RUNNING:
            # A retried try, or a run after a lost worker: the job may have died unwatched. Its
            # failure counts like any other, or a crash loop would dodge the breaker.
            unwatched = hook.unwatched_failure(self.lease_owner)
            if unwatched is not None:
                handle, health = unwatched
                self.log.warning(
                    "%s: the job failed while no task watched it: %s", self.pipeline, health.detail
                )
                self._recover(
                    hook,
                    handle,
                    f"{health.status}: {health.detail}",
                    exits_itself=health.status == HealthStatus.FAILED,
                )
                return
        self._start_and_watch(hook)

    def on_health_event(self, context: Any, event: dict[str, Any]) -> None:
        hook = self._hook()
        handle = JobHandle.from_dict(event["handle"])
        status, detail = event["status"], event.get("detail", "")
        self.log.info("%s: %s (%s)", self.pipeline, status, detail)
        if status == LEASE_LOST:
            # Someone else holds the checkpoint now: our job must go, the lease is not ours.
            hook.stop(handle, hook.spec.stop_timeout_seconds)
            raise AirflowException(detail)
        if status == HealthStatus.STOPPED:
            hook.release(handle)
            state = hook.load_restart_state()
            hook.save_restart_state(
                transition(hook.spec.restart, state, Stopped(), time.time()).state
            )
            return
        self._recover(
            hook,
            handle,
            f"{status}: {detail}",
            exits_itself=status == HealthStatus.FAILED,
            after_healthy=bool(event.get("ran_healthy", False)),
        )

    def _recover(
        self,
        hook: SparkJobHook,
        handle: JobHandle,
        reason: str,
        *,
        exits_itself: bool = False,
        after_healthy: bool = False,
    ) -> None:
        """Failed or stalled: stop what is left of the job, then the policy decides: wait for a
        dependency that is (or was) down, restart after a backoff, or open the breaker. A job
        that refused to start (``EXIT_REFUSED``) opens the breaker at once: it would refuse
        again, and its reason may name MariaDB without MariaDB being down.

        ``exits_itself``: a query failed, and a job that is still alive then stops its other
        queries and exits with the code that says why; it gets ``FAILED_EXIT_GRACE_SECONDS``
        for that before it is stopped (a stalled job is stopped at once).

        ``after_healthy``: the trigger saw the job healthy before it failed; the policy then
        restarts it without the backoff (``RestartPolicy.restart_after_healthy_seconds``)."""
        if exits_itself and not hook.await_exit(handle, FAILED_EXIT_GRACE_SECONDS):
            self.log.warning(
                "%s: a query failed and the job did not exit within %.0f s: stopping it",
                self.pipeline,
                FAILED_EXIT_GRACE_SECONDS,
            )
        refusal = hook.refusal(handle)
        if refusal is not None:
            state = hook.load_restart_state()
            decision = transition(hook.spec.restart, state, Refused(refusal), time.time())
            hook.save_restart_state(decision.state)
            hook.publish_breaker_alert(decision.state)
            hook.release(handle)
            raise AirflowFailException(
                f"{hook.spec.name}: the job refused to start, so it is not restarted; the "
                f"breaker is open. {refusal}"
            )
        hook.stop(handle, hook.spec.stop_timeout_seconds)
        outage = hook.outage(handle, reason)
        if outage is not None and "mariadb" in outage.dependencies and outage.confirmed:
            # The restart state lives in MariaDB: recorded once it answers (restart_job).
            self._wait_for_dependencies(hook, handle, outage)
            return
        state = hook.load_restart_state()
        event = Failed(reason, after_healthy=after_healthy) if outage is None else outage
        decision = transition(hook.spec.restart, state, event, time.time())
        hook.save_restart_state(decision.state)
        if decision.action is Action.WAIT_FOR_DEPENDENCIES:
            assert outage is not None
            self._wait_for_dependencies(hook, handle, outage, decision.delay_seconds or 0.0)
            return
        reason = decision.state.last_failure_reason or reason
        if decision.action is Action.OPEN_BREAKER:
            hook.publish_breaker_alert(decision.state)
            hook.release(handle)
            raise AirflowFailException(self._breaker_message(hook.spec, reason))
        delay = decision.delay_seconds or 0.0
        self.log.info("%s: restarting from the checkpoint in %.1f s", self.pipeline, delay)
        if delay <= IN_WORKER_BACKOFF_SECONDS:
            # Deferring costs two scheduler round trips and a task start (tens of seconds on a
            # busy machine); a wait this short is cheaper in the slot we already hold.
            time.sleep(delay)
            self._start_and_watch(hook)
            return
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
            method_name="restart_job",
        )

    def _wait_for_dependencies(
        self,
        hook: SparkJobHook,
        handle: JobHandle | None,
        outage: DependencyDown,
        delay_seconds: float = 0.0,
    ) -> None:
        self.log.warning(
            "%s: %s; waiting for its health before a relaunch%s, not counted toward the breaker",
            self.pipeline,
            outage.reason,
            f" (first look in {delay_seconds:.0f} s)" if delay_seconds else "",
        )
        self.defer(
            trigger=DependencyWaitTrigger(
                pipeline=self.pipeline,
                handle=handle.to_dict() if handle is not None else None,
                specs_path=self.specs_path,
                dependencies=list(outage.dependencies),
                reason=outage.reason if outage.confirmed else "",
                initial_delay_seconds=delay_seconds,
                # Renewals while waiting must come well inside the lease's TTL.
                max_poll_seconds=max(1.0, min(60.0, hook.spec.lease_ttl_seconds / 3)),
            ),
            method_name="restart_job",
        )

    def restart_job(self, context: Any, event: Any = None) -> None:
        hook = self._hook()
        if isinstance(event, dict) and event.get("status") == DEPENDENCIES_UP:
            self.log.info(
                "%s: every dependency answers again after %.0f s: relaunching",
                self.pipeline,
                float(event.get("waited_seconds", 0.0)),
            )
            state = hook.load_restart_state()
            if event.get("reason") and state.phase is not Phase.WAITING:
                # MariaDB was down when the job failed: the outage is recorded now.
                outage = DependencyDown(tuple(event.get("dependencies") or ()), event["reason"])
                hook.save_restart_state(
                    transition(hook.spec.restart, state, outage, time.time()).state
                )
        if hook.load_restart_state().phase is Phase.BREAKER_OPEN:
            raise AirflowFailException(self._breaker_message(hook.spec, None))
        self._start_and_watch(hook)

    def on_kill(self) -> None:
        """Stopping the run while this worker holds the task: stop the job, free the lease."""
        if self._handle is not None:
            hook = self._hook()
            hook.stop(self._handle, hook.spec.stop_timeout_seconds)
            hook.release(self._handle)

    # --- helpers ------------------------------------------------------------------------------
    @property
    def lease_owner(self) -> str:
        return f"airflow:{self.dag_id}.{self.task_id}"

    def _hook(self) -> SparkJobHook:
        path = Path(self.specs_path) if self.specs_path else None
        return SparkJobHook(load_spec(self.pipeline, path))

    def _start_and_watch(self, hook: SparkJobHook) -> None:
        try:
            self._handle = hook.start_or_reattach(self.lease_owner)
        except LeaseHeldError as held:
            # Fail this try; the retry (or the next scheduled run) asks again.
            raise AirflowException(str(held)) from held
        state = hook.load_restart_state()
        hook.save_restart_state(transition(hook.spec.restart, state, Started(), time.time()).state)
        self.defer(
            trigger=SparkJobHealthTrigger(
                pipeline=self.pipeline,
                handle=self._handle.to_dict(),
                poll_interval_seconds=hook.spec.health.poll_interval_seconds,
                specs_path=self.specs_path,
            ),
            method_name="on_health_event",
        )

    @staticmethod
    def _breaker_message(spec: PipelineSpec, reason: str | None) -> str:
        return (
            f"{spec.name}: the circuit breaker is open ({spec.restart.max_failures} failures "
            f"within {spec.restart.failure_window_seconds:g} s; last: {reason or 'see the log'}). "
            "No restart until an operator resets it, after fixing the cause."
        )
