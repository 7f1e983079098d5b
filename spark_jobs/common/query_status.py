"""Each query's own status, reported by the job's driver every few seconds: busy is not stalled.

Spark's listener reports a query only when a batch ends (progress) or while it idles, so a query
inside a long batch says nothing until the batch is over: a replay after a restart, or any batch
on a loaded machine, would look stalled from the progress heartbeat alone. The driver's main loop
(``runner.run_queries``) therefore asks every query for its status about once a second and writes
what the health rule (``streamops.supervision.job_health``) needs to the query's Redis hash:

- ``status_at``: when the driver last reported (a driver that stops reporting hangs);
- ``trigger_active``: 1 while a batch (or its planning) runs, with ``status_message`` (Spark's);
- ``batch_started_at``: when the running batch was first seen active;
- ``batch_planned_rows``: rows the running batch planned, from the checkpoint's offsets log
  (local checkpoints; empty elsewhere), so a big replay gets time in proportion;
- ``first_batch``: 1 while no batch of this run has completed (the start-up grace applies);
- ``last_trigger_at``: when a trigger was last seen active.

Beside it, :class:`JobHeartbeat` keeps the job's own heartbeat (one per job, every second, from a
thread of its own) for a supervisor on another host, and stops the job on its stop request.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.common import outages
from spark_jobs.common.listener import (
    DEFAULT_QUERY_KEY_TTL_SECONDS,
    REDIS_TIMEOUT_SECONDS,
    status_redis,
)
from streamops.clients import redis_client
from streamops.config import Settings
from streamops.contract.redis_keys import query_key
from streamops.supervision.fence import Fence
from streamops.supervision.job_beat import BEAT_SECONDS, write_beat
from streamops.supervision.job_health import (
    BATCH_PLANNED_ROWS,
    BATCH_STARTED_AT,
    FIRST_BATCH,
    JOB_BEAT_AT,
    JOB_EXIT_CODE,
    JOB_EXITED_AT,
    JOB_HOST,
    JOB_LOAD_PER_CORE,
    JOB_PID,
    JOB_SESSION,
    JOB_STOPPING,
    LAST_TRIGGER_AT,
    STATUS_AT,
    STATUS_MESSAGE,
    TRIGGER_ACTIVE,
    driver_must_stop,
)

log = logging.getLogger(__name__)

# How often the status goes to Redis (it is observed more often: every pass of the main loop).
REPORT_SECONDS = 5.0
# A failed write is logged at most this often.
_WARN_EVERY_SECONDS = 60.0


@dataclass
class BatchTracker:
    """When the running batch started, from periodic looks at one query (pure, no Spark)."""

    active: bool = False
    batch_started_at: float | None = None
    last_trigger_at: float | None = None
    completed_batch_id: int | None = None
    planned_rows: int | None = None

    def observe(self, now: float, active: bool, completed_batch_id: int | None) -> bool:
        """One look; True when a new batch was seen starting (its planned rows are unknown)."""
        started = active and (not self.active or completed_batch_id != self.completed_batch_id)
        if started:
            self.batch_started_at = now
            self.planned_rows = None
        if active:
            self.last_trigger_at = now
        else:
            self.batch_started_at = None
            self.planned_rows = None
        self.active = active
        self.completed_batch_id = completed_batch_id
        return started

    @property
    def first_batch(self) -> bool:
        return self.completed_batch_id is None


def planned_rows(offsets_dir: Path, completed_batch_id: int | None) -> int | None:
    """Rows the newest planned batch reads: its end offsets less the previous batch's, summed
    over every topic partition. None when not planned yet, unknown, or not a Kafka source."""
    try:
        batches = sorted(int(p.name) for p in offsets_dir.iterdir() if p.name.isdigit())
    except OSError:
        return None
    if not batches:
        return None
    newest = batches[-1]
    if completed_batch_id is not None and newest <= completed_batch_id:
        return None  # the running batch has not written its offsets yet
    end = _kafka_offsets(offsets_dir / str(newest))
    start = _kafka_offsets(offsets_dir / str(newest - 1))
    if end is None or start is None:
        return None
    return sum(max(0, offset - start.get(partition, offset)) for partition, offset in end.items())


def _kafka_offsets(path: Path) -> dict[tuple[int, str, str], int] | None:
    """(source line, topic, partition) → offset of one offsets-log file (v1 format: a version
    line, a metadata line, then one line per source)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    offsets: dict[tuple[int, str, str], int] = {}
    for index, line in enumerate(lines[2:]):
        try:
            source = json.loads(line)
        except ValueError:
            continue
        if not isinstance(source, dict):
            continue
        for topic, partitions in source.items():
            if not isinstance(partitions, dict):
                continue
            for partition, offset in partitions.items():
                if isinstance(offset, int) and offset >= 0:
                    offsets[(index, str(topic), str(partition))] = offset
    return offsets


class QueryStatusReporter:
    """Looks at every query on each pass of the driver's loop; reports to Redis every few s."""

    def __init__(
        self,
        settings: Settings,
        pipeline: str,
        queries: Iterable[StreamingQuery],
        *,
        report_seconds: float = REPORT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.queries = list(queries)
        self.report_seconds = report_seconds
        self.clock = clock
        self.trackers = {id(q): BatchTracker() for q in self.queries}
        self._messages: dict[int, str] = {}
        self._offsets_dirs: dict[int, Path | None] = {}
        self._last_report = 0.0
        self._last_warning = 0.0
        self._redis: redis.Redis | None = None

    def track(self, query: StreamingQuery) -> None:
        """Report this query too (a query started, or started again, after the others)."""
        self.queries.append(query)
        self.trackers[id(query)] = BatchTracker()

    def untrack(self, query: StreamingQuery) -> None:
        """Stop reporting a query that ended (the listener wrote its last words)."""
        self.queries = [q for q in self.queries if q is not query]
        self.trackers.pop(id(query), None)
        self._messages.pop(id(query), None)
        self._offsets_dirs.pop(id(query), None)

    def poll(self) -> None:
        """Observe each query; write to Redis when due or when a query's trigger flipped."""
        now = self.clock()
        changed = False
        for query in self.queries:
            try:
                changed |= self._observe(query, now)
            except Exception:  # a query that just ended: the main loop sees it next
                log.debug("status of %s unavailable", query.name, exc_info=True)
        if changed or now - self._last_report >= self.report_seconds:
            self._report(now)

    def _observe(self, query: StreamingQuery, now: float) -> bool:
        tracker = self.trackers[id(query)]
        status = query.status
        last = query._jsq.lastProgress()
        completed = None if last is None else int(last.batchId())
        was_active = tracker.active
        tracker.observe(now, bool(status.get("isTriggerActive")), completed)
        self._messages[id(query)] = str(status.get("message", ""))
        if tracker.active and tracker.planned_rows is None:
            offsets_dir = self._offsets_dir(query)
            if offsets_dir is not None:
                tracker.planned_rows = planned_rows(offsets_dir, tracker.completed_batch_id)
        return was_active != tracker.active

    def _offsets_dir(self, query: StreamingQuery) -> Path | None:
        """The local offsets log of the query's checkpoint (None for remote checkpoints)."""
        key = id(query)
        if key not in self._offsets_dirs:
            try:
                root = str(query._jsq.streamingQuery().resolvedCheckpointRoot())
            except Exception:
                root = ""
            path = root.removeprefix("file:")
            self._offsets_dirs[key] = Path(path) / "offsets" if path.startswith("/") else None
        return self._offsets_dirs[key]

    def fields(self, query: StreamingQuery, now: float) -> dict[str, str]:
        tracker = self.trackers[id(query)]
        return {
            STATUS_AT: f"{now:.3f}",
            TRIGGER_ACTIVE: "1" if tracker.active else "0",
            STATUS_MESSAGE: self._message(query),
            BATCH_STARTED_AT: _epoch(tracker.batch_started_at),
            BATCH_PLANNED_ROWS: "" if tracker.planned_rows is None else str(tracker.planned_rows),
            FIRST_BATCH: "1" if tracker.first_batch else "0",
            LAST_TRIGGER_AT: _epoch(tracker.last_trigger_at),
        }

    def _message(self, query: StreamingQuery) -> str:
        """Spark's status message, or what the batch's sink waits for (an outage it rides out)."""
        waiting = outages.waiting_for(query.name or "")
        if waiting:
            return f"waiting for {waiting}: writing the batch again once it answers"
        return self._messages.get(id(query), "")

    def _report(self, now: float) -> None:
        try:
            client = self._client()
            with client.pipeline(transaction=False) as pipe:
                for query in self.queries:
                    key = query_key(self.pipeline, query.name or str(query.id))
                    pipe.hset(key, mapping=self.fields(query, now))  # type: ignore[arg-type]
                    pipe.expire(key, DEFAULT_QUERY_KEY_TTL_SECONDS)
                pipe.execute()
            self._last_report = now
        except Exception as exc:  # Redis away: the supervisor sees an old status, never a crash
            if now - self._last_warning >= _WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning("%s: could not report query status: %s", self.pipeline, exc)

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = status_redis(self.settings)
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def _epoch(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


# --- the job heartbeat: for a supervisor on another host -----------------------------------------

# A failed beat is logged at most this often.
_BEAT_WARN_EVERY_SECONDS = 60.0


class JobHeartbeat:
    """The job's own heartbeat (``streamops.supervision.job_beat``), beside its queries' status:
    a daemon thread writes it every second whatever the batches do, so a supervisor on another
    host tells a live job from a dead one without seeing its processes. With each beat it reads
    the stop request and the lease token's mirror: a request for this job, or a newer token (the
    job was fenced), calls ``on_stop`` once, which stops the job as SIGTERM does. A job still
    running ``exit_after_seconds`` after that exits at once (its queries did not stop in time);
    on its way out otherwise, :meth:`finish` records its exit code.

    Only for a job launched under a lease (``STREAMOPS_JOB_TOKEN``): nothing supervises another.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: str,
        fence: Fence,
        on_stop: Callable[[str], None],
        *,
        exit_after_seconds: float,
        beat_seconds: float = BEAT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.fence = fence
        self.on_stop = on_stop
        self.exit_after_seconds = exit_after_seconds
        self.beat_seconds = beat_seconds
        self.clock = clock
        self.started_at = f"{clock():.3f}"
        self.lineage = _lineage()
        self.stopping: str | None = None
        self._stopping_since: float | None = None
        self._last_warning = 0.0
        self._done = threading.Event()
        self._redis: redis.Redis | None = None
        self._thread = threading.Thread(
            target=self._run, name="streamops-job-heartbeat", daemon=True
        )

    @classmethod
    def start(
        cls,
        settings: Settings,
        pipeline: str,
        on_stop: Callable[[str], None],
        *,
        exit_after_seconds: float,
    ) -> JobHeartbeat | None:
        """The running heartbeat of a job launched under a lease; None for any other."""
        fence = Fence.from_env()
        if fence is None:
            return None
        heartbeat = cls(settings, pipeline, fence, on_stop, exit_after_seconds=exit_after_seconds)
        heartbeat._thread.start()
        return heartbeat

    def fields(self, exit_code: int | None = None) -> dict[str, str]:
        now = self.clock()
        fields = {
            JOB_HOST: socket.gethostname(),
            JOB_PID: str(os.getpid()),
            JOB_SESSION: str(os.getsid(0)),
            JOB_BEAT_AT: f"{now:.3f}",
            JOB_LOAD_PER_CORE: f"{os.getloadavg()[0] / (os.cpu_count() or 1):.2f}",
            JOB_STOPPING: self.stopping or "",
        }
        if exit_code is not None:
            fields |= {JOB_EXIT_CODE: str(exit_code), JOB_EXITED_AT: f"{now:.3f}"}
        return fields

    def beat(self, exit_code: int | None = None) -> None:
        """One beat (the last one with ``exit_code``); a stop it finds calls ``on_stop``."""
        reply = write_beat(
            self._client(),
            self.pipeline,
            token=self.fence.token,
            lease_key=self.fence.lease_key,
            started_at=self.started_at,
            fields=self.fields(exit_code),
        )
        reason = driver_must_stop(
            self.fence.token,
            self.lineage,
            reporting_token=reply.reporting_token,
            mirror_token=reply.mirror_token,
            request=reply.request,
        )
        if reason is not None and self.stopping is None and exit_code is None:
            self.stopping = reason
            self._stopping_since = time.monotonic()
            log.warning("%s: stopping: %s", self.pipeline, reason)
            self.on_stop(reason)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.beat()
            except Exception as exc:  # Redis away: the supervisor reads an old beat, no crash
                now = time.monotonic()
                if now - self._last_warning >= _BEAT_WARN_EVERY_SECONDS:
                    self._last_warning = now
                    log.warning("%s: could not write the job heartbeat: %s", self.pipeline, exc)
            if self._overdue():
                log.error(
                    "%s: still running %.0f s after it began to stop (%s): exiting now",
                    self.pipeline,
                    self.exit_after_seconds,
                    self.stopping,
                )
                self._record_exit(1)
                os._exit(1)
            self._done.wait(self.beat_seconds)

    def _overdue(self) -> bool:
        since = self._stopping_since
        return since is not None and time.monotonic() - since > self.exit_after_seconds

    def finish(self, exit_code: int) -> None:
        """The job ends with ``exit_code``: no more beats; the last one records the code."""
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.beat_seconds + 2 * REDIS_TIMEOUT_SECONDS)
        self._record_exit(exit_code)
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def _record_exit(self, exit_code: int) -> None:
        try:
            self.beat(exit_code)
        except Exception as exc:  # the supervisor then sees the heartbeat go stale
            log.warning("%s: could not record the exit code: %s", self.pipeline, exc)

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_client(
                self.settings, timeout_seconds=REDIS_TIMEOUT_SECONDS, decode_responses=True
            )
        return self._redis


def _lineage() -> frozenset[int]:
    """This process and its ancestors: the launch a stop request names is one of them (the
    ``sh`` wrapper, or the spark-submit that ``streamops run`` started)."""
    pids = {os.getpid()}
    try:
        parent = psutil.Process().parent()
        while parent is not None and parent.pid not in pids:
            pids.add(parent.pid)
            parent = parent.parent()
    except psutil.Error:
        pass
    return frozenset(pids)
