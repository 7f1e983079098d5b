"""What the chaos suite breaks, and how.

- ``kill_shell``, ``kill_jvm``, ``kill_driver``, ``kill_worker``: SIGKILL to one process of a
  pipeline's job: the ``sh`` wrapper that leads its session, spark-submit's JVM, the Python
  driver, or one of Spark's Python workers.
- ``kill_scheduler``, ``kill_triggerer``, ``kill_dag_processor``: SIGKILL to every process of
  that Airflow component (a container that dies takes all its processes), then a start
  ``RESTART_DELAY_SECONDS`` later, as a container's restart policy or Kubernetes would.
- ``restart_kafka``: the broker stopped (gracefully) and started again.
- ``stop_mariadb``, ``stop_redis``: the service stopped for the outage, then started again.
- ``kill_point_revenue``, ``kill_point_chunks``: a kill point armed (``streamops.faults``): the
  orders driver dies between a revenue batch's MariaDB and Redis writes, or any job's driver
  dies between two chunk commits of one sink write (only writes of more than one chunk reach
  that point).

Each injection returns an :class:`Injection`: when the fault began and ended, which pipelines
must recover from it, and what exactly was done.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field

import psutil

from streamops import faults as kill_points
from streamops.config import Settings
from streamops.supervision import job_processes
from streamops.supervision import lease as leases
from streamops.supervision.spec import PipelineSpec

PROCESS_KILLS = ("kill_shell", "kill_jvm", "kill_driver", "kill_worker")
AIRFLOW_KILLS = ("kill_scheduler", "kill_triggerer", "kill_dag_processor")
OUTAGES = ("restart_kafka", "stop_mariadb", "stop_redis")
KILL_POINTS = ("kill_point_revenue", "kill_point_chunks")
ALL_FAULTS: tuple[str, ...] = (*PROCESS_KILLS, *AIRFLOW_KILLS, *OUTAGES, *KILL_POINTS)

AIRFLOW_COMPONENT = {
    "kill_scheduler": "airflow-scheduler",
    "kill_triggerer": "airflow-triggerer",
    "kill_dag_processor": "airflow-dag-processor",
}
SERVICE = {"restart_kafka": "kafka", "stop_mariadb": "mariadb", "stop_redis": "redis"}
KILL_POINT = {
    "kill_point_revenue": ("orders", "orders_revenue:between_mariadb_and_redis"),
    "kill_point_chunks": ("", "mariadb:between_chunks"),
}
# A killed container comes back after this long (Kubernetes' first restart back-off is 10 s).
RESTART_DELAY_SECONDS = 5.0
# An armed kill point no process reached by then is disarmed and reported as not fired.
KILL_POINT_WAIT_SECONDS = 90.0


class FaultError(Exception):
    """The fault could not be injected (no such process now, a service would not start)."""


@dataclass
class Injection:
    kind: str
    target: str
    pipelines: list[str]
    injected_at: float
    ended_at: float
    detail: str
    pids: list[int] = field(default_factory=list)


def pick_target(kind: str, pipelines: list[str], rng: random.Random) -> str:
    """The target of ``kind``: a random pipeline for a process kill, else what the kind names."""
    if kind in PROCESS_KILLS:
        return rng.choice(sorted(pipelines))
    if kind in AIRFLOW_COMPONENT:
        return AIRFLOW_COMPONENT[kind]
    if kind in SERVICE:
        return SERVICE[kind]
    if kind in KILL_POINT:
        return KILL_POINT[kind][0] or "any pipeline"
    raise ValueError(f"unknown fault kind {kind!r}; the kinds are {', '.join(ALL_FAULTS)}")


def affected(kind: str, target: str, pipelines: list[str]) -> list[str]:
    """The pipelines that must have recovered before the fault counts as recovered."""
    if kind in PROCESS_KILLS or (kind in KILL_POINT and target in pipelines):
        return [target]
    return sorted(pipelines)


def role_of(process: psutil.Process, wrapper_pid: int) -> str:
    """shell, jvm, driver or worker: what a process of a local job is."""
    if process.pid == wrapper_pid:
        return "shell"
    name = process.name().lower()
    if name == "java":
        return "jvm"
    if name.startswith("python"):
        workers = any(arg.startswith("pyspark.") for arg in process.cmdline())
        return "worker" if workers else "driver"
    return "other"


def job_handle(settings: Settings, spec: PipelineSpec) -> job_processes.JobHandle | None:
    """The handle of the job holding ``spec``'s lease now, if any."""
    from streamops.db import connect

    with closing(connect(settings)) as connection:
        lease = leases.current(connection, spec.checkpoint_location(settings.checkpoint_root))
    if lease is None or lease.owner is None or not lease.pid:
        return None
    return job_processes.handle_from_lease(spec, settings, lease)


def kill_process(
    settings: Settings, spec: PipelineSpec, role: str, rng: random.Random
) -> tuple[str, list[int]]:
    """SIGKILL one process of ``role`` of the pipeline's running job."""
    handle = job_handle(settings, spec)
    if handle is None:
        raise FaultError(f"{spec.name}: no job holds the lease now")
    members = job_processes.job_processes(handle)
    candidates = []
    for process in members:
        with suppress(psutil.Error):
            if role_of(process, handle.pid) == role:
                candidates.append(process)
    if not candidates:
        roles = sorted({_role_or_gone(p, handle.pid) for p in members})
        raise FaultError(
            f"{spec.name}: no {role} process in the job's session {handle.pid} now "
            f"(it has: {', '.join(roles) or 'nothing'})"
        )
    victim = rng.choice(candidates)
    os.kill(victim.pid, signal.SIGKILL)
    return f"SIGKILL to pid {victim.pid} ({role} of {spec.name}, session {handle.pid})", [
        victim.pid
    ]


def _role_or_gone(process: psutil.Process, wrapper_pid: int) -> str:
    try:
        return role_of(process, wrapper_pid)
    except psutil.Error:
        return "gone"


def kill_component(component: object, sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """SIGKILL every process of a stack component's session, wait for them to go, start it
    again after ``RESTART_DELAY_SECONDS`` and wait for its health."""
    from streamops.processes import session_members
    from streamops.stack.base import Component

    assert isinstance(component, Component)
    pid = component.running_pid()
    if pid is None:
        raise FaultError(f"{component.name} is not running")
    pids = session_members(pid)  # the same members `stop` would signal
    for member in pids:
        with suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    victims = []
    for member in pids:
        with suppress(psutil.Error):
            victims.append(psutil.Process(member))
    psutil.wait_procs(victims, timeout=10)
    component.running_pid()  # removes the stale pid file
    try:
        sleep(RESTART_DELAY_SECONDS)
    finally:  # interrupted or not, the component comes back
        component.start()
        component.wait_healthy()
    return pids


def stop_service(
    component: object, outage_seconds: float, sleep: Callable[[float], None] = time.sleep
) -> float:
    """Stop a service, keep it down for ``outage_seconds`` (a restart: 0), start it again and
    wait for its health. Returns when it answered again (epoch seconds)."""
    from streamops.stack.base import Component

    assert isinstance(component, Component)
    if component.running_pid() is None:
        raise FaultError(f"{component.name} is not running")
    component.stop()
    try:
        sleep(outage_seconds)
    finally:  # interrupted or not, the service comes back
        component.start()
        component.wait_healthy()
    return time.time()


def inject(
    kind: str,
    target: str,
    *,
    settings: Settings,
    specs: dict[str, PipelineSpec],
    outage_seconds: float,
    rng: random.Random,
) -> Injection:
    """Inject one fault; returns once it is over (a killed component started again, a stopped
    service answering again, an armed kill point fired or disarmed)."""
    from streamops.stack import Stack

    pipelines = affected(kind, target, list(specs))
    started = time.time()
    if kind in PROCESS_KILLS:
        detail, pids = kill_process(settings, specs[target], kind.removeprefix("kill_"), rng)
        return Injection(kind, target, pipelines, started, started, detail, pids)
    if kind in AIRFLOW_COMPONENT:
        pids = kill_component(Stack(settings).component(target))
        return Injection(
            kind,
            target,
            pipelines,
            started,
            time.time(),
            f"SIGKILL to {len(pids)} processes of {target}, started again after "
            f"{RESTART_DELAY_SECONDS:g} s",
            pids,
        )
    if kind in SERVICE:
        down_for = 0.0 if kind == "restart_kafka" else outage_seconds
        ended = stop_service(Stack(settings).component(target), down_for)
        what = "restarted" if kind == "restart_kafka" else f"stopped for {down_for:g} s"
        return Injection(
            kind, target, pipelines, started, ended, f"{target} {what}, answering again"
        )
    name = KILL_POINT[kind][1]
    kill_points.arm(settings.state_dir, name)
    try:
        deadline = time.monotonic() + KILL_POINT_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not kill_points.armed_path(settings.state_dir, name).exists():
                fired = time.time()
                return Injection(
                    kind, target, pipelines, started, fired, f"kill point {name} fired"
                )
            time.sleep(0.5)
    finally:  # never leave a kill point armed for a later job
        still_armed = kill_points.disarm(settings.state_dir, name)
    if still_armed:
        raise FaultError(
            f"kill point {name} armed for {KILL_POINT_WAIT_SECONDS:g} s and not reached "
            "(disarmed): no write got there"
        )
    fired = time.time()
    return Injection(kind, target, pipelines, started, fired, f"kill point {name} fired")


def disarm_all(settings: Settings) -> list[str]:
    """Remove every kill point armed for ``settings``' state folder (left by an aborted run)."""
    return [name for _, name in KILL_POINT.values() if kill_points.disarm(settings.state_dir, name)]
