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

from streamops.clients import redis_client
from streamops.config import Settings
from streamops.processes import is_same_process, started_since
from streamops.supervision.job_health import (
    FIRST_BATCH,
    HEARTBEAT_AT,
    STATUS_AT,
    JobHealth,
    classify_health,
    float_field,
)
from streamops.supervision.lease import Lease
from streamops.supervision.spec import PipelineSpec

log = logging.getLogger(__name__)

# For a handle without a process stamp (recorded by an older streamops): wall-clock start times
# equal within this much mean the same process.
START_TIME_TOLERANCE_SECONDS = 0.5
# After SIGKILL of the session: how long to wait for the kernel to reap it.
KILL_WAIT_SECONDS = 10.0
EXIT_FILE = "pid-{pid}.exit"
# Every process of a job carries these in its environment (the JVM, the driver and the Python
# workers inherit them): what finds a pipeline's processes that no lease accounts for.
JOB_PIPELINE_ENV = "STREAMOPS_JOB_PIPELINE"
JOB_TOKEN_ENV = "STREAMOPS_JOB_TOKEN"
# The lease row's key: with the token, what the job's sinks check (streamops.supervision.fence).
JOB_LEASE_ENV = "STREAMOPS_JOB_LEASE"
STATE_DIR_ENV = "STREAMOPS_STATE_DIR"


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
    # The session leader's boot id and start tick (streamops.processes.process_stamp): who it
    # is whatever the clock does. Empty for a pod, and in handles from before it was recorded.
    process_stamp: str = ""

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
        process_stamp=lease.process_stamp or "",
    )


# --- the local process ---------------------------------------------------------------------------


def job_processes(handle: JobHandle) -> list[psutil.Process]:
    """The live processes of the job on this host: its whole session, whoever leads it now.

    The ``sh`` wrapper leads the session (its pid is the session id). A kill of the wrapper
    alone leaves spark-submit's JVM and the Python driver running, reparented to pid 1 but still
    in that session: they are the job, and the job is alive while any of them is. The kernel
    does not give a pid to a new process while a session of that id has members, so a member
    found later can only be of this session once it started no earlier than the wrapper; and
    a process now at the wrapper's pid with another start time means the pid was recycled.
    The process at the handle's pid counts too when its start time matches, session leader
    or not.
    """
    if handle.driver_pod or handle.host != socket.gethostname() or handle.pid <= 0:
        return []
    members = []
    for process in psutil.process_iter():
        try:
            if process.pid != handle.pid and os.getsid(process.pid) != handle.pid:
                continue
            if process.pid == handle.pid and not _is_the_leader(process, handle):
                return []  # a new session leader with the recycled pid: not our job
            if not _started_with_or_after_the_leader(process, handle):
                continue
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            members.append(process)
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or not ours to look at
    return members


def _is_the_leader(process: psutil.Process, handle: JobHandle) -> bool:
    """``process`` (at the handle's pid) is the session leader the handle names.

    By its stamp (boot id and start tick), which no step of the system clock moves; a handle
    without one (recorded by an older streamops) by the wall-clock start time, as it was then.
    """
    if handle.process_stamp:
        return is_same_process(process.pid, handle.process_stamp)
    return abs(process.create_time() - handle.process_start_epoch) <= START_TIME_TOLERANCE_SECONDS


def _started_with_or_after_the_leader(process: psutil.Process, handle: JobHandle) -> bool:
    if handle.process_stamp:
        return started_since(process.pid, handle.process_stamp) is True
    return process.create_time() >= handle.process_start_epoch - START_TIME_TOLERANCE_SECONDS


def process_is_running(handle: JobHandle) -> bool:
    """Some process of the job lives on this host: the wrapper, the JVM or the Python driver
    (:func:`job_processes`); a dead wrapper does not make a dead job."""
    return bool(job_processes(handle))


def wrapper_is_running(handle: JobHandle) -> bool:
    """The ``sh`` wrapper itself lives (it records the exit code)."""
    return any(p.pid == handle.pid for p in job_processes(handle))


def process_exit_code(handle: JobHandle) -> int | None:
    """The code the ``sh`` wrapper recorded; None while running or when it was killed."""
    try:
        return int(Path(handle.exit_file).read_text().strip())
    except (OSError, ValueError):
        return None


def stop_process(handle: JobHandle, timeout_seconds: float) -> int | None:
    """SIGTERM the driver (graceful: the queries stop), then SIGKILL every process of the job's
    session on timeout. Works the same when the wrapper is already gone.

    Returns the job's exit code (None when it had to be killed or was not ours to wait for).
    """
    members = job_processes(handle)
    if not members:
        return process_exit_code(handle)
    _ask_to_stop(members)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and process_is_running(handle):
        time.sleep(0.5)
    if process_is_running(handle):
        log.warning("%s: no graceful stop in %g s, killing", handle.pipeline, timeout_seconds)
        kill_job(handle)
        return None
    # sh writes the exit code file just before it exits.
    for _ in range(20):
        code = process_exit_code(handle)
        if code is not None:
            return code
        time.sleep(0.1)
    return None


def kill_job(handle: JobHandle) -> None:
    """SIGKILL every process of the job's session (Python workers that made their own process
    group included) and wait for them to go."""
    members = job_processes(handle)
    with _quietly():
        os.killpg(handle.pid, signal.SIGKILL)
    for process in members:
        with _quietly():
            process.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(members, timeout=KILL_WAIT_SECONDS)
    if alive:
        log.error(
            "%s: still alive after SIGKILL: %s",
            handle.pipeline,
            ", ".join(str(p.pid) for p in alive),
        )


def _ask_to_stop(members: list[psutil.Process]) -> None:
    """SIGTERM the job's Python driver (the graceful stop), or every member without one."""
    for process in python_drivers(members) or members:
        with _quietly():
            process.send_signal(signal.SIGTERM)


def python_drivers(members: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The job's Python driver(s) among its processes: SIGTERM there is the graceful stop.

    spark-submit's JVM is the driver's parent; signalling the JVM instead would tear the
    SparkContext down under the running batch.
    """
    drivers = []
    for process in members:
        with _quietly():
            name = process.name().lower()
            # Python workers run as `python -m pyspark.daemon`/`pyspark.worker`: not drivers.
            workers = any(arg.startswith("pyspark.") for arg in process.cmdline())
            if name.startswith("python") and not workers:
                drivers.append(process)
    return drivers


def exit_watch_pids(handle: JobHandle) -> list[int]:
    """The processes whose exit ends the job on this host: the ``sh`` wrapper, spark-submit's
    JVM and the Python driver (not the Python workers, which Spark starts and ends as it
    pleases). The supervisor wakes when one of them exits (``triggers.sleep_until_exit``)."""
    members = job_processes(handle)
    drivers = {process.pid for process in python_drivers(members)}
    watched = []
    for process in members:
        with _quietly():
            if process.pid == handle.pid or process.pid in drivers or process.name() == "java":
                watched.append(process.pid)
    return watched


@dataclass(frozen=True)
class StrayJob:
    """Processes of a pipeline on this host that share one session (one launch)."""

    pipeline: str
    session: int
    pids: tuple[int, ...]
    started_at: float
    host: str
    fencing_token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        token = f", fencing token {self.fencing_token}" if self.fencing_token else ""
        return (
            f"session {self.session} on {self.host} (pids {', '.join(map(str, self.pids))}), "
            f"started {when}{token}"
        )


def job_environment(pipeline: str, lease: Lease | None) -> dict[str, str]:
    """The variables that mark a job's processes as this pipeline's (see :func:`stray_jobs`)
    and fence its sinks with ``lease`` (``streamops.supervision.fence``)."""
    env = {JOB_PIPELINE_ENV: pipeline}
    if lease is not None:
        env[JOB_TOKEN_ENV] = str(lease.fencing_token)
        env[JOB_LEASE_ENV] = lease.key
    return env


def mirror_fence(settings: Settings, lease: Lease) -> None:
    """Before a launch under ``lease``: its token's Redis mirror moves forward to it, so an older
    job's Redis writes are refused from now on (``streamops.supervision.fence``). Best effort: with
    Redis away nobody writes it, and the new job raises the mirror itself on its first write."""
    import redis

    from streamops.supervision.redis_fence import raise_mirror

    client = redis_client(settings)
    try:
        raise_mirror(client, lease.key, lease.fencing_token)
    except redis.RedisError as exc:
        log.warning("could not mirror fencing token %s to Redis: %s", lease.fencing_token, exc)
    finally:
        client.close()


def stray_jobs(
    settings: Settings, pipeline: str, holder: JobHandle | None = None
) -> list[StrayJob]:
    """The pipeline's processes on this host (same state folder) outside ``holder``'s job:
    left running by a launcher that lost track of them, or started beside the supervisor
    (``streamops run``). None of them may write next to the lease holder's job.

    The holder's job is its session and, while its launch is not yet recorded in the lease
    (``holder.pid`` 0 until spark-submit's wrapper is up), every process launched under the
    holder's fencing token: a second ``pipeline start`` in that window must not call the job
    its own supervisor is starting an orphan."""
    sessions: dict[int, list[psutil.Process]] = {}
    tokens: dict[int, str] = {}
    state_dir = str(settings.state_dir)
    own = {p.pid for p in job_processes(holder)} if holder is not None else set()
    for process in psutil.process_iter():
        try:
            if process.pid in own or process.pid == os.getpid():
                continue
            env = process.environ()
            if env.get(JOB_PIPELINE_ENV) != pipeline or env.get(STATE_DIR_ENV) != state_dir:
                continue
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            session = os.getsid(process.pid)
            sessions.setdefault(session, []).append(process)
            tokens.setdefault(session, env.get(JOB_TOKEN_ENV, ""))
        except (psutil.Error, OSError):
            continue
    strays = []
    for session, members in sorted(sessions.items()):
        if holder is not None and tokens[session] == str(holder.fencing_token):
            continue
        started = []
        for member in members:
            with _quietly():
                started.append(member.create_time())
        strays.append(
            StrayJob(
                pipeline=pipeline,
                session=session,
                pids=tuple(sorted(m.pid for m in members)),
                started_at=min(started, default=0.0),
                host=socket.gethostname(),
                fencing_token=tokens[session],
            )
        )
    return strays


def stop_stray_job(stray: StrayJob, timeout_seconds: float) -> None:
    """SIGTERM its Python driver (a graceful stop), then SIGKILL whatever is left of it."""
    members = []
    for pid in stray.pids:
        with _quietly():
            members.append(psutil.Process(pid))
    _ask_to_stop(members)
    _, alive = psutil.wait_procs(members, timeout=timeout_seconds)
    for process in alive:
        with _quietly():
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(alive, timeout=KILL_WAIT_SECONDS)


# --- health --------------------------------------------------------------------------------------


def read_query_states(
    settings: Settings, pipeline: str, queries: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """Each query's Redis hash (heartbeat, state, last exception) as the listener wrote it."""

    from streamops.contract.redis_keys import query_key

    client = redis_client(settings, timeout_seconds=2, decode_responses=True)
    with closing(client):
        pipe = client.pipeline(transaction=False)
        for query in queries:
            pipe.hgetall(query_key(pipeline, query))
        return dict(zip(queries, pipe.execute(), strict=True))


def local_health(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, now: float | None = None
) -> JobHealth:
    """:func:`~streamops.supervision.job_health.classify_health` of a job launched on this host."""
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
    from streamops.supervision import lease as leases

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
