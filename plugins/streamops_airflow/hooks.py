"""``SparkJobHook``: launches a pipeline's Spark job, finds it again, reads its health, stops it.

In the style of the Apache Spark provider's ``SparkSubmitHook``, but built for jobs that never
finish on their own:

- **Launch** runs ``spark-submit`` (command from :func:`streamops.pipelines.submit.
  build_submit_command`) in a session of its own, under the checkpoint's lease, and records host,
  pid and the process's start time in the lease row. A small ``sh`` wrapper is the session leader:
  it outlives the Airflow worker that started it and writes the job's exit code to a file, so a
  triggerer that is not the parent still tells "stopped on request" (0) from "crashed".
- **Find** matches lease + pid + start time, so a reused pid is never mistaken for the job.
- **Stop** sends SIGTERM to the Python driver (the job's own graceful stop: queries finish their
  batch, exit 0), waits, then SIGKILLs the whole session.
- **Health**: the process lives, every query's heartbeat in Redis is fresher than the spec allows
  and no query reports an exception → healthy; alive but silent → stalled; dead → stopped or
  failed by exit code. Heartbeats older than the process belong to an earlier run and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil
from airflow.sdk import BaseHook

from streamops.config import Settings, load_settings
from streamops.pipelines import lease as leases
from streamops.pipelines.restart import RestartState
from streamops.pipelines.spec import PipelineSpec
from streamops.pipelines.submit import build_submit_command, build_submit_environment

log = logging.getLogger(__name__)

BREAKER_RULE_ID = "streaming-circuit-breaker"
PLATFORM_ALERTS_KEY = "streamops:alerts:platform"
# psutil's create_time is derived from clock ticks: equal within this much means the same process.
_START_TIME_TOLERANCE_SECONDS = 0.5
# SIGKILL of the session: how long to wait for the kernel to reap it.
_KILL_WAIT_SECONDS = 10.0
_EXIT_FILE = "pid-{pid}.exit"


class HealthStatus(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    STALLED = "stalled"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def needs_action(self) -> bool:
        return self in (HealthStatus.STALLED, HealthStatus.FAILED, HealthStatus.STOPPED)


@dataclass(frozen=True)
class JobHealth:
    status: HealthStatus
    detail: str


@dataclass(frozen=True)
class JobHandle:
    """Everything needed to find, watch and stop one launched job; JSON-ready for triggers."""

    pipeline: str
    queries: tuple[str, ...]
    checkpoint_location: str
    owner: str
    fencing_token: int
    host: str
    pid: int
    process_start_epoch: float
    exit_file: str
    log_file: str
    reattached: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queries"] = list(self.queries)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        return cls(**{**data, "queries": tuple(data["queries"])})

    def lease(self) -> leases.Lease:
        return leases.Lease(self.checkpoint_location, self.owner, self.fencing_token)


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

    # --- launch / find ------------------------------------------------------------------------
    def start_or_reattach(self, owner: str) -> JobHandle:
        """The job under ``owner``'s lease: the running one if there is one, else a new launch.

        Raises :class:`streamops.pipelines.lease.LeaseHeldError` when another owner holds the
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
            if lease.reattached and lease.pid is not None:
                handle = self._handle(lease, reattached=True)
                if self.is_running(handle):
                    log.info("%s: reattached to pid %s", self.spec.name, lease.pid)
                    return handle
            elif previous is not None and previous.pid is not None:
                # The previous holder's lease expired; its job must not run next to ours.
                stale = self._handle(previous, reattached=False)
                if self.is_running(stale):
                    log.warning(
                        "%s: stopping pid %s of an expired lease", self.spec.name, stale.pid
                    )
                    self.stop(stale)
            handle = self.launch(lease)
            leases.record_process(
                connection,
                lease,
                host=handle.host,
                pid=handle.pid,
                start_epoch=handle.process_start_epoch,
            )
            return handle

    def launch(self, lease: leases.Lease) -> JobHandle:
        """Start ``spark-submit`` for the spec in its own session; returns once it is spawned."""
        from spark_jobs.common.session import kafka_connector_jars

        run_dir = self._run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = run_dir / f"token-{lease.fencing_token}.log"
        command = self.submit_command(kafka_connector_jars(self.settings))
        # sh stays the session leader and records the exit code under its own pid ($$), so a
        # reattaching launcher finds the file from the lease alone; `exec` would lose the code.
        wrapper = f'{shlex.join(command)}; echo $? > "$0/{_EXIT_FILE.format(pid="$$")}"'
        env = {**os.environ, **build_submit_environment(self.spec, self.settings)}
        env.setdefault("SPARK_HOME", str(_spark_home()))
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
        (run_dir / _EXIT_FILE.format(pid=process.pid)).unlink(missing_ok=True)
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
            exit_file=str(run_dir / _EXIT_FILE.format(pid=process.pid)),
            log_file=str(log_file),
        )

    def _run_dir(self) -> Path:
        return self.settings.state_dir / "pipelines" / self.spec.name

    def submit_command(self, connector_jars: list[Path] | None = None) -> list[str]:
        import pyspark

        return build_submit_command(
            self.spec,
            self.settings,
            connector_jars=connector_jars or [],
            spark_home=_spark_home(),
            spark_version=pyspark.__version__,
        )

    def _handle(self, lease: leases.Lease, *, reattached: bool) -> JobHandle:
        run_dir = self._run_dir()
        return JobHandle(
            pipeline=self.spec.name,
            queries=self.spec.queries,
            checkpoint_location=lease.checkpoint_location,
            owner=lease.owner or "",
            fencing_token=lease.fencing_token,
            host=lease.host or "",
            pid=lease.pid or 0,
            process_start_epoch=lease.process_start_epoch or 0.0,
            exit_file=str(run_dir / _EXIT_FILE.format(pid=lease.pid or 0)),
            log_file=str(run_dir / f"token-{lease.fencing_token}.log"),
            reattached=reattached,
        )

    # --- process ------------------------------------------------------------------------------
    @staticmethod
    def is_running(handle: JobHandle) -> bool:
        """The handle's process lives on this host: same pid *and* same start time."""
        if handle.host != socket.gethostname() or handle.pid <= 0:
            return False
        try:
            process = psutil.Process(handle.pid)
            same = abs(process.create_time() - handle.process_start_epoch)
            return same <= _START_TIME_TOLERANCE_SECONDS and process.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_DEAD,
            )
        except psutil.Error:
            return False

    @staticmethod
    def exit_code(handle: JobHandle) -> int | None:
        try:
            return int(Path(handle.exit_file).read_text().strip())
        except (OSError, ValueError):
            return None

    @classmethod
    def stop(cls, handle: JobHandle, timeout_seconds: float = 60.0) -> int | None:
        """SIGTERM the driver (graceful: the queries stop), then SIGKILL the session on timeout.

        Returns the job's exit code (None when it had to be killed or was not ours to wait for).
        """
        if not cls.is_running(handle):
            return cls.exit_code(handle)
        leader = psutil.Process(handle.pid)
        targets = _python_drivers(leader) or [leader]
        for process in targets:
            with _quietly():
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline and cls.is_running(handle):
            time.sleep(0.5)
        if cls.is_running(handle):
            log.warning("%s: no graceful stop in %g s, killing", handle.pipeline, timeout_seconds)
            with _quietly():
                os.killpg(handle.pid, signal.SIGKILL)
            _wait_gone(leader, _KILL_WAIT_SECONDS)
            return None
        # The exit code file is written by sh just before it exits.
        for _ in range(20):
            code = cls.exit_code(handle)
            if code is not None:
                return code
            time.sleep(0.1)
        return None

    # --- health -------------------------------------------------------------------------------
    def read_health(self, handle: JobHandle, now: float | None = None) -> JobHealth:
        alive = self.is_running(handle)
        return classify_health(
            alive=alive,
            exit_code=None if alive else self.exit_code(handle),
            query_states=self.query_states(handle) if alive else {},
            now=time.time() if now is None else now,
            process_start_epoch=handle.process_start_epoch,
            heartbeat_max_age_seconds=self.spec.heartbeat_max_age_seconds,
            startup_grace_seconds=self.spec.health.startup_grace_seconds,
        )

    def query_states(self, handle: JobHandle) -> dict[str, dict[str, str]]:
        import redis

        from spark_jobs.common.listener import query_key

        client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=2, decode_responses=True
        )
        with closing(client):
            pipe = client.pipeline(transaction=False)
            for query in handle.queries:
                pipe.hgetall(query_key(handle.pipeline, query))
            return dict(zip(handle.queries, pipe.execute(), strict=True))

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
        import redis
        from confluent_kafka import Producer

        opened = datetime.fromtimestamp(state.breaker_opened_at or time.time(), UTC)
        alert: dict[str, object] = {
            "alert_id": hashlib.sha256(
                f"breaker:{self.spec.name}:{opened.isoformat()}".encode()
            ).hexdigest(),
            "rule_id": BREAKER_RULE_ID,
            "level": "CRITICAL",
            "service": self.spec.name,
            "window_start": opened.isoformat(),
            "window_end": opened.isoformat(),
            "event_count": len(state.failure_times),
            "sample_message": (
                f"{self.spec.name}: circuit breaker open after {len(state.failure_times)} "
                f"failures; last: {state.last_failure_reason or 'unknown'}"
            )[:1000],
        }
        payload = json.dumps(alert)
        try:
            producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
            producer.produce("alerts", key=str(alert["alert_id"]).encode(), value=payload.encode())
            producer.flush(10)
        except Exception:
            log.exception("could not publish the breaker alert to Kafka")
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2)
            with closing(client):
                client.lpush(PLATFORM_ALERTS_KEY, payload)
                client.ltrim(PLATFORM_ALERTS_KEY, 0, 199)
        except Exception:
            log.exception("could not publish the breaker alert to Redis")
        return alert


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _python_drivers(leader: psutil.Process) -> list[psutil.Process]:
    """The job's Python driver(s) in the session: SIGTERM there is the job's graceful stop.

    spark-submit's JVM is the driver's parent; signalling the JVM instead would tear the
    SparkContext down under the running batch.
    """
    drivers = []
    for child in leader.children(recursive=True):
        with _quietly():
            name = child.name().lower()
            # Python workers run as `python -m pyspark.daemon`/`pyspark.worker`: not drivers.
            workers = any(arg.startswith("pyspark.") for arg in child.cmdline())
            if name.startswith("python") and not workers:
                drivers.append(child)
    return drivers


def _wait_gone(process: psutil.Process, timeout_seconds: float) -> None:
    with _quietly():
        process.wait(timeout_seconds)


def _float(value: str | None) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None


@contextmanager
def _quietly() -> Iterator[None]:
    with suppress(psutil.Error, ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        yield
