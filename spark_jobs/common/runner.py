"""Running a job's queries until they stop: graceful on SIGTERM, loud on failure.

A job learns about its pipeline from its :class:`JobContext`, built from the pipeline's spec
(``pipelines.yaml``, or ``$STREAMOPS_PIPELINES_FILE``) inside the driver: the names and
checkpoints of its queries, and the settings. It never names a query or a checkpoint itself.
A caller other than the supervisor (a benchmark) changes what it must through the context's
:class:`JobOverrides`, and runs the job's own wiring otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.common.disk_full import disk_full_cause, disk_full_message, startup_disk_full
from spark_jobs.common.listener import ProgressPublisher
from spark_jobs.common.outages import riding_out
from spark_jobs.common.priority import lower_session_priority, settled_nice
from spark_jobs.common.query_status import JobHeartbeat, QueryStatusReporter
from spark_jobs.common.restarts import Restart, RestartPolicy
from spark_jobs.common.session import build_spark_session
from streamops.config import Settings, load_settings
from streamops.errors import DISK_FULL_MARK, EXIT_DISK_FULL, EXIT_REFUSED, REFUSAL_MARK
from streamops.supervision.platform_alerts import platform_alert, publish_platform_alert
from streamops.supervision.spec import PipelineSpec, PipelineSpecError, load_spec

log = logging.getLogger(__name__)

# Test-only fault injection: "QUERY:BATCH" kills this driver with SIGKILL right after that batch's
# sinks wrote and before Spark commits it, once (a marker file remembers it happened).
FAULT_ENV = "STREAMOPS_FAULT_KILL_AFTER_SINK"
FAULT_MARKER_ENV = "STREAMOPS_FAULT_MARKER"
DATA_LOSS_MARKERS = ("failOnDataLoss", "OffsetOutOfRange", "data loss", "KAFKA_DATA_LOSS")
DATA_LOSS_RULE_ID = "streaming-data-loss"
REFUSED_RULE_ID = "pipeline-refused-to-start"
DISK_FULL_RULE_ID = "pipeline-disk-full"
# How long the queries' last listener events (their terminations) may take to be delivered.
LISTENER_DRAIN_SECONDS = 15.0

# How long a stop request waits for the queries' running batches to end, in all: well inside the
# 20 s the supervisor's on_kill gives a graceful stop (docs/operations.md).
STOP_WAIT_SECONDS = 8.0
# A job asked to stop through its heartbeat exits by itself at the latest this long after (or
# after its spec's stop timeout, if longer): its queries' stop and the listener's drain, with room.
STOPPING_FLOOR_SECONDS = STOP_WAIT_SECONDS + LISTENER_DRAIN_SECONDS + 15.0
# Between two triggers of the default trigger the query thread sleeps only 10 ms
# (spark.sql.streaming.pollingDelay): look often enough to catch that gap.
STOP_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class JobQuery:
    """One query of a job: the name it reports under and the folder of its checkpoint."""

    name: str
    checkpoint: str


BatchWriter = Callable[[DataFrame, int], None]


@dataclass(frozen=True)
class JobOverrides:
    """What a caller other than the supervisor changes of a job's queries, all else being the
    job's own wiring: a benchmark drains a scratch topic into scratch checkpoints, once a run
    (``availableNow``), into no-op sinks for a baseline. The defaults change nothing, and the
    supervised job (:func:`run_job`) never sets them.

    The source topic is not here: it is each job's own configuration (``--topic``).
    """

    # The folder of the queries' checkpoints (``<location>/<role>``), instead of
    # ``<checkpoint root>/<pipeline>``: a benchmark's scratch folder, fresh for every drain.
    checkpoint_location: str | None = None
    # Keywords of ``DataStreamWriter.trigger`` for every query (``{"availableNow": True}``),
    # instead of the job's own trigger.
    trigger: Mapping[str, Any] | None = None
    # ``foreachBatch`` writers by query role, instead of the job's sinks.
    sinks: Mapping[str, BatchWriter] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContext:
    """What a job knows of its pipeline: the spec, the settings it runs with, and what its caller
    overrides (nothing, under the supervisor).

    The rule that ties a job's queries to the spec is spelled out in
    ``streamops/supervision/spec.py``: a job asks for its queries by role, all at once, and gets
    their names and checkpoints; roles that differ from the spec's fail the job before it starts
    a query.
    """

    spec: PipelineSpec
    settings: Settings
    overrides: JobOverrides = field(default_factory=JobOverrides)

    @classmethod
    def of(
        cls, pipeline: str, settings: Settings, overrides: JobOverrides | None = None
    ) -> JobContext:
        """The context of ``pipeline``, from the specs file every process reads."""
        return cls(load_spec(pipeline), settings, overrides or JobOverrides())

    @property
    def pipeline(self) -> str:
        return self.spec.name

    @property
    def checkpoint_location(self) -> str:
        """``<checkpoint root>/<pipeline>``: the spec's root, else the settings'. The supervisor's
        lease guards the same string. A caller's override wins over both."""
        if self.overrides.checkpoint_location is not None:
            return self.overrides.checkpoint_location.rstrip("/")
        return self.spec.checkpoint_location(self.settings.checkpoint_root)

    def batch_writer(
        self, query: JobQuery, default_sink: Callable[[Settings], BatchWriter]
    ) -> BatchWriter:
        """``query``'s ``foreachBatch`` (:func:`batch_writer`): the overrides' sink for its role,
        else ``default_sink(settings)``, the job's (not built when overridden)."""
        override = self.overrides.sinks.get(self.spec.query_role(query.name))
        return batch_writer(query, override or default_sink(self.settings))

    def triggered(
        self, writer: DataStreamWriter, processing_time: str | None = None
    ) -> DataStreamWriter:
        """``writer`` with the overrides' trigger, else one every ``processing_time``, else as it
        is (Spark's default: the next batch as soon as the last one ended)."""
        if self.overrides.trigger is not None:
            return writer.trigger(**self.overrides.trigger)
        if processing_time:
            return writer.trigger(processingTime=processing_time)
        return writer

    def queries(self, *roles: str) -> tuple[JobQuery, ...]:
        """The job's queries in ``roles``, in that order: every role the spec lists, no other."""
        listed = {self.spec.query_role(query): query for query in self.spec.queries}
        if len(set(roles)) != len(roles) or set(roles) != set(listed):
            raise PipelineSpecError(
                f"The {self.pipeline} job starts the queries {list(roles)} (by role), but its spec "
                f"lists {list(self.spec.queries)} (roles {list(listed)}). A query's role is its "
                f"name without '{self.pipeline}_'; make the spec's queries and the job's agree "
                "(streamops/supervision/spec.py)."
            )
        unknown = sorted(set(self.overrides.sinks) - set(roles))
        if unknown:
            raise ValueError(
                f"Sinks are overridden for {unknown}, which the {self.pipeline} job has no query "
                f"for; its roles are {list(roles)}."
            )
        return tuple(self._query(listed[role]) for role in roles)

    def opt_in_query(self, role: str) -> JobQuery:
        """A query the job starts only when asked to, which the spec does not list, so nothing
        supervises it: named ``<pipeline>_<role>``, checkpointed beside the others."""
        name = self.spec.query_name_for(role)
        if name in self.spec.queries:
            raise PipelineSpecError(
                f"The spec of {self.pipeline} lists {name!r}, but the job starts that query only "
                "when asked to: the supervisor would judge it stalled whenever it is off. Remove "
                "it from the spec's queries."
            )
        return self._query(name)

    def _query(self, name: str) -> JobQuery:
        return JobQuery(name, f"{self.checkpoint_location}/{self.spec.query_role(name)}")


JobConfig = TypeVar("JobConfig")
# A job's queries, not started yet: the driver starts the first alone, then the rest, and may
# start one again.
BuildWriters = Callable[[SparkSession, JobContext, JobConfig], list[DataStreamWriter]]

# The other queries start once the first one finished its first batch, or after this long.
STAGGER_SECONDS = 30.0
# A job lowers its CPU priority once each query caught up, or after this long at most.
SETTLE_LIMIT_SECONDS = 300.0


def fault_point(query_name: str, batch_id: int) -> None:
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or wanted != f"{query_name}:{batch_id}":
        return
    marker = Path(os.environ.get(FAULT_MARKER_ENV, f"/tmp/streamops-fault-{query_name}"))
    if marker.exists():
        return
    marker.write_text(f"killed after sinks of {query_name} batch {batch_id}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def with_fault_point(query_name: str, writer: BatchWriter) -> BatchWriter:
    """``writer`` followed by the test-only :func:`fault_point` of its query."""

    def write(frame: DataFrame, batch_id: int) -> None:
        writer(frame, batch_id)
        fault_point(query_name, batch_id)

    return write


def batch_writer(query: JobQuery, writer: BatchWriter) -> BatchWriter:
    """``writer`` as ``query``'s ``foreachBatch``: a MariaDB or Redis outage ridden out inside the
    batch (:func:`spark_jobs.common.outages.riding_out`), then the test-only fault point."""
    return riding_out(query.name, with_fault_point(query.name, writer))


class _StopRequest:
    """Set by SIGTERM/SIGINT, or by the job heartbeat (a supervisor on another host asked, or the
    job was fenced): the main loop then stops the queries between two batches and exits 0."""

    requested = False
    reason = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.ask(signal.Signals(signum).name)

    def ask(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.requested = True


def start_all(writers: list[DataStreamWriter]) -> list[StreamingQuery]:
    """Every query started at once (tests, benchmarks, ``availableNow`` runs)."""
    return [writer.start() for writer in writers]


def run_job(
    pipeline: str,
    build: BuildWriters[JobConfig],
    config: JobConfig,
    spark_conf: Mapping[str, str] | None = None,
    *,
    until_done: bool = False,
) -> int:
    """The ``main`` of every streaming job: a session named after ``pipeline`` with the spec's
    ``spark_conf`` and the job's own ``spark_conf`` (:func:`job_spark_conf`), the progress
    listener, then ``build(spark, context, config)``'s queries run until a stop request
    (:func:`run_queries`). ``until_done``: the queries end by themselves (an ``availableNow``
    trigger) and the job with them."""
    # A stop asked for while the session starts (tens of seconds on a loaded machine) is a
    # graceful stop too: no query starts, the job exits 0.
    stop = _StopRequest()
    _log_to_job_log()
    if not until_done:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    settings = load_settings()
    context = JobContext.of(pipeline, settings)
    # A supervisor on another host sees the job by this heartbeat and stops it through it.
    heartbeat = JobHeartbeat.start(
        settings,
        pipeline,
        stop.ask,
        exit_after_seconds=max(context.spec.stop_timeout_seconds, STOPPING_FLOOR_SECONDS),
    )
    code = 1  # an exception on the way out is Python's exit 1
    try:
        code = _run_job(settings, context, build, config, spark_conf, stop, until_done)
        return code
    finally:
        if heartbeat is not None:
            heartbeat.finish(code)


def _run_job(
    settings: Settings,
    context: JobContext,
    build: BuildWriters[JobConfig],
    config: JobConfig,
    spark_conf: Mapping[str, str] | None,
    stop: _StopRequest,
    until_done: bool,
) -> int:
    pipeline = context.pipeline
    refusal = startup_refusal(settings, pipeline)
    if refusal is not None:
        log.error("%s %s", REFUSAL_MARK, refusal)
        publish_refusal_alert(settings, pipeline, refusal)
        return EXIT_REFUSED
    full = startup_disk_full(settings, pipeline)
    if full is not None:
        log.error("%s %s", DISK_FULL_MARK, full)
        return EXIT_DISK_FULL
    conf = job_spark_conf(context.spec, spark_conf or {})
    spark = build_spark_session(f"streamops-{pipeline}", settings, conf)
    restarts = RestartPolicy()
    listener = ProgressPublisher(settings, pipeline, restarts=restarts)
    spark.streams.addListener(listener)
    writers = build(spark, context, config)
    if not until_done:
        if stop.requested:
            log.info("%s: stopped on request before its queries started", pipeline)
            return 0
        return run_queries(spark, settings, pipeline, writers, restarts, stop)
    for query in start_all(writers):
        query.awaitTermination()  # raises the query's exception if it failed
    # Otherwise the JVM may still call the listener while this interpreter exits.
    _drain_listener_bus(spark)
    spark.streams.removeListener(listener)
    return 0


def job_spark_conf(spec: PipelineSpec, job_conf: Mapping[str, str]) -> dict[str, str]:
    """The Spark settings of a job's session: the spec's ``spark_conf`` as written, plus those the
    job sets itself (a store provider it needs, a wider local master). A key both set to
    different values is an error: either silent winner would run the job on a setting nobody
    chose."""
    clashes = {
        key: (spec.spark_conf[key], value)
        for key, value in job_conf.items()
        if key in spec.spark_conf and spec.spark_conf[key] != value
    }
    if clashes:
        described = "; ".join(
            f"{key}: the spec sets {spec_value!r}, the job needs {job_value!r}"
            for key, (spec_value, job_value) in clashes.items()
        )
        raise PipelineSpecError(
            f"The spark_conf of pipeline {spec.name!r} contradicts its job: {described}. "
            "Remove the setting from the spec, or give the job's value."
        )
    return {**spec.spark_conf, **job_conf}


def startup_refusal(settings: Settings, pipeline: str) -> str | None:
    """Why the job must not start, None when it may: the database's applied migrations must be
    exactly the code's (:func:`streamops.db.check_schema`). Checked before the Spark session, so
    a refusal costs no JVM start and no query ever meets a missing column. A database that does
    not answer raises as before: an outage, which the supervisor waits out."""
    from streamops.db import SchemaMismatchError, check_schema

    try:
        check_schema(settings, f"The {pipeline} job")
    except SchemaMismatchError as mismatch:
        return (
            f"{mismatch} Under Airflow the breaker opened on this refusal (exit {EXIT_REFUSED}, "
            f"never retried): after the fix, `streamops pipeline reset-breaker {pipeline}` and "
            f"`streamops pipeline start {pipeline}`."
        )
    return None


def publish_refusal_alert(settings: Settings, pipeline: str, refusal: str) -> dict[str, object]:
    """The job refused to start: one platform alert (best effort, like every platform alert)."""
    return _publish_pipeline_alert(settings, pipeline, REFUSED_RULE_ID, refusal)


def _log_to_job_log() -> None:
    """The jobs' own messages, INFO and up, on stderr (the job log) in Spark's format; without
    it Python shows only warnings, and `started query …` or `settled after …` were lost."""
    jobs_log = logging.getLogger("spark_jobs")
    if jobs_log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%y/%m/%d %H:%M:%S")
    )
    jobs_log.addHandler(handler)
    jobs_log.setLevel(logging.INFO)
    jobs_log.propagate = False


@dataclass
class _Slot:
    """One query of the job: its writer, its running query, and a pending restart."""

    writer: DataStreamWriter
    query: StreamingQuery | None = None
    started_at: float | None = None
    restart: Restart | None = None
    # The running query read input rows (its first batch of data planned and ran).
    fed: bool = False

    @property
    def settled(self) -> bool:
        """Finished a batch, or had time enough to: the next query may start."""
        if self.query is None or self.started_at is None:
            return False
        if time.monotonic() - self.started_at >= STAGGER_SECONDS:
            return True
        try:
            return self.query._jsq.lastProgress() is not None or not self.query.isActive
        except Exception:
            return True


def run_queries(
    spark: SparkSession,
    settings: Settings,
    pipeline: str,
    writers: list[DataStreamWriter],
    restarts: RestartPolicy,
    stop: _StopRequest | None = None,
) -> int:
    """Start the queries, then wait for them; SIGTERM/SIGINT stop them gracefully (exit 0), a
    failure exits 1, and a transient start failure restarts that query alone (``restarts``).

    The first query starts alone and the others once it settled (:func:`_start_due`): its first
    batch plans and compiles while the JVM is still cold, and every query at once on a small
    machine starved ``transformWithState``'s Python pre-init worker past Spark's fixed 10 s
    (``spark_jobs.common.restarts``); so a job whose first query is that one keeps it first.
    One query after another throughout made a relaunch of three queries take over a minute
    to start them all (issue 16)."""
    if stop is None:
        stop = _StopRequest()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    slots = [_Slot(writer) for writer in writers]
    # Busy is not stalled: each query's own status goes to Redis for the supervisor.
    status = QueryStatusReporter(settings, pipeline, [])
    try:
        return _run_until_stopped(spark, settings, pipeline, slots, stop, status, restarts)
    finally:
        status.close()


def _run_until_stopped(
    spark: SparkSession,
    settings: Settings,
    pipeline: str,
    slots: list[_Slot],
    stop: _StopRequest,
    status: QueryStatusReporter,
    restarts: RestartPolicy,
) -> int:
    yielding = _Yield(pipeline, settled_nice())
    try:
        while not stop.requested:
            # A short wait keeps signals handled between JVM calls, never inside one.
            _start_due(pipeline, slots, status)
            yielding.once_settled(slots)
            for slot in slots:
                if slot.query is not None and not slot.query.isActive:
                    _ended(pipeline, slot, status, restarts)
            status.poll()
            time.sleep(1.0)
        log.info("%s: stopping on request (%s)", pipeline, stop.reason or "asked")
        return 0
    except StreamingQueryException as error:
        if (cause := disk_full_cause(error)) is not None:
            return _stopped_on_full_disk(settings, pipeline, cause)
        message = str(error)
        log.error("%s: a query failed: %s", pipeline, message)
        if any(marker in message for marker in DATA_LOSS_MARKERS):
            publish_data_loss_alert(settings, pipeline, message)
        return 1
    except _EndedOnItsOwn:
        return 1
    except Exception as error:  # e.g. a query's start, writing its checkpoint's metadata
        if (cause := disk_full_cause(error)) is not None:
            return _stopped_on_full_disk(settings, pipeline, cause)
        raise
    finally:
        _stop_all(_running(slots))
        _drain_listener_bus(spark)


def _stopped_on_full_disk(settings: Settings, pipeline: str, cause: str) -> int:
    """A write failed on a full disk: one clear line and one platform alert, then the
    ``EXIT_DISK_FULL`` the supervisor waits out (the caller stops the other queries)."""
    message = disk_full_message(settings, pipeline, cause)
    log.error("%s %s", DISK_FULL_MARK, message)
    _publish_pipeline_alert(settings, pipeline, DISK_FULL_RULE_ID, message)
    return EXIT_DISK_FULL


class _EndedOnItsOwn(Exception):
    pass


class _Yield:
    """Lowers the job's CPU priority once, when every query has caught up with its topics (or
    after ``SETTLE_LIMIT_SECONDS``): a starting job, elsewhere on the machine, goes first
    (:mod:`spark_jobs.common.priority`). Caught up, not merely started: a relaunched job's
    backlog is part of its recovery."""

    def __init__(self, pipeline: str, nice: int) -> None:
        self.pipeline = pipeline
        self.nice = nice
        self.started = time.monotonic()
        self.done = nice <= 0

    def once_settled(self, slots: list[_Slot]) -> None:
        if self.done:
            return
        waited = time.monotonic() - self.started
        if waited < SETTLE_LIMIT_SECONDS and not all(_caught_up(slot) for slot in slots):
            return
        self.done = True
        try:
            threads = lower_session_priority(self.nice)
        except OSError as exc:  # a look at /proc refused: the job runs on, at its niceness
            log.warning("%s: could not lower the job's CPU priority: %s", self.pipeline, exc)
            return
        log.info(
            "%s: settled after %.0f s; %d threads of the job now at niceness %d, so that a "
            "starting job goes first",
            self.pipeline,
            waited,
            threads,
            self.nice,
        )


def _caught_up(slot: _Slot) -> bool:
    """The slot's query read input rows (noted in ``slot.fed``) and finished a batch
    that read its sources up to their latest offsets. A source that reports none (Kafka's, in
    the batch a restart replays from the offset log) is not caught up yet.

    Idle since its start is not caught up: the first batch with data still plans, and for
    ``transformWithState`` that starts a Python worker Spark gives a fixed 10 s to connect back.
    A vitals job niced while its topic was still quiet (the generators start after the jobs)
    starved that worker on a busy machine, and the query failed on it five times in a row."""
    if slot.query is None:
        return False
    try:
        progress = slot.query._jsq.lastProgress()
        if progress is None:
            return False
        slot.fed = slot.fed or progress.numInputRows() > 0
        if not slot.fed:
            return False
        for source in progress.sources():
            latest = source.latestOffset()
            if latest is None or json.loads(source.endOffset()) != json.loads(latest):
                return False
        return True
    except Exception:  # a progress Spark could not give or parse: not settled yet
        return False


def _running(slots: list[_Slot]) -> list[StreamingQuery]:
    return [slot.query for slot in slots if slot.query is not None]


def _start_due(pipeline: str, slots: list[_Slot], status: QueryStatusReporter) -> None:
    """Start the first query; the others, together, once the first settled (or waits for a
    restart of its own); start a query whose restart is due."""
    now = time.time()
    for slot in slots:
        if slot.restart is not None and now >= slot.restart.at:
            log.warning(
                "%s: restarting query %s (attempt %d of %d) after: %s",
                pipeline,
                slot.restart.query_name,
                slot.restart.attempt,
                slot.restart.of,
                slot.restart.reason,
            )
            slot.restart = None
            _start(pipeline, slot, status)
    first = slots[0] if slots else None
    for index, slot in enumerate(slots):
        if slot.query is not None or slot.restart is not None:
            continue
        assert first is not None
        if index > 0 and not (first.settled or first.restart is not None):
            break
        _start(pipeline, slot, status)
        if index == 0:
            break  # the others once it settled


def _start(pipeline: str, slot: _Slot, status: QueryStatusReporter) -> None:
    slot.query = slot.writer.start()
    slot.started_at = time.monotonic()
    slot.fed = False
    status.track(slot.query)
    log.info("%s: started query %s", pipeline, slot.query.name)


def _ended(
    pipeline: str, slot: _Slot, status: QueryStatusReporter, restarts: RestartPolicy
) -> None:
    """A query is no longer active: restart it when its failure is transient, else end."""
    query = slot.query
    assert query is not None
    error = query.exception()
    if error is None:
        log.warning("%s: query %s stopped on its own", pipeline, query.name)
        raise _EndedOnItsOwn(query.name)
    restart = restarts.decide(query.name or str(query.id), str(query.runId), str(error))
    if restart is None:
        query.awaitTermination()  # raises the query's exception
        raise _EndedOnItsOwn(query.name)  # not reached: it failed
    log.warning(
        "%s: query %s failed in its start (%s); it starts again from its checkpoint in %.0f s",
        pipeline,
        query.name,
        restart.reason,
        max(0.0, restart.at - time.time()),
    )
    status.untrack(query)
    slot.query = None
    slot.restart = restart


def stop_between_batches(query: StreamingQuery, timeout: float = STOP_WAIT_SECONDS) -> bool:
    """Stop a streaming query while none of its triggers runs; True if it was caught idle.

    ``query.stop()`` interrupts the query's thread. Spark takes an ``InterruptedException``
    for a clean stop, but one raised while a batch is being planned reaches it wrapped in an
    ``InvocationTargetException``, and the query ends "terminated with error" (a stack trace
    in the log, a failed query for listeners and for ``query_status``). So wait, at most
    ``timeout`` seconds, for ``isTriggerActive`` to be False; a query still busy then is stopped
    all the same (a real-time query is always busy: it is stopped when the wait runs out).
    """
    deadline = time.monotonic() + timeout
    idle = False
    while query.isActive:
        if not query.status["isTriggerActive"]:
            idle = True
            break
        if time.monotonic() >= deadline:
            log.warning(
                "query %s still ran a batch after %g s; stopping it mid-batch", query.name, timeout
            )
            break
        time.sleep(STOP_POLL_SECONDS)
    query.stop()
    return idle


def _stop_all(queries: list[StreamingQuery], timeout: float = STOP_WAIT_SECONDS) -> None:
    """Every query stopped between two batches if it gets to one within ``timeout`` seconds:
    one budget for all, watched side by side, so one busy query does not use up the others'
    wait (the supervisor kills a job that takes too long to stop)."""
    deadline = time.monotonic() + timeout
    waiting = list(queries)
    while waiting:
        last_look = time.monotonic() >= deadline
        for query in list(waiting):
            try:
                if query.isActive and not last_look and query.status["isTriggerActive"]:
                    continue
                if query.isActive:
                    if last_look:
                        log.warning("query %s still ran a batch; stopping it mid-batch", query.name)
                    query.stop()
            except Exception:  # stopping is best effort; the process exits next
                log.exception("stopping %s failed", query.name)
            waiting.remove(query)
        if waiting:
            time.sleep(STOP_POLL_SECONDS)


def _drain_listener_bus(spark: SparkSession) -> None:
    """Wait until Spark has delivered the events queued for listeners, terminations included.

    A stopped query posts its termination to Spark's listener bus, which calls the listener on
    its own thread; exiting right after ``stop()`` would lose that call, and ``query_status`` and
    the Redis hash would still say "running". Stopping the SparkContext would drain the bus too,
    but under spark-submit it turns the graceful stop into exit 143, so wait on the bus itself.
    """
    try:
        bus = spark.sparkContext._jsc.sc().listenerBus()
        bus.waitUntilEmpty(int(LISTENER_DRAIN_SECONDS * 1000))
    except Exception:  # a slow bus only costs the last status write, never the stop
        log.warning("the listener bus did not drain in %g s", LISTENER_DRAIN_SECONDS)


def publish_data_loss_alert(settings: Settings, pipeline: str, message: str) -> dict[str, object]:
    """Offsets aged out of Kafka: an alert on the `alerts` topic and in Redis, never silence."""
    return _publish_pipeline_alert(settings, pipeline, DATA_LOSS_RULE_ID, message)


def _publish_pipeline_alert(
    settings: Settings, pipeline: str, rule_id: str, message: str
) -> dict[str, object]:
    """One platform alert about ``pipeline``, identified by its rule and message."""
    return publish_platform_alert(
        settings,
        platform_alert(
            rule_id=rule_id, service=pipeline, identity=f"{pipeline}:{message}", message=message
        ),
    )
