"""The supervisor's word against the truth, sampled every second.

Each :class:`Sample` holds, at one moment:

- what the supervisor says of each pipeline: the state on the operations page (the streamops
  plugin's ``/pipelines``, what `streamops pipeline list` and the UI show), and the job pid it
  names;
- the truth from the process table: each pipeline's live job sessions (a session counts while a
  JVM or a Python process of the job lives in it; a lone ``sh`` writing an exit code does not
  write to a checkpoint), and which session holds the lease;
- the truth from the heartbeats: each query's Redis hash (last heartbeat, consumed offsets).

:func:`wrong_verdicts` then judges the series, with a tolerance for the page and the process
table not being read at the same instant:

- *healthy while dead*: the page said ``running`` (or ``starting``/``overloaded``, which also
  claim a live job) while no process of the named job lived in any scan from the last one before
  the page was asked (and at least ``TOLERANCE_SECONDS`` before) to ``TOLERANCE_SECONDS`` after
  it answered;
- *dead while running*: the page said ``failed``, ``stopped``, ``stalled``, ``backing_off``,
  ``waiting`` or ``breaker_open`` while the job that held the lease lived in every scan of that
  span and its queries reported progress both in the ``PROGRESS_BEFORE_SECONDS`` before and in
  the ``PROGRESS_AFTER_SECONDS`` after: it was making progress then. (Progress only before is a
  job that just died; progress only after is a job that was stuck and came back.)

:func:`two_writers` lists every scan that found two live sessions of one pipeline.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psutil

# Page states that claim a live, working job, and those that claim none is working.
ALIVE_STATES = frozenset({"running", "starting", "overloaded"})
DEAD_STATES = frozenset({"failed", "stopped", "stalled", "backing_off", "waiting", "breaker_open"})
UNKNOWN = "unknown"
SAMPLE_INTERVAL_SECONDS = 1.0
TOLERANCE_SECONDS = 2.0
PROGRESS_BEFORE_SECONDS = 15.0
PROGRESS_AFTER_SECONDS = 15.0

# pipeline → query → topic → partition → offset consumed up to (the listener's end_offsets)
ConsumedOffsets = dict[str, dict[str, dict[str, dict[int, int]]]]


@dataclass
class Sample:
    at: float
    # The page: pipeline → state, and the job pid it names (None: no job, or the page failed).
    states: dict[str, str]
    page_pids: dict[str, int | None]
    # The process table: pipeline → live session ids (each a job launch).
    sessions: dict[str, list[int]]
    # The lease: pipeline → the holder's session id (its wrapper pid); the last one known when
    # MariaDB does not answer.
    holders: dict[str, int | None]
    # The heartbeats: pipeline → the oldest of its queries' latest heartbeats (epoch seconds),
    # None unless every query says it is running: the pipeline progresses only when all do.
    heartbeats: dict[str, float | None]
    consumed: ConsumedOffsets = field(default_factory=dict)
    load1: float = 0.0
    # The lease: pipeline → when its holder last renewed it (epoch seconds): the supervisor lives.
    renewed: dict[str, float | None] = field(default_factory=dict)
    # When the page's request began (``at`` is when it answered): the page looked at the job
    # some time in between, which on a loaded machine is seconds.
    page_started: float | None = None

    @property
    def asked_at(self) -> float:
        return self.at if self.page_started is None else self.page_started

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "states": self.states,
            "page_pids": self.page_pids,
            "sessions": self.sessions,
            "holders": self.holders,
            "heartbeats": self.heartbeats,
            "load1": self.load1,
        }


@dataclass(frozen=True)
class WrongVerdict:
    at: float
    pipeline: str
    said: str
    truth: str
    detail: str

    def to_dict(self, started_at: float) -> dict[str, Any]:
        return {
            "at": self.at,
            "elapsed_seconds": round(self.at - started_at, 1),
            "pipeline": self.pipeline,
            "said": self.said,
            "truth": self.truth,
            "detail": self.detail,
        }


# --- judging (pure) ------------------------------------------------------------------------------


def _around(samples: Sequence[Sample], at: float, before: float, after: float) -> list[Sample]:
    return [s for s in samples if at - before <= s.at <= at + after]


def _span(samples: Sequence[Sample], sample: Sample) -> list[Sample]:
    """The scans that bound what the page could have seen: every one from the page's request
    (less the tolerance) to its answer (plus it), and the last one before the request however
    long before. A sample's scan follows its own page read, so on a loaded machine the scan
    before a request can be seconds older; a job alive in it may have died while the page looked,
    and a page that said running then was not provably wrong."""
    span = _around(
        samples,
        sample.at,
        sample.at - sample.asked_at + TOLERANCE_SECONDS,
        TOLERANCE_SECONDS,
    )
    before = [s for s in samples if s.at <= sample.asked_at]
    if before and before[-1] not in span:
        span.insert(0, before[-1])
    return span


def wrong_verdicts(samples: Sequence[Sample]) -> list[WrongVerdict]:
    """Every sample whose page state the process table and the heartbeats contradict."""
    wrong = []
    for sample in samples:
        span = _span(samples, sample)
        for pipeline, said in sample.states.items():
            if said in ALIVE_STATES:
                pid = sample.page_pids.get(pipeline)
                if pid is None:
                    if said == "starting":
                        continue  # a launch before its job was recorded: nothing to contradict
                    # Running with no job named (no lease): some job of the pipeline must live.
                    if all(not s.sessions.get(pipeline) for s in span):
                        wrong.append(
                            WrongVerdict(
                                sample.at,
                                pipeline,
                                said,
                                "dead",
                                "no job named and no process of the pipeline alive from "
                                f"{TOLERANCE_SECONDS:g} s before to {TOLERANCE_SECONDS:g} s after",
                            )
                        )
                    continue
                if all(pid not in s.sessions.get(pipeline, []) for s in span):
                    wrong.append(
                        WrongVerdict(
                            sample.at,
                            pipeline,
                            said,
                            "dead",
                            f"no process of job session {pid} alive from "
                            f"{TOLERANCE_SECONDS:g} s before to {TOLERANCE_SECONDS:g} s after",
                        )
                    )
            elif said in DEAD_STATES:
                holder = sample.holders.get(pipeline)
                if holder is None or not all(holder in s.sessions.get(pipeline, []) for s in span):
                    continue
                if all(s.holders.get(pipeline) == holder for s in span) and _progressing(
                    samples, sample.at, pipeline
                ):
                    wrong.append(
                        WrongVerdict(
                            sample.at,
                            pipeline,
                            said,
                            "running",
                            f"job session {holder} alive throughout and its queries reported "
                            f"progress in the {PROGRESS_BEFORE_SECONDS:g} s before and the "
                            f"{PROGRESS_AFTER_SECONDS:g} s after",
                        )
                    )
    return wrong


def _progressing(samples: Sequence[Sample], at: float, pipeline: str) -> bool:
    """Heartbeats of ``pipeline`` both just before ``at`` and just after it."""
    beats = {
        beat
        for later in _around(samples, at, PROGRESS_BEFORE_SECONDS, PROGRESS_AFTER_SECONDS)
        if (beat := later.heartbeats.get(pipeline)) is not None
    }
    before = any(at - PROGRESS_BEFORE_SECONDS <= beat <= at for beat in beats)
    after = any(at < beat <= at + PROGRESS_AFTER_SECONDS for beat in beats)
    return before and after


@dataclass(frozen=True)
class TwoWriters:
    at: float
    pipeline: str
    sessions: tuple[int, ...]

    def to_dict(self, started_at: float) -> dict[str, Any]:
        return {
            "at": self.at,
            "elapsed_seconds": round(self.at - started_at, 1),
            "pipeline": self.pipeline,
            "sessions": list(self.sessions),
        }


def two_writers(samples: Iterable[Sample]) -> list[TwoWriters]:
    """Every scan that found more than one live job session of a pipeline."""
    return [
        TwoWriters(sample.at, pipeline, tuple(sorted(sessions)))
        for sample in samples
        for pipeline, sessions in sample.sessions.items()
        if len(sessions) > 1
    ]


def max_sessions(samples: Iterable[Sample]) -> dict[str, int]:
    most: dict[str, int] = {}
    for sample in samples:
        for pipeline, sessions in sample.sessions.items():
            most[pipeline] = max(most.get(pipeline, 0), len(sessions))
    return most


def timeline(samples: Iterable[Sample], started_at: float) -> dict[str, list[list[Any]]]:
    """pipeline → [[elapsed seconds, state], ...] at each change of the page's state."""
    changes: dict[str, list[list[Any]]] = {}
    for sample in samples:
        for pipeline, state in sample.states.items():
            series = changes.setdefault(pipeline, [])
            if not series or series[-1][1] != state:
                series.append([round(sample.at - started_at, 1), state])
    return changes


def state_counts(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        for pipeline, state in sample.states.items():
            by_state = counts.setdefault(pipeline, {})
            by_state[state] = by_state.get(state, 0) + 1
    return counts


def caught_up(
    consumed: Mapping[str, Mapping[str, Mapping[int, int]]],
    targets: Mapping[str, Mapping[int, int]],
) -> bool:
    """Every query has consumed each of its topics' partitions up to ``targets``.

    ``consumed``: query → topic → partition → offset; ``targets``: topic → partition → offset. A
    query is judged on the topics it reads; a query that has reported no offsets yet is not
    caught up.
    """
    if not consumed:
        return False
    for offsets in consumed.values():
        if not offsets:
            return False
        for topic, partitions in offsets.items():
            for partition, target in targets.get(topic, {}).items():
                if partitions.get(partition, -1) < target:
                    return False
    return True


def pipeline_heartbeat(queries: Iterable[Mapping[str, str]]) -> float | None:
    """The oldest of the queries' latest heartbeats, when every query says it is running; None
    when any is not (stopped, failed, restarting: a terminating query's last write is no
    progress) or has never reported."""
    beats = []
    for fields in queries:
        if fields.get("state") != "running":
            return None
        try:
            beats.append(float(fields["heartbeat_at"]))
        except (KeyError, TypeError, ValueError):
            return None
    return min(beats, default=None)


# --- sampling (I/O) -------------------------------------------------------------------------------


def job_sessions(state_dir: str, pipelines: Iterable[str]) -> dict[str, list[int]]:
    """pipeline → the sessions in which a JVM or Python process of its job lives (this host,
    this state folder)."""
    from streamops.supervision.job_processes import JOB_PIPELINE_ENV, STATE_DIR_ENV

    wanted = set(pipelines)
    found: dict[str, set[int]] = {name: set() for name in wanted}
    me = os.getpid()
    for process in psutil.process_iter(["name"]):
        name = (process.info.get("name") or "").lower()
        if process.pid == me or not (name == "java" or name.startswith("python")):
            continue
        with suppress(psutil.Error, OSError):
            env = process.environ()
            pipeline = env.get(JOB_PIPELINE_ENV)
            if pipeline not in wanted or env.get(STATE_DIR_ENV) != state_dir:
                continue
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            found[str(pipeline)].add(os.getsid(process.pid))
    return {name: sorted(sessions) for name, sessions in found.items()}


class VerdictSampler:
    """A thread that takes a :class:`Sample` every ``interval`` seconds until stopped.

    ``read_page`` returns the page's rows (the plugin's ``/pipelines``); ``read_leases`` the
    lease holder's session and when the lease was last renewed, per pipeline; ``read_hashes`` the
    queries' Redis hashes. Any of them failing leaves its part unknown (or, for the lease, as
    last read) for that sample: a service down is part of the chaos. A sample that fails as a
    whole is counted in ``errors`` and the loop goes on.
    """

    def __init__(
        self,
        *,
        state_dir: str,
        pipelines: Sequence[str],
        read_page: Callable[[], list[dict[str, Any]]],
        read_leases: Callable[[], dict[str, tuple[int | None, float | None]]],
        read_hashes: Callable[[], dict[str, dict[str, dict[str, str]]]],
        interval: float = SAMPLE_INTERVAL_SECONDS,
    ) -> None:
        self.state_dir = state_dir
        self.pipelines = list(pipelines)
        self._read_page = read_page
        self._read_leases = read_leases
        self._read_hashes = read_hashes
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors: dict[str, int] = {}
        self._holders: dict[str, int | None] = dict.fromkeys(self.pipelines)
        self._renewed: dict[str, float | None] = dict.fromkeys(self.pipelines)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-verdicts", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the sampling; a sampler never started (the platform was not ready) has none."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def latest(self) -> Sample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                sample = self.take()
            except Exception:  # never let one bad read end the sampling
                self._count("sample")
            else:
                with self._lock:
                    self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _count(self, source: str) -> None:
        self.errors[source] = self.errors.get(source, 0) + 1

    def take(self) -> Sample:
        from streamops_airflow.ui.pipeline_status import parse_source_offsets

        states = dict.fromkeys(self.pipelines, UNKNOWN)
        page_pids: dict[str, int | None] = dict.fromkeys(self.pipelines)
        page_started = time.time()
        try:
            for row in self._read_page():
                if row["name"] in states:
                    states[row["name"]] = str(row["state"])
                    page_pids[row["name"]] = row.get("job_pid")
        except Exception:
            self._count("page")
        # The page's request can take seconds: the sample's time is when it answered, right
        # before the process table is read.
        at = time.time()
        sessions = job_sessions(self.state_dir, self.pipelines)
        try:
            for pipeline, (holder, renewed) in self._read_leases().items():
                self._holders[pipeline], self._renewed[pipeline] = holder, renewed
        except Exception:
            self._count("lease")
        heartbeats: dict[str, float | None] = dict.fromkeys(self.pipelines)
        consumed: ConsumedOffsets = {}
        try:
            for pipeline, queries in self._read_hashes().items():
                heartbeats[pipeline] = pipeline_heartbeat(queries.values())
                for query, fields in queries.items():
                    consumed.setdefault(pipeline, {})[query] = parse_source_offsets(
                        fields.get("end_offsets")
                    )
        except Exception:
            self._count("heartbeats")
        return Sample(
            at=at,
            states=states,
            page_pids=page_pids,
            sessions=sessions,
            holders=dict(self._holders),
            heartbeats=heartbeats,
            consumed=consumed,
            load1=os.getloadavg()[0],
            renewed=dict(self._renewed),
            page_started=page_started,
        )
