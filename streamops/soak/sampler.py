"""What the platform costs and how healthy it is while the soak runs, sampled every few seconds.

Cost, per *component* (a process group):

- each pipeline's Spark job: the session its lease names (the ``sh`` wrapper that leads it, the
  spark-submit JVM, the Python driver, the pyspark daemon and workers), found with
  :meth:`streamops.stack.pipelines.SupervisedPipeline.job`;
- every other stack component from its pid file (``Stack(settings).components``): each Airflow
  process with its task processes, Kafka, MariaDB, Redis, PostgreSQL, the dashboard, and the four
  generators as one group ``generators``;
- ``soak``: this process, so the probes' own cost is not charged to the platform;
- ``other``: the rest of the machine, the machine's busy CPU minus every group's.

A process belongs to the group of its nearest ancestor (itself included) that is a group's root;
failing that, to the group whose root leads its session; else to none (``other``). Pipelines are
roots of their own, so a job launched by an Airflow process is the pipeline's, not Airflow's.

CPU is counted per process from ``cpu_times`` (user + system + its reaped children's), as the
difference between two samples of the same process (pid *and* start time). A process born
between two samples counts whole; one that exited counts up to the last sample that saw it, and
the rest arrives through the parent that reaps it (its children's times grow by the child's
total, of which what was already counted is taken off). A process that starts and ends between
two samples and is reaped by a parent outside every group is missed, as is one whose parent does
not wait for it; the report says so.

RSS is the sum of the members' resident set sizes: pages shared between processes (forked
workers, shared libraries) are counted once per process, so the sum is an upper bound. Once a
minute the proportional set size (PSS: each shared page split between its users) is read too;
it sums to what the processes really hold, but reading it walks every mapping (about a second
of CPU for the whole platform), hence not every sample.

Health, per pipeline: the verdict of the supervisor's own rule
(:func:`streamops.supervision.job_processes.local_health`), ``restarts_total`` of
``pipeline_restart_state``, the job's pid (a new one is a relaunch), and the Kafka lag the
operations page computes (``streamops_airflow.ui``); plus the machine's load average.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from streamops.config import Settings

log = logging.getLogger(__name__)

OTHER = "other"
SOAK = "soak"
GENERATORS = "generators"
# How often cost and health are sampled, and the Kafka lag (a new consumer per read).
SAMPLE_INTERVAL_SECONDS = 5.0
LAG_INTERVAL_SECONDS = 15.0
PSS_INTERVAL_SECONDS = 60.0
# A parent chain longer than this is a cycle in a racy scan, not a real process tree.
MAX_TREE_DEPTH = 64


@dataclass(frozen=True)
class ProcessSample:
    """One process as one scan saw it. ``cpu_seconds`` includes its reaped children's times."""

    pid: int
    ppid: int
    sid: int
    create_time: float
    cpu_seconds: float
    rss_bytes: int

    @property
    def key(self) -> tuple[int, float]:
        # A pid is reused; pid and start time together name one process.
        return (self.pid, round(self.create_time, 2))


@dataclass(frozen=True)
class Snapshot:
    """One scan of the machine: ``groups`` maps the pid of every grouped process to its group."""

    taken_at: float  # wall clock when the scan began
    processes: Mapping[int, ProcessSample]
    groups: Mapping[int, str]
    machine_busy_seconds: float
    memory_used_bytes: int = 0


# --- pure: grouping and accounting ----------------------------------------------------------


def assign_groups(
    processes: Mapping[int, ProcessSample], roots: Mapping[int, str]
) -> dict[int, str]:
    """pid → group for every process that belongs to one (see the module): nearest ancestor
    (itself included) that is a root, else the root leading its session."""
    groups: dict[int, str] = {}
    for pid, process in processes.items():
        group = _nearest_root(pid, processes, roots)
        if group is None:
            group = roots.get(process.sid)
        if group is not None:
            groups[pid] = group
    return groups


def _nearest_root(
    pid: int, processes: Mapping[int, ProcessSample], roots: Mapping[int, str]
) -> str | None:
    current = pid
    for _ in range(MAX_TREE_DEPTH):
        if current in roots:
            return roots[current]
        process = processes.get(current)
        if process is None or process.ppid == current:
            return None
        current = process.ppid
    return None


def cpu_by_group(previous: Snapshot, current: Snapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (never negative); see the module."""
    totals: dict[str, float] = defaultdict(float)
    before = {process.key: process for process in previous.processes.values()}
    now_keys = {process.key for process in current.processes.values()}
    for pid, process in current.processes.items():
        group = current.groups.get(pid)
        if group is None:
            continue
        seen = before.get(process.key)
        if seen is not None:
            totals[group] += process.cpu_seconds - seen.cpu_seconds
        elif process.create_time >= previous.taken_at:
            totals[group] += process.cpu_seconds  # born since the last scan: all of it is new
        else:
            totals[group] += 0.0  # first seen, but older: its past is not this interval's
    # An exited process's total now sits in the children's times of the parent that reaped it,
    # which the loop above counted as new: take off what was counted while it was alive.
    gone = [p for p in previous.processes.values() if p.key not in now_keys]
    children: dict[int, list[ProcessSample]] = defaultdict(list)
    for process in gone:
        children[process.ppid].append(process)
    for process in gone:
        parent = previous.processes.get(process.ppid)
        if parent is None or parent.key not in now_keys:
            continue  # its parent is gone too (the subtree is settled at its root) or unknown
        group = current.groups.get(parent.pid)
        if group is not None:
            totals[group] -= _subtree_seconds(process, children)
    return {group: max(0.0, seconds) for group, seconds in totals.items()}


def _subtree_seconds(root: ProcessSample, children: Mapping[int, list[ProcessSample]]) -> float:
    """CPU seconds last seen of ``root`` and of its descendants that exited with it."""
    total = 0.0
    stack = [root]
    visited: set[tuple[int, float]] = set()
    while stack:
        process = stack.pop()
        if process.key in visited:
            continue
        visited.add(process.key)
        total += process.cpu_seconds
        stack.extend(children.get(process.pid, ()))
    return total


def rss_by_group(snapshot: Snapshot) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for pid, group in snapshot.groups.items():
        totals[group] += snapshot.processes[pid].rss_bytes
    return dict(totals)


def cost_sample(previous: Snapshot, current: Snapshot, started_at: float) -> dict[str, Any]:
    """The report's record of one interval: cores per group (``other`` = the machine's busy
    CPU not in any group), RSS per group, and the machine's busy cores and used memory."""
    interval = max(current.taken_at - previous.taken_at, 1e-6)
    cpu = cpu_by_group(previous, current)
    machine = max(0.0, current.machine_busy_seconds - previous.machine_busy_seconds)
    cpu[OTHER] = max(0.0, machine - sum(cpu.values()))
    return {
        "elapsed_seconds": round(current.taken_at - started_at, 2),
        "interval_seconds": round(interval, 3),
        "cores": {group: round(seconds / interval, 4) for group, seconds in sorted(cpu.items())},
        "rss_bytes": dict(sorted(rss_by_group(current).items())),
        "machine_cores": round(machine / interval, 4),
        "memory_used_bytes": current.memory_used_bytes,
    }


# --- impure: scans and the platform's roots -------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs): everything but idle and iowait.
    ``guest`` is already inside ``user`` on Linux, so it is not added again."""
    times = psutil.cpu_times()
    return sum(
        getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal")
    )


def scan_processes() -> dict[int, ProcessSample]:
    """Every process this user may read (root: all), zombies included (their times still count)."""
    found: dict[int, ProcessSample] = {}
    for process in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times", "memory_info"]):
        info = process.info
        times, memory = info.get("cpu_times"), info.get("memory_info")
        if times is None or info.get("create_time") is None:
            continue  # gone mid-scan, or not ours to read
        try:
            sid = os.getsid(info["pid"])
        except OSError:
            continue
        found[info["pid"]] = ProcessSample(
            pid=info["pid"],
            ppid=info.get("ppid") or 0,
            sid=sid,
            create_time=float(info["create_time"]),
            cpu_seconds=times.user
            + times.system
            + getattr(times, "children_user", 0.0)
            + getattr(times, "children_system", 0.0),
            rss_bytes=int(memory.rss) if memory is not None else 0,
        )
    return found


def scan_pss(pids: Iterable[int]) -> dict[int, int]:
    """Each readable process's proportional set size in bytes (``Pss:`` of smaps_rollup)."""
    found: dict[int, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        found[pid] = int(line.split()[1]) * 1024  # kB
                        break
        except (OSError, ValueError, IndexError):
            continue  # exited, a kernel thread, or not ours to read
    return found


def pss_by_group(groups: Mapping[int, str], pss: Mapping[int, int]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for pid, group in groups.items():
        totals[group] += pss.get(pid, 0)
    return dict(sorted(totals.items()))


def take_snapshot(roots: Mapping[int, str]) -> Snapshot:
    taken_at = time.time()
    busy = machine_busy_seconds()
    processes = scan_processes()
    return Snapshot(
        taken_at=taken_at,
        processes=processes,
        groups=assign_groups(processes, roots),
        machine_busy_seconds=busy,
        memory_used_bytes=int(psutil.virtual_memory().used),
    )


@dataclass
class Platform:
    """The running platform as the soak sees it: stack components and pipeline specs."""

    settings: Settings
    stack: Any  # streamops.stack.Stack (imported lazily: it pulls in Airflow's REST client)
    specs: dict[str, Any]  # pipeline name → PipelineSpec, enabled ones

    @classmethod
    def load(cls, settings: Settings) -> Platform:
        from streamops.stack import Stack

        stack = Stack(settings)
        specs = {p.spec.name: p.spec for p in stack.pipelines if p.spec.enabled}
        return cls(settings, stack, specs)

    def pipeline(self, name: str) -> Any:
        return next(p for p in self.stack.pipelines if p.spec.name == name)

    def job_handles(self) -> dict[str, Any]:
        """pipeline → its job's handle while the job process runs (absent otherwise)."""
        from streamops.supervision import job_processes

        handles = {}
        for name in self.specs:
            try:
                handle = self.pipeline(name).job()
            except Exception as error:  # MariaDB away for a moment: no handle this time
                log.debug("no handle for %s: %s", name, error)
                continue
            if handle is not None and job_processes.process_is_running(handle):
                handles[name] = handle
        return handles

    def roots(self, handles: Mapping[str, Any]) -> dict[int, str]:
        """root pid → group: every running component, each running job, this process."""
        roots: dict[int, str] = {}
        pipelines = {p.name for p in self.stack.pipelines}
        for component in self.stack.components:
            if component.name in pipelines:
                continue  # found through their handles below
            pid = component.running_pid()
            if pid is not None:
                roots[pid] = (
                    GENERATORS if component.name.startswith("generator-") else component.name
                )
        for name, handle in handles.items():
            roots[handle.pid] = self.pipeline(name).name
        roots[os.getpid()] = SOAK
        return roots

    def component_groups(self) -> list[str]:
        """Every group the report may hold, in the order tables and charts list them."""
        names = [p.name for p in self.stack.pipelines if p.spec.enabled]
        names += [c.name for c in self.stack.airflow]
        names += [c.name for c in self.stack.services]
        if self.stack.generators:
            names.append(GENERATORS)
        return [*names, SOAK, OTHER]

    def not_running(self) -> list[str]:
        """Components other than the pipelines whose process is not running."""
        pipelines = {p.name for p in self.stack.pipelines}
        return [
            c.name
            for c in self.stack.components
            if c.name not in pipelines and c.running_pid() is None
        ]


# --- the sampling thread --------------------------------------------------------------------


@dataclass
class HealthRecorder:
    """Everything the sampler saw of the pipelines' health, for :func:`report.health_report`."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    lags: list[dict[str, Any]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)
    restarts_first: dict[str, int] = field(default_factory=dict)
    restarts_last: dict[str, int] = field(default_factory=dict)
    job_pids: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class PlatformSampler:
    """A thread that samples cost and health every ``interval`` seconds until stopped."""

    def __init__(
        self,
        platform: Platform,
        *,
        started_at: float,
        interval: float = SAMPLE_INTERVAL_SECONDS,
        lag_interval: float = LAG_INTERVAL_SECONDS,
        pss_interval: float = PSS_INTERVAL_SECONDS,
    ) -> None:
        self.platform = platform
        self.started_at = started_at
        self.interval = interval
        self.lag_interval = lag_interval
        self.pss_interval = pss_interval
        self._last_pss = 0.0
        self.cost: list[dict[str, Any]] = []
        self.health = HealthRecorder()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot: Snapshot | None = None
        self._last_lag = 0.0
        self._connection: Any = None

    def __enter__(self) -> PlatformSampler:
        # The baseline: CPU is a difference, so the first interval needs a scan before it.
        handles = self.platform.job_handles()
        self._snapshot = take_snapshot(self.platform.roots(handles))
        self._sample_health(handles)
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        # One last interval, so the report covers the run to its end.
        self._sample_once()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()

    def latest_cost(self) -> dict[str, Any] | None:
        with self.lock:
            return self.cost[-1] if self.cost else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    def _sample_once(self) -> None:
        try:
            handles = self.platform.job_handles()
            snapshot = take_snapshot(self.platform.roots(handles))
            if self._snapshot is not None:
                sample = cost_sample(self._snapshot, snapshot, self.started_at)
                if snapshot.taken_at - self._last_pss >= self.pss_interval:
                    self._last_pss = snapshot.taken_at
                    sample["pss_bytes"] = pss_by_group(snapshot.groups, scan_pss(snapshot.groups))
                with self.lock:
                    self.cost.append(sample)
            self._snapshot = snapshot
            self._sample_health(handles)
        except Exception as error:  # one failed sample must not end the soak
            self._error(f"sample: {type(error).__name__}: {error}")

    def _sample_health(self, handles: Mapping[str, Any]) -> None:
        from streamops.supervision import job_processes

        now = time.time()
        elapsed = round(now - self.started_at, 2)
        statuses: dict[str, str] = {}
        details: dict[str, str] = {}
        for name, spec in self.platform.specs.items():
            handle = handles.get(name)
            if handle is None:
                statuses[name] = "not_running"
                continue
            try:
                health = job_processes.local_health(spec, self.platform.settings, handle)
            except Exception as error:  # Redis away: unknown, and said so
                statuses[name] = "unknown"
                details[name] = f"{type(error).__name__}: {error}"
                continue
            statuses[name] = str(health.status)
            if statuses[name] != "healthy":
                details[name] = health.detail
        load1, load5, load15 = os.getloadavg()
        restarts = self._restarts()
        with self.lock:
            self.health.verdicts.append(
                {"elapsed_seconds": elapsed, "statuses": statuses, "details": details}
            )
            self.health.loads.append(
                {
                    "elapsed_seconds": elapsed,
                    "load1": round(load1, 2),
                    "load5": round(load5, 2),
                    "load15": round(load15, 2),
                }
            )
            for name, handle in handles.items():
                pids = self.health.job_pids.setdefault(name, [])
                if not pids or pids[-1] != handle.pid:
                    pids.append(handle.pid)
            if restarts:
                for name, total in restarts.items():
                    self.health.restarts_first.setdefault(name, total)
                    self.health.restarts_last[name] = total
        if now - self._last_lag >= self.lag_interval:
            self._last_lag = now
            lags = self._lags()
            if lags is not None:
                with self.lock:
                    self.health.lags.append({"elapsed_seconds": elapsed, "lag": lags})

    def _restarts(self) -> dict[str, int] | None:
        """``restarts_total`` per pipeline (0 for one never restarted); None when unreadable."""
        from streamops.db import connect

        try:
            if self._connection is None:
                self._connection = connect(self.platform.settings)
                self._connection.autocommit = True
            cursor = self._connection.cursor()
            cursor.execute("SELECT pipeline, restarts_total FROM pipeline_restart_state")
            stored = {str(name): int(total) for name, total in cursor.fetchall()}
        except Exception as error:
            self._error(f"restart state: {type(error).__name__}: {error}")
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
            self._connection = None
            return None
        return {name: stored.get(name, 0) for name in self.platform.specs}

    def _lags(self) -> dict[str, int | None] | None:
        """Kafka lag per pipeline as the operations page computes it: per query, records between
        its last batch's end offsets and the topics' ends; the pipeline's is its worst query's."""
        try:
            from streamops_airflow.ui.pipeline_sources import (
                read_query_hashes,
                read_topic_end_offsets,
            )
            from streamops_airflow.ui.pipeline_status import kafka_lag, parse_source_offsets
        except ImportError as error:  # the operations page's code is broken: no lag, said once
            self.lag_interval = float("inf")
            self._error(f"Kafka lag not measured: {type(error).__name__}: {error}")
            return None
        try:
            specs = list(self.platform.specs.values())
            hashes = read_query_hashes(specs, self.platform.settings)
            consumed = {
                (pipeline, query): parse_source_offsets(fields.get("end_offsets"))
                for pipeline, queries in hashes.items()
                for query, fields in queries.items()
            }
            topics = sorted({topic for offsets in consumed.values() for topic in offsets})
            ends = read_topic_end_offsets(topics, self.platform.settings) if topics else {}
        except Exception as error:
            self._error(f"Kafka lag: {type(error).__name__}: {error}")
            return None
        lags: dict[str, int | None] = {}
        for name in self.platform.specs:
            values = [
                lag
                for (pipeline, _), offsets in consumed.items()
                if pipeline == name and (lag := kafka_lag(offsets, ends)) is not None
            ]
            lags[name] = max(values) if values else None
        return lags

    def _error(self, message: str) -> None:
        log.warning("soak sampler: %s", message)
        with self.lock:
            # The first few of each kind are enough to tell what went wrong.
            if len(self.health.errors) < 20:
                self.health.errors.append(message)
