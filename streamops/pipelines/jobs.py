"""A launched streaming job on this host: its handle, whether it runs, its health, its stop.

Shared by the Airflow hook (``streamops_airflow.hooks.SparkJobHook``) and the local stack
(``streamops status`` / ``down``), which must not import Airflow. A job is identified by the lease
row of its checkpoint (host, pid and the process's start time), so a recycled pid is never taken
for the job, and any process on the host can find and stop it.

Local mode: ``spark-submit`` runs under a small ``sh`` that leads the job's session and writes the
exit code to ``<state>/pipelines/<name>/pid-<pid>.exit``. The graceful stop is SIGTERM to the
Python driver (the job stops its queries after the running batch and exits 0), then SIGKILL of
the whole session after the timeout. Signalling spark-submit's JVM instead would tear the
SparkContext down under the running batch.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from streamops.config import Settings
from streamops.pipelines.health import (
    FIRST_BATCH,
    HEARTBEAT_AT,
    STATUS_AT,
    JobHealth,
    classify_health,
    float_field,
)
from streamops.pipelines.lease import Lease
from streamops.pipelines.spec import PipelineSpec

log = logging.getLogger(__name__)

# psutil's create_time is derived from clock ticks: equal within this much means the same process.
START_TIME_TOLERANCE_SECONDS = 0.5
# After SIGKILL of the session: how long to wait for the kernel to reap it.
KILL_WAIT_SECONDS = 10.0
EXIT_FILE = "pid-{pid}.exit"


@dataclass(frozen=True)
class JobHandle:
    """Everything needed to find, watch and stop one launched job; JSON-ready for triggers.

    Local mode: ``host``/``pid``/``process_start_epoch`` name the ``sh`` session leader.
    Kubernetes cluster mode: ``driver_pod`` names the driver pod (``pid`` is 0, ``host`` is
    ``k8s:<namespace>``, ``process_start_epoch`` the pod's creation time).
    """

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
    driver_pod: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queries"] = list(self.queries)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        return cls(**{**data, "queries": tuple(data["queries"])})

    def lease(self) -> Lease:
        return Lease(self.checkpoint_location, self.owner, self.fencing_token)


def run_dir(settings: Settings, pipeline: str) -> Path:
    """Where a pipeline's launch logs and exit-code files live."""
    return settings.state_dir / "pipelines" / pipeline


def handle_from_lease(
    spec: PipelineSpec, settings: Settings, lease: Lease, *, reattached: bool = False
) -> JobHandle:
    """The handle of the job recorded in ``lease`` (pid 0 when none was recorded)."""
    folder = run_dir(settings, spec.name)
    host = lease.host or ""
    pod = host.partition("/")[2] if host.startswith("k8s:") else ""
    return JobHandle(
        pipeline=spec.name,
        queries=spec.queries,
        checkpoint_location=lease.checkpoint_location,
        owner=lease.owner or "",
        fencing_token=lease.fencing_token,
        host=host.partition("/")[0] if pod else host,
        pid=lease.pid or 0,
        process_start_epoch=lease.process_start_epoch or 0.0,
        exit_file=str(folder / EXIT_FILE.format(pid=lease.pid or 0)),
        log_file=str(folder / f"token-{lease.fencing_token}.log"),
        reattached=reattached,
        driver_pod=pod,
    )


# --- the local process ---------------------------------------------------------------------------


def process_is_running(handle: JobHandle) -> bool:
    """The handle's process lives on this host: same pid *and* same start time."""
    if handle.driver_pod or handle.host != socket.gethostname() or handle.pid <= 0:
        return False
    try:
        process = psutil.Process(handle.pid)
        same = abs(process.create_time() - handle.process_start_epoch)
        return same <= START_TIME_TOLERANCE_SECONDS and process.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return False


def process_exit_code(handle: JobHandle) -> int | None:
    """The code the ``sh`` wrapper recorded; None while running or when it was killed."""
    try:
        return int(Path(handle.exit_file).read_text().strip())
    except (OSError, ValueError):
        return None


def stop_process(handle: JobHandle, timeout_seconds: float) -> int | None:
    """SIGTERM the driver (graceful: the queries stop), then SIGKILL the session on timeout.

    Returns the job's exit code (None when it had to be killed or was not ours to wait for).
    """
    if not process_is_running(handle):
        return process_exit_code(handle)
    leader = psutil.Process(handle.pid)
    targets = python_drivers(leader) or [leader]
    for process in targets:
        with _quietly():
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and process_is_running(handle):
        time.sleep(0.5)
    if process_is_running(handle):
        log.warning("%s: no graceful stop in %g s, killing", handle.pipeline, timeout_seconds)
        with _quietly():
            os.killpg(handle.pid, signal.SIGKILL)
        with _quietly():
            leader.wait(KILL_WAIT_SECONDS)
        return None
    # sh writes the exit code file just before it exits.
    for _ in range(20):
        code = process_exit_code(handle)
        if code is not None:
            return code
        time.sleep(0.1)
    return None


def python_drivers(leader: psutil.Process) -> list[psutil.Process]:
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


# --- health --------------------------------------------------------------------------------------


def read_query_states(
    settings: Settings, pipeline: str, queries: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """Each query's Redis hash (heartbeat, state, last exception) as the listener wrote it."""
    import redis

    from spark_jobs.common.listener import query_key

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, decode_responses=True)
    with closing(client):
        pipe = client.pipeline(transaction=False)
        for query in queries:
            pipe.hgetall(query_key(pipeline, query))
        return dict(zip(queries, pipe.execute(), strict=True))


def local_health(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, now: float | None = None
) -> JobHealth:
    """:func:`~streamops.pipelines.health.classify_health` of a job launched on this host."""
    alive = process_is_running(handle)
    return classify_health(
        alive=alive,
        exit_code=None if alive else process_exit_code(handle),
        query_states=read_query_states(settings, handle.pipeline, handle.queries) if alive else {},
        now=time.time() if now is None else now,
        process_start_epoch=handle.process_start_epoch,
        bounds=spec.stall_bounds,
        load_per_core=load_per_core(),
    )


def is_starting(query_states: Mapping[str, Mapping[str, str]], process_start_epoch: float) -> bool:
    """A running job is still starting: some query has neither completed a batch nor idled (a
    trigger that found no data) in this run.

    Pure: ``query_states`` are the queries' Redis hashes (``read_query_states``).
    """
    for fields in query_states.values():
        heartbeat = float_field(fields.get(HEARTBEAT_AT))
        if heartbeat is not None and heartbeat >= process_start_epoch:
            continue  # a progress or idle event of this run: it has triggered at least once
        status_at = float_field(fields.get(STATUS_AT))
        if status_at is None or status_at < process_start_epoch:
            return True  # not even the driver's first report yet
        if fields.get(FIRST_BATCH) == "1":
            return True
    return False


def starting_pipelines(
    settings: Settings, specs: Iterable[PipelineSpec], now: float | None = None
) -> list[str]:
    """Pipelines of ``specs`` whose local job runs and is still starting (JVM warm-up and first
    batch: the most expensive minutes of a job). Jobs that have run longer than their start-up
    grace plus one batch allowance no longer count, so a job stuck starting cannot hold others
    back for good."""
    from streamops.db import connect
    from streamops.pipelines import lease as leases

    now = time.time() if now is None else now
    starting = []
    with closing(connect(settings)) as connection:
        for spec in specs:
            lease = leases.current(connection, spec.checkpoint_location(settings.checkpoint_root))
            if lease is None or not lease.pid:
                continue
            handle = handle_from_lease(spec, settings, lease)
            bounds = spec.stall_bounds
            horizon = bounds.startup_grace_seconds + bounds.batch_allowance(0, first_batch=False)
            if now - handle.process_start_epoch > horizon or not process_is_running(handle):
                continue
            states = read_query_states(settings, spec.name, spec.queries)
            if is_starting(states, handle.process_start_epoch):
                starting.append(spec.name)
    return starting


def load_per_core() -> float:
    """This machine's 1-minute load average per core: the overload signal of the health rule
    (a local job shares this machine with its supervisor)."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


@contextmanager
def _quietly() -> Iterator[None]:
    with suppress(psutil.Error, ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        yield
