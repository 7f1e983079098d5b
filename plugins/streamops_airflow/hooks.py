"""``SparkJobHook``: launches a pipeline's Spark job, finds it again, reads its health, stops it.

In the style of the Apache Spark provider's ``SparkSubmitHook``, but built for jobs that never
finish on their own:

- **Launch** runs ``spark-submit`` under the checkpoint's lease. The Spark provider's
  ``SparkSubmitHook`` builds the command from the pipeline's Airflow Spark Connection
  (``spark_default``: master, deploy mode, namespace, binary) and the spec
  (:func:`streamops.supervision.submit.build_submit_request`); the binary is the Spark
  environment's (``settings.spark_venv_dir``). The provider's own ``submit()`` is not used: it
  waits for the job to end, and these jobs never end on their own. The launch records where the
  job runs in the lease row. Local mode: a session of its own, led by a small ``sh`` wrapper that
  outlives the Airflow worker and writes the job's exit code to a file, so a triggerer that is
  not the parent still tells "stopped on request" (0) from "crashed"; host, pid and the process's
  start time go to the lease. Kubernetes cluster mode: spark-submit returns once the driver pod
  exists; the pod (found by its ``streamops/pipeline`` label) goes to the lease.
- **Find** matches lease + pid + start time (or the driver pod), so a reused pid is never
  mistaken for the job.
- **Stop** is graceful first: SIGTERM to the Python driver (queries finish their batch, exit 0),
  SIGKILL of the session after the timeout; in Kubernetes, the pod is deleted with that grace.
- **Health** is :func:`streamops.supervision.job_health.classify_health`, the one rule every reader
  of a pipeline's state applies.
- **Another host** (local mode): a job the lease says runs on another host (in compose the
  scheduler launches, the triggerer watches) is judged by its driver's job heartbeat in Redis and
  stopped by a request it reads there, then fenced if it does not go
  (``streamops.supervision.job_processes.stop_remote``).

The API other parts build on (the operations page, ``streamops pipeline``) — keep it stable:
``start_or_reattach``, ``find_job``, ``is_alive``, ``stop``, ``read_health``, ``current_health``,
``load_restart_state``, ``save_restart_state``, ``reset_breaker``, ``release``.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import psutil
from airflow.sdk import BaseHook

from streamops.config import Settings, load_settings
from streamops.contract.redis_keys import PLATFORM_ALERTS_KEY
from streamops.errors import EXIT_DISK_FULL, EXIT_REFUSED, StreamopsError
from streamops.processes import process_stamp
from streamops.spark_runtime import kafka_connector_jars, spark_home, spark_version
from streamops.supervision import dependencies, job_processes
from streamops.supervision import kubernetes as k8s
from streamops.supervision import lease as leases
from streamops.supervision.job_health import (
    HealthStatus,
    JobHealth,
    classify_health,
    refusal_in_log,
)
from streamops.supervision.job_processes import EXIT_FILE, JobHandle
from streamops.supervision.platform_alerts import platform_alert, publish_platform_alert
from streamops.supervision.restart import DependencyDown, OperatorReset, RestartState, transition
from streamops.supervision.spec import PipelineSpec
from streamops.supervision.submit import (
    SubmitRequest,
    build_submit_environment,
    build_submit_request,
)

log = logging.getLogger(__name__)

BREAKER_RULE_ID = "streaming-circuit-breaker"
OVERLOAD_RULE_ID = "platform-overloaded"
ORPHAN_RULE_ID = "pipeline-orphan"
OUTAGE_RULE_ID = "pipeline-waiting-for-dependency"
# spark-submit in cluster mode only creates the driver pod; it must not take longer than this.
_CLUSTER_SUBMIT_TIMEOUT_SECONDS = 300.0
AWAIT_EXIT_POLL_SECONDS = 0.5
# Re-exported: tests, the trigger and the operations page import them from here.
__all__ = [
    "BREAKER_RULE_ID",
    "ORPHAN_RULE_ID",
    "OUTAGE_RULE_ID",
    "OVERLOAD_RULE_ID",
    "PLATFORM_ALERTS_KEY",
    "HealthStatus",
    "JobHandle",
    "JobHealth",
    "SparkJobHook",
    "classify_health",
]


class SparkJobHook(BaseHook):
    """Launch, find, watch and stop the Spark job of one pipeline spec.

    Talks to the job's process (this host), MariaDB (lease, restart state) and Redis (heartbeats).
    Settings come from ``streamops.config`` (the ``STREAMOPS_*`` environment), not an Airflow
    connection: the jobs read the very same settings.
    """

    hook_name = "Streamops Spark job"

    def __init__(self, spec: PipelineSpec, settings: Settings | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.settings = settings or load_settings()
        self.host = socket.gethostname()

    @property
    def probe_settings(self) -> Settings:
        """The settings the dependency probes read: with the spec's own checkpoint root, if it
        has one, so that the disk probe measures where this job writes its checkpoints."""
        if self.spec.checkpoint_root is None:
            return self.settings
        return self.settings.model_copy(update={"checkpoint_uri": self.spec.checkpoint_root})

    # --- MariaDB ------------------------------------------------------------------------------
    @contextmanager
    def connection(self) -> Iterator[Any]:
        from streamops.db import connect

        with closing(connect(self.settings)) as connection:
            yield connection

    @property
    def checkpoint_location(self) -> str:
        return self.spec.checkpoint_location(self.settings.checkpoint_root)

    def load_restart_state(self) -> RestartState:
        with self.connection() as connection:
            return leases.load_restart_state(connection, self.spec.name)

    def save_restart_state(self, state: RestartState) -> None:
        with self.connection() as connection:
            leases.save_restart_state(connection, self.spec.name, state)

    def reset_breaker(self) -> RestartState:
        """An operator closes the breaker: the failure history is forgotten, the phase stopped.

        Nothing starts here; the next supervision run launches the job again.
        """
        try:
            current = self.load_restart_state()
        except leases.CorruptRowError as exc:  # the reset is the way out of a corrupted row
            log.warning("%s: replacing a corrupted restart state: %s", self.spec.name, exc)
            current = RestartState()
        state = transition(self.spec.restart, current, OperatorReset(), 0).state
        self.save_restart_state(state)
        return state

    # --- launch / find ------------------------------------------------------------------------
    def start_or_reattach(self, owner: str) -> JobHandle:
        """The job under ``owner``'s lease: the running one if there is one, else a new launch.

        Raises :class:`streamops.supervision.lease.LeaseHeldError` when another owner holds the
        checkpoint: no second query is ever started next to it.
        """
        with self.connection() as connection:
            previous = leases.current(connection, self.checkpoint_location)
            lease = leases.acquire(
                connection,
                self.checkpoint_location,
                owner,
                self.spec.lease_ttl_seconds,
                pipeline=self.spec.name,
            )
            if lease.reattached and (lease.pid or lease.host):
                handle = self._handle(lease, reattached=True)
                if self.is_alive(handle):
                    log.info("%s: reattached to %s", self.spec.name, _where(handle))
                    return handle
            elif previous is not None and (previous.pid or previous.host):
                # The previous holder's lease expired; its job must not run next to ours.
                stale = self._handle(previous, reattached=False)
                if self.is_alive(stale):
                    log.warning(
                        "%s: stopping %s of an expired lease", self.spec.name, _where(stale)
                    )
                    self.stop(stale)
            self.stop_stray_jobs()
            locked = self.wait_for_other_starts(
                connection, keep_alive=lambda: self._keep(connection, lease)
            )
            try:
                handle = self.launch(lease)
                leases.record_process(
                    connection,
                    lease,
                    host=f"{handle.host}/{handle.driver_pod}" if handle.driver_pod else handle.host,
                    pid=handle.pid,
                    start_epoch=handle.process_start_epoch,
                    stamp=handle.process_stamp or None,
                )
            finally:
                if locked:
                    leases.release_named_lock(connection, leases.LAUNCH_LOCK)
            return handle

    def wait_for_other_starts(
        self,
        connection: Any,
        *,
        keep_alive: Callable[[], object] = lambda: None,
        poll_seconds: float = 5.0,
    ) -> bool:
        """Local mode: before a launch, wait (at most ``health.start_alone_seconds`` in all) for
        the launch lock and then while another pipeline's job is still starting. Returns whether
        the lock was taken (the caller releases it once the launch is recorded).

        Four JVMs warming up at once on 2 cores starve each other: a Python worker that does
        not connect back within Spark's fixed 10 s fails a query's planning, and every first
        batch crawls. One at a time, each start is quick. The lock makes "nobody is starting"
        and the launch one step, so two supervisors never both launch on it. ``keep_alive``
        renews our lease meanwhile; past the budget the launch goes ahead regardless.
        """
        from streamops.supervision.spec import load_specs

        budget = self.spec.health.start_alone_seconds
        if self.spec.kubernetes is not None or budget <= 0:
            return False
        deadline = time.monotonic() + budget
        locked = False
        try:
            others = [s for s in load_specs().values() if s.name != self.spec.name]
            while True:
                locked = locked or leases.try_named_lock(connection, leases.LAUNCH_LOCK)
                if locked:
                    starting = job_processes.starting_pipelines(self.settings, others)
                    if not starting:
                        return True
                    why = f"{', '.join(starting)} still starting"
                else:
                    why = "another launch holds the lock"
                if time.monotonic() >= deadline:
                    log.info("%s: launching after %g s: %s", self.spec.name, budget, why)
                    return locked
                log.info("%s: waiting to launch: %s", self.spec.name, why)
                keep_alive()
                time.sleep(poll_seconds)
        except Exception as exc:  # MariaDB or Redis away: no reason to hold the launch back
            log.warning("%s: start gate skipped: %s", self.spec.name, exc)
            return locked

    def _keep(self, connection: Any, lease: leases.Lease) -> None:
        leases.renew(connection, lease, self.spec.lease_ttl_seconds)

    def find_job(self) -> JobHandle | None:
        """The job recorded in the checkpoint's lease (alive or not), None if none was launched.

        For readers (the operations page, ``streamops pipeline status``): no lease is taken.
        """
        with self.connection() as connection:
            lease = leases.current(connection, self.checkpoint_location)
        if lease is None or not (lease.pid or lease.host):
            return None
        return self._handle(lease, reattached=False)

    def launch(self, lease: leases.Lease) -> JobHandle:
        """Start ``spark-submit`` for the spec; returns once it is spawned (or, in Kubernetes,
        once its driver pod exists)."""
        run_dir = self._run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = run_dir / f"token-{lease.fencing_token}.log"
        # The fence goes in spark-submit's environment (local mode) and, in cluster mode, into
        # the command itself, for the driver and executor pods: one command serves both.
        fence = job_processes.job_environment(self.spec.name, lease)
        command, env = self.submit_command(kafka_connector_jars(self.settings), job_env=fence)
        env = {**os.environ, **env, **fence}
        job_processes.mirror_fence(self.settings, lease)
        if self.spec.kubernetes is not None:
            return self._launch_on_kubernetes(lease, command, env, log_file)
        # sh stays the session leader and records the exit code under its own pid ($$), so a
        # reattaching launcher finds the file from the lease alone; `exec` would lose the code.
        # The mark starts this launch's part of the log (relaunches under one lease share it).
        wrapper = (
            f'echo "{dependencies.LAUNCH_MARK} $$ $(date -u +%FT%TZ)"; '
            f'{shlex.join(command)}; echo $? > "$0/{EXIT_FILE.format(pid="$$")}"'
        )
        with open(log_file, "ab") as log_stream:
            process = subprocess.Popen(
                ["/bin/sh", "-c", wrapper, str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.settings.state_dir),
                start_new_session=True,
            )
        # A file left by an earlier process with the same pid would pass for this one's code.
        (run_dir / EXIT_FILE.format(pid=process.pid)).unlink(missing_ok=True)
        log.info("%s: launched pid %s, log %s", self.spec.name, process.pid, log_file)
        return JobHandle(
            pipeline=self.spec.name,
            queries=self.spec.queries,
            checkpoint_location=lease.checkpoint_location,
            owner=lease.owner or "",
            fencing_token=lease.fencing_token,
            host=self.host,
            pid=process.pid,
            process_start_epoch=psutil.Process(process.pid).create_time(),
            exit_file=str(run_dir / EXIT_FILE.format(pid=process.pid)),
            log_file=str(log_file),
            process_stamp=process_stamp(process.pid) or "",
        )

    def _launch_on_kubernetes(
        self, lease: leases.Lease, command: list[str], env: dict[str, str], log_file: Path
    ) -> JobHandle:
        """spark-submit in cluster mode, its driver and executors fenced with ``lease``; returns
        once the driver pod exists. A live driver pod of the pipeline is an orphan here (the
        lease's own job was reattached or stopped before): it is stopped first, as a local
        orphan is (``stop_stray_jobs``)."""
        assert self.spec.kubernetes is not None
        pods = self.driver_pods
        selector = k8s.driver_selector(self.spec)
        for orphan in [pod for pod in pods.find(selector) if pod.alive]:
            log.warning("%s: stopping an orphan %s", self.spec.name, orphan.describe())
            pods.stop(orphan.name, self.spec.stop_timeout_seconds)
            self._warn(
                ORPHAN_RULE_ID,
                f"{self.spec.name}:{orphan.name}",
                f"{self.spec.name}: stopped an orphan driver pod without the lease before "
                f"launching: {orphan.describe()}",
            )
        # Pods of earlier submissions (ended ones stay until deleted): not this launch's driver.
        earlier = {pod.name for pod in pods.find(selector)}
        try:
            with open(log_file, "ab") as log_stream:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_stream,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=_CLUSTER_SUBMIT_TIMEOUT_SECONDS,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            raise StreamopsError(
                f"{self.spec.name}: spark-submit to {self.spec.kubernetes.api_server} did not "
                f"return within {_CLUSTER_SUBMIT_TIMEOUT_SECONDS:g} s; its output is in {log_file}."
            ) from exc
        if result.returncode != 0:
            raise StreamopsError(
                f"{self.spec.name}: spark-submit to {self.spec.kubernetes.api_server} failed "
                f"(exit {result.returncode}); its output is in {log_file}."
            )
        pod = k8s.live_driver([p for p in pods.find(selector) if p.name not in earlier])
        if pod is None:
            raise StreamopsError(
                f"{self.spec.name}: spark-submit succeeded but no new driver pod with "
                f"{selector} runs in {self.spec.kubernetes.namespace}; its output is in "
                f"{log_file}."
            )
        log.info("%s: launched driver pod %s", self.spec.name, pod.name)
        return JobHandle(
            pipeline=self.spec.name,
            queries=self.spec.queries,
            checkpoint_location=lease.checkpoint_location,
            owner=lease.owner or "",
            fencing_token=lease.fencing_token,
            host=f"k8s:{self.spec.kubernetes.namespace}",
            pid=0,
            process_start_epoch=pod.created_epoch,
            exit_file="",
            log_file=str(log_file),
            driver_pod=pod.name,
        )

    @cached_property
    def driver_pods(self) -> k8s.DriverPods:
        """Cluster mode: the driver pods' API client (made once: it loads the credentials)."""
        return k8s.DriverPods.of(self.spec)

    def _run_dir(self) -> Path:
        return job_processes.run_dir(self.settings, self.spec.name)

    def submit_command(
        self,
        connector_jars: list[Path] | None = None,
        job_env: dict[str, str] | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """The job's spark-submit argv and the variables to add to its environment, built by the
        Spark provider's ``SparkSubmitHook`` from the spec's Spark Connection. ``job_env``
        (cluster mode): the launch's fence, for the driver and executor pods."""
        connection = spark_connection(self.spec.spark_conn_id)
        home = spark_home(self.settings)
        binary = spark_binary(connection, home)
        resolved = _provider_hook(self.spec.spark_conn_id, binary)._connection
        master, deploy_mode = resolved["master"], resolved["deploy_mode"]
        version = spark_version(self.settings, home)
        archive = self.settings.spark_class_archive(version)
        try:
            request = build_submit_request(
                self.spec,
                self.settings,
                master=master,
                deploy_mode=deploy_mode,
                connector_jars=connector_jars or [],
                spark_version=version,
                class_archive=archive if archive.is_file() else None,
                job_env=job_env,
            )
        except ValueError as exc:
            raise StreamopsError(str(exc)) from exc
        provider = _provider_hook(self.spec.spark_conn_id, binary, request)
        command = provider._build_spark_submit_command(request.application)
        # spark-submit runs on this host in both modes, from the Spark environment.
        env = {"SPARK_HOME": str(home)}
        if self.spec.kubernetes is None:
            # Client mode: the driver is spark-submit's child and inherits these (on any master:
            # the provider would send its env_vars to a k8s:// master as driverEnv instead);
            # cluster mode has those that are no password in the request's driverEnv settings,
            # and the passwords as references to the spec's Secrets.
            env |= build_submit_environment(self.spec, self.settings, master)
            env["PYSPARK_PYTHON"] = str(self.settings.spark_python)
        return command, env

    def _handle(self, lease: leases.Lease, *, reattached: bool) -> JobHandle:
        return job_processes.handle_from_lease(
            self.spec, self.settings, lease, reattached=reattached
        )

    # --- process / pod ------------------------------------------------------------------------
    @staticmethod
    def is_running(handle: JobHandle) -> bool:
        """The handle's local process lives on this host: same pid *and* same start time."""
        return job_processes.process_is_running(handle)

    @staticmethod
    def exit_code(handle: JobHandle) -> int | None:
        return job_processes.process_exit_code(handle)

    def is_alive(self, handle: JobHandle) -> bool:
        """The job runs: its local process, or its driver pod (Pending or Running, and not stuck
        waiting for an image, a Secret, ... that it cannot get by itself)."""
        if handle.driver_pod:
            pod = self._driver_pod(handle)
            return pod is not None and pod.alive and not pod.stuck
        return job_processes.job_is_alive(self.spec, self.settings, handle)

    @staticmethod
    def exit_watch_pids(handle: JobHandle) -> list[int]:
        """The local job's processes whose exit ends it (none for a driver pod): the trigger
        wakes when one exits instead of at its next poll."""
        return job_processes.exit_watch_pids(handle)

    def await_exit(self, handle: JobHandle, timeout_seconds: float) -> bool:
        """Wait up to ``timeout_seconds`` for the job to end by itself; True once it has.

        A job whose query failed stops its other queries and exits with a code that says why
        (``EXIT_DISK_FULL``, ``EXIT_REFUSED``, 1): stopping it first would leave only the
        signal's code, and cut its own clean stop short."""
        deadline = time.monotonic() + timeout_seconds
        while self.is_alive(handle):
            if time.monotonic() >= deadline:
                return False
            time.sleep(AWAIT_EXIT_POLL_SECONDS)
        return True

    def stop(self, handle: JobHandle, timeout_seconds: float | None = None) -> int | None:
        """Graceful stop, then a kill after ``timeout_seconds`` (default: the spec's).

        Returns the job's exit code when known (0 = it stopped its queries cleanly); None when
        it had to be killed, or in Kubernetes, where the deleted pod takes its code along (a pod
        whose driver had ended gives its code).
        """
        timeout = self.spec.stop_timeout_seconds if timeout_seconds is None else timeout_seconds
        if handle.driver_pod:
            pod = self.driver_pods.stop(handle.driver_pod, timeout)
            return pod.exit_code if pod is not None and not pod.alive else None
        return job_processes.stop_job(self.spec, self.settings, handle, timeout)

    def _driver_pod(self, handle: JobHandle) -> k8s.DriverPod | None:
        return self.driver_pods.get(handle.driver_pod)

    # --- health -------------------------------------------------------------------------------
    def read_health(self, handle: JobHandle, now: float | None = None) -> JobHealth:
        if not handle.driver_pod:
            return job_processes.read_job_health(self.spec, self.settings, handle, now)
        return k8s.driver_health(
            self._driver_pod(handle),
            handle.driver_pod,
            query_states=lambda: self.query_states(handle),
            now=time.time() if now is None else now,
            process_start_epoch=handle.process_start_epoch,
            bounds=self.spec.stall_bounds,
            pending_timeout_seconds=self.spec.health.startup_grace_seconds,
        )

    def unwatched_failure(self, owner: str) -> tuple[JobHandle, JobHealth] | None:
        """The job under ``owner``'s lease when it has failed and nobody was watching (a task
        retried, a worker lost): its handle and health, else None (alive and well, stopped
        cleanly, never launched, or another owner's)."""
        handle = self.find_job()
        if handle is None or handle.owner != owner:
            return None
        try:
            health = self.read_health(handle)
        except Exception as exc:  # Redis away: reattach; the health trigger copes with that
            log.warning("%s: could not judge the leased job: %s", self.spec.name, exc)
            return None
        return (handle, health) if health.status is HealthStatus.FAILED else None

    def refusal(self, handle: JobHandle) -> str | None:
        """Why the job refused to start, when it exited with ``EXIT_REFUSED`` (a reason no
        restart fixes, e.g. a schema that is not the code's); None for any other end."""
        if handle.driver_pod:
            pod = self._driver_pod(handle)
            if pod is None or pod.alive or pod.exit_code != EXIT_REFUSED:
                return None
            return (
                f"the job refused to start (exit {EXIT_REFUSED}); `kubectl logs {pod.name}` in "
                f"{self.spec.kubernetes.namespace if self.spec.kubernetes else 'its namespace'} "
                "says why"
            )
        if not job_processes.is_remote(handle) and job_processes.process_is_running(handle):
            return None
        if job_processes.job_exit_code(self.spec, self.settings, handle) != EXIT_REFUSED:
            return None
        text = dependencies.since_launch(dependencies.log_tail(handle.log_file))
        return refusal_in_log(text) or (
            f"the job refused to start (exit {EXIT_REFUSED}); see its log {handle.log_file}"
        )

    def outage(self, handle: JobHandle, reason: str) -> DependencyDown | None:
        """Whether the job's failure is a dependency's outage rather than its own fault.

        Down now (a probe) is confirmed; otherwise the failure's text (``reason``, the queries'
        exceptions in Redis, the end of this launch's log) may still name one that is back.
        """
        found = dependencies.probe(self.probe_settings)
        if found:
            return DependencyDown(
                tuple(o.dependency for o in found), "; ".join(map(str, found)), confirmed=True
            )
        texts = [reason, dependencies.since_launch(dependencies.log_tail(handle.log_file))]
        try:
            states = self.query_states(handle)
        except Exception as exc:  # Redis answered the probe a moment ago; the log still counts
            log.warning("%s: could not read the queries' exceptions: %s", self.spec.name, exc)
        else:
            texts += [fields.get("last_exception", "") for fields in states.values()]
        causes = dependencies.causes_in("\n".join(texts))
        # Exit 74: a full disk stopped the job, or it did not start on one (no such text).
        exit_code = None if handle.driver_pod else self._exit_code_in_outage(handle)
        if exit_code == EXIT_DISK_FULL and "disk" not in causes:
            causes.append("disk")
        if not causes:
            return None
        return DependencyDown(
            tuple(causes),
            f"{reason} (the failure names {', '.join(causes)}, which answers again)",
            confirmed=False,
        )

    def _exit_code_in_outage(self, handle: JobHandle) -> int | None:
        """The job's exit code for :meth:`outage`; a job on another host said it in Redis, which
        may be the dependency that is down (then unknown)."""
        try:
            return job_processes.job_exit_code(self.spec, self.settings, handle)
        except Exception as exc:
            log.warning("%s: could not read the job's exit code: %s", self.spec.name, exc)
            return None

    def current_health(self) -> JobHealth:
        """Health of whatever the lease says runs now (for readers; nothing is taken or renewed)."""
        handle = self.find_job()
        if handle is None:
            return JobHealth(HealthStatus.STOPPED, "never launched")
        return self.read_health(handle)

    def query_states(self, handle: JobHandle) -> dict[str, dict[str, str]]:
        return job_processes.read_query_states(self.settings, handle.pipeline, handle.queries)

    # --- lease --------------------------------------------------------------------------------
    def renew(self, handle: JobHandle) -> None:
        with self.connection() as connection:
            leases.renew(connection, handle.lease(), self.spec.lease_ttl_seconds)

    def release(self, handle: JobHandle) -> bool:
        with self.connection() as connection:
            return leases.release(connection, handle.lease())

    # --- alerts -------------------------------------------------------------------------------
    def publish_breaker_alert(self, state: RestartState) -> dict[str, object]:
        """The breaker opened: one alert on the ``alerts`` topic and in Redis."""
        from datetime import UTC, datetime

        opened = datetime.fromtimestamp(state.breaker_opened_at or time.time(), UTC)
        failures = len(state.failure_times)
        return publish_platform_alert(
            self.settings,
            platform_alert(
                rule_id=BREAKER_RULE_ID,
                service=self.spec.name,
                identity=f"{self.spec.name}:{opened.isoformat()}",
                at=opened,
                event_count=failures,
                message=(
                    f"{self.spec.name}: circuit breaker open after {failures} failures; "
                    f"last: {state.last_failure_reason or 'unknown'}"
                ),
            ),
        )

    def stop_stray_jobs(self) -> list[job_processes.StrayJob]:
        """Local mode, before a launch: stop every process of this pipeline that no lease
        accounts for (a launcher lost track of it, or ``streamops run`` started it), so a new
        job never writes next to it. Each one is logged and alerted (``pipeline-orphan``)."""
        if self.spec.kubernetes is not None:
            return []
        strays = job_processes.stray_jobs(self.settings, self.spec.name)
        for stray in strays:
            log.warning("%s: stopping an orphan job: %s", self.spec.name, stray.describe())
            job_processes.stop_stray_job(stray, self.spec.stop_timeout_seconds)
            self._warn(
                ORPHAN_RULE_ID,
                f"{self.spec.name}:{stray.session}:{stray.started_at:.0f}",
                f"{self.spec.name}: stopped an orphan job without the lease before launching: "
                f"{stray.describe()}",
            )
        return strays

    def publish_overload_alert(self, health: JobHealth) -> dict[str, object] | None:
        """The machine is overloaded and this job slow: one platform alert (WARN), no restart.

        Best effort: the supervisor keeps watching whether or not the alert went out.
        """
        return self._warn(
            OVERLOAD_RULE_ID,
            f"{self.spec.name}:{int(time.time())}",
            f"{self.spec.name}: {health.detail}",
        )

    def publish_outage_alert(self, down: str, waited_seconds: float) -> dict[str, object] | None:
        """A dependency outage has kept this pipeline down for long: one platform alert (WARN).

        Best effort (Redis or Kafka may be what is down): the wait goes on either way.
        """
        return self._warn(
            OUTAGE_RULE_ID,
            f"{self.spec.name}:{int(time.time())}",
            f"{self.spec.name}: waiting {waited_seconds:.0f} s for {down}; the job stays stopped "
            "until every dependency answers (not counted toward the breaker)",
        )

    def _warn(self, rule_id: str, identity: str, message: str) -> dict[str, object] | None:
        """One platform alert (WARN), best effort: supervision goes on whether or not it went."""
        try:
            return publish_platform_alert(
                self.settings,
                platform_alert(
                    rule_id=rule_id,
                    service=self.spec.name,
                    identity=identity,
                    level="WARN",
                    message=message,
                ),
            )
        except Exception:
            log.exception("%s: could not publish the %s alert", self.spec.name, rule_id)
            return None


def _where(handle: JobHandle) -> str:
    return f"driver pod {handle.driver_pod}" if handle.driver_pod else f"pid {handle.pid}"


# --- the Spark provider ---------------------------------------------------------------------------
def spark_connection(conn_id: str) -> Any:
    """The Airflow Connection ``conn_id``; its absence is an error naming the fix. The provider
    would fall back to ``yarn`` on its own, a master this platform has not."""
    from airflow.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise StreamopsError(
            f"Airflow has no Connection {conn_id!r}, which says where the pipelines' Spark jobs "
            "run. `streamops up` creates spark_default (type spark, host local[*]); create it in "
            "Airflow's Connections page or with `airflow connections add`."
        ) from exc
    if connection.conn_type != "spark":
        raise StreamopsError(
            f"Airflow Connection {conn_id!r} is of type {connection.conn_type!r}, not 'spark'."
        )
    return connection


def spark_binary(connection: Any, home: Path) -> str:
    """The Connection's ``spark-binary`` (one of the names the provider allows), as the path of
    that binary in the Spark environment: Airflow's own environment has no Spark to run."""
    from airflow.providers.apache.spark.hooks.spark_submit import ALLOWED_SPARK_BINARIES

    name = connection.extra_dejson.get("spark-binary") or "spark-submit"
    if name not in ALLOWED_SPARK_BINARIES:
        raise StreamopsError(
            f"Airflow Connection {connection.conn_id!r}: spark-binary {name!r} is not one of "
            f"{', '.join(ALLOWED_SPARK_BINARIES)}."
        )
    path = home / "bin" / name
    if not path.is_file():
        raise StreamopsError(f"The Spark environment has no {name} ({path} is missing).")
    return str(path)


def _provider_hook(
    conn_id: str,
    binary: str,
    request: SubmitRequest | None = None,
) -> Any:
    """The provider's ``SparkSubmitHook`` for ``request`` (None: the Connection alone, to read its
    master). Imported here: the provider is needed by a launch only, not by every reader."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    if request is None:
        return SparkSubmitHook(conn_id=conn_id, spark_binary=binary)
    return SparkSubmitHook(
        conn_id=conn_id,
        spark_binary=binary,
        conf=request.conf,
        jars=",".join(request.jars) or None,
        name=request.name,
        application_args=request.application_args,
        deploy_mode=request.deploy_mode,
    )
