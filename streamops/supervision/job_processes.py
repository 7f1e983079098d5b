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

A job launched on another host (the lease names that host; in compose the scheduler launches and
the triggerer watches, each in its container) is judged by its driver's job heartbeat in Redis
instead (``streamops.supervision.job_beat``), and by the wrapper's exit file where the state
folder is shared; it is stopped by a request it reads with its next beat, and fenced (the lease's
token moves on) when it does not go within the stop timeout: :func:`job_is_alive`,
:func:`read_job_health`, :func:`job_exit_code` and :func:`stop_job` choose the way by the host.
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
    JobReport,
    classify_health,
    classify_remote_health,
    float_field,
    judge_job_beat,
)
from streamops.supervision.lease import Lease, checkpoint_key
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
# The host whose supervisor (or `streamops run`) launched the job: a job another host launched
# is that host's to judge and stop, never a stray here.
JOB_HOST_ENV = "STREAMOPS_JOB_HOST"
STATE_DIR_ENV = "STREAMOPS_STATE_DIR"
# A stop across hosts: how often the watcher looks whether the job went, and how long it then
# waits for the wrapper's exit file (spark-submit's own code) where the state folder is shared.
REMOTE_STOP_POLL_SECONDS = 0.5
REMOTE_EXIT_FILE_WAIT_SECONDS = 15.0


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


def is_remote(handle: JobHandle) -> bool:
    """The job was launched on another host (client mode): its processes cannot be seen from
    here, its heartbeat says whether it lives. Not a driver pod, nor a launch not yet recorded."""
    if handle.driver_pod or not handle.host or handle.host.startswith("k8s:"):
        return False
    return handle.host != socket.gethostname()


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


def _wrapper_exit_code(handle: JobHandle) -> int | None:
    """Seen from another host: the wrapper's code when its exit file is readable here (a shared
    state folder) and was written after the launch (a file of the same name on an unshared disk
    is another launch's)."""
    if not handle.exit_file:
        return None
    try:
        written = Path(handle.exit_file).stat().st_mtime
    except OSError:
        return None
    if written < handle.process_start_epoch - START_TIME_TOLERANCE_SECONDS:
        return None
    return process_exit_code(handle)


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
    env = {JOB_PIPELINE_ENV: pipeline, JOB_HOST_ENV: socket.gethostname()}
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
    its own supervisor is starting an orphan.

    A process launched by another host (its launch says so, ``STREAMOPS_JOB_HOST``) is never a
    stray here, even where this host can see it: that host's supervisor judges and stops it, and
    one launched under a lease is fenced by the lease's token anyway."""
    sessions: dict[int, list[psutil.Process]] = {}
    tokens: dict[int, str] = {}
    state_dir = str(settings.state_dir)
    here = socket.gethostname()
    own = {p.pid for p in job_processes(holder)} if holder is not None else set()
    for process in psutil.process_iter():
        try:
            if process.pid in own or process.pid == os.getpid():
                continue
            env = process.environ()
            if env.get(JOB_PIPELINE_ENV) != pipeline or env.get(STATE_DIR_ENV) != state_dir:
                continue
            if env.get(JOB_HOST_ENV, here) != here:
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
                host=here,
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


# --- a job on another host ----------------------------------------------------------------------


def job_is_alive(spec: PipelineSpec, settings: Settings, handle: JobHandle) -> bool:
    """The job runs: its processes here, or, launched on another host, its job heartbeat."""
    if is_remote(handle):
        return remote_report(spec, settings, handle).alive
    return process_is_running(handle)


def job_exit_code(spec: PipelineSpec, settings: Settings, handle: JobHandle) -> int | None:
    """The code the job ended with; None while it runs or when it went without a word."""
    if is_remote(handle):
        report = remote_report(spec, settings, handle)
        return None if report.alive else report.exit_code
    return process_exit_code(handle)


def read_job_health(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, now: float | None = None
) -> JobHealth:
    """The health of a job launched in client mode, here (:func:`local_health`) or on another
    host (:func:`remote_health`)."""
    if is_remote(handle):
        return remote_health(spec, settings, handle, now)
    return local_health(spec, settings, handle, now)


def stop_job(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, timeout_seconds: float
) -> int | None:
    """Stop a job launched in client mode: signals here (:func:`stop_process`), a stop request
    and then its fencing on another host (:func:`stop_remote`). Its exit code when known."""
    if is_remote(handle):
        return stop_remote(spec, settings, handle, timeout_seconds)
    return stop_process(handle, timeout_seconds)


def remote_report(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, now: float | None = None
) -> JobReport:
    """Whether the job on another host lives, from its job heartbeat (one Redis read)."""
    from streamops.supervision.job_beat import read_job_beat

    now = time.time() if now is None else now
    if _wrapper_exit_code(handle) is not None:  # it ended, and said how: no need to ask Redis
        return _judge_remote(spec, handle, {}, now)
    client = redis_client(settings, timeout_seconds=2, decode_responses=True)
    with closing(client):
        fields = read_job_beat(client, handle.pipeline, _lease_key(handle))
    return _judge_remote(spec, handle, fields, now)


def remote_health(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, now: float | None = None
) -> JobHealth:
    """:func:`~streamops.supervision.job_health.classify_remote_health` of a job launched on
    another host: its job heartbeat and its queries' hashes, in one Redis round trip."""
    from streamops.contract.redis_keys import job_key, query_key

    now = time.time() if now is None else now
    if _wrapper_exit_code(handle) is not None:
        job_fields: dict[str, str] = {}
        states: list[dict[str, str]] = [{} for _ in handle.queries]
    else:
        client = redis_client(settings, timeout_seconds=2, decode_responses=True)
        with closing(client):
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(job_key(handle.pipeline, _lease_key(handle)))
            for query in handle.queries:
                pipe.hgetall(query_key(handle.pipeline, query))
            job_fields, *states = pipe.execute()
    return classify_remote_health(
        _judge_remote(spec, handle, job_fields, now),
        query_states=dict(zip(handle.queries, states, strict=True)),
        now=now,
        process_start_epoch=handle.process_start_epoch,
        bounds=spec.stall_bounds,
    )


def _judge_remote(
    spec: PipelineSpec, handle: JobHandle, fields: Mapping[str, str], now: float
) -> JobReport:
    bounds = spec.stall_bounds
    return judge_job_beat(
        fields,
        token=handle.fencing_token,
        now=now,
        launched_at=handle.process_start_epoch,
        max_age=bounds.job_heartbeat_max_age_seconds,
        startup_grace=bounds.startup_grace_seconds,
        wrapper_exit_code=_wrapper_exit_code(handle),
    )


def stop_remote(
    spec: PipelineSpec, settings: Settings, handle: JobHandle, timeout_seconds: float
) -> int | None:
    """Stop a job that runs on another host: ask it (a stop request under its fencing token and
    launch, which its driver reads within a beat and obeys as it would SIGTERM: its queries stop
    between two batches, it exits 0), and wait up to ``timeout_seconds``. A job still there then
    is fenced (:func:`fence_out`): the lease's token moves on, its writes are refused, and its
    next beat stops it. Returns its exit code when known (None when it had to be fenced or went
    without a word)."""
    from streamops.supervision.job_beat import request_stop, withdraw_stop

    report = remote_report(spec, settings, handle)
    if not report.alive:
        return report.exit_code
    client = redis_client(settings, timeout_seconds=2, decode_responses=True)
    with closing(client):
        request = request_stop(
            client, handle.pipeline, _lease_key(handle), handle.fencing_token, handle.pid
        )
        log.info("%s: asked the job on %s to stop (%s)", handle.pipeline, handle.host, request)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            time.sleep(REMOTE_STOP_POLL_SECONDS)
            try:
                report = remote_report(spec, settings, handle)
            except Exception as exc:  # Redis away for a look: the next one may answer
                log.warning("%s: could not look at the stopping job: %s", handle.pipeline, exc)
                continue
            if report.alive:
                continue
            with suppress(Exception):
                withdraw_stop(client, handle.pipeline, _lease_key(handle), request)
            log.info("%s: the job on %s %s", handle.pipeline, handle.host, report.detail)
            if report.exit_code is None:
                return None
            return _wrapper_code_or(handle, report.exit_code, deadline)
    log.warning(
        "%s: the job on %s did not stop within %g s of the request: fencing it",
        handle.pipeline,
        handle.host,
        timeout_seconds,
    )
    fence_out(settings, handle)
    return None


def _wrapper_code_or(handle: JobHandle, driver_code: int, deadline: float) -> int:
    """The wrapper's code (spark-submit's, as a local stop returns it) once its exit file shows
    up, where the state folder is shared; else the code the driver recorded."""
    folder = Path(handle.exit_file).parent if handle.exit_file else None
    if folder is None or not folder.is_dir():
        return driver_code
    until = max(deadline, time.monotonic() + REMOTE_EXIT_FILE_WAIT_SECONDS)
    while time.monotonic() < until:
        code = _wrapper_exit_code(handle)
        if code is not None:
            return code
        time.sleep(REMOTE_STOP_POLL_SECONDS)
    return driver_code


def fence_out(settings: Settings, handle: JobHandle) -> int:
    """Fence the job of ``handle`` from anywhere: its lease's token moves on and the lease is
    freed (:func:`streamops.supervision.lease.revoke`), and the token's Redis mirror follows, so
    its MariaDB and Redis writes are refused and its driver stops at its next beat. Returns the
    token now in force."""
    from streamops.db import connect
    from streamops.supervision import lease as leases

    with closing(connect(settings)) as connection:
        token = leases.revoke(connection, handle.lease())
    mirror_fence(settings, Lease(handle.checkpoint_location, None, token))
    log.warning(
        "%s: fenced the job of token %s on %s: the lease's token is %s now",
        handle.pipeline,
        handle.fencing_token,
        handle.host,
        token,
    )
    return token


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


def _lease_key(handle: JobHandle) -> str:
    """The key of the lease the job runs under: heartbeat and stop request are per checkpoint."""
    return checkpoint_key(handle.checkpoint_location)
