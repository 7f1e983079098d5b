"""One status row per supervised pipeline, assembled from plain data: no I/O here.

Inputs are what the sources hold (``pipeline_sources`` reads them): the spec, the supervision DAG
as Airflow reports it, the restart state (``pipeline_restart_state``), the checkpoint's lease
(which process runs the job), each query's Redis hash (``streamops:query:<pipeline>:<query>``,
written by the progress listener) and the Kafka topics' end offsets. The row says what an operator
asks first: is it running, since when, how fast, how far behind, how often it restarted, and
whether the breaker is open.

The state of a pipeline, most decisive first:

- ``breaker_open``: the restart policy gave up; only a reset lets it start again.
- ``backing_off``: the supervisor waits out the backoff before the next restart.
- ``waiting``: the job failed because Kafka, MariaDB, Redis or the disk was down; the supervisor
  waits for it and relaunches then (not counted toward the breaker).
- a job process runs: the hook's own health rule (:func:`classify_health`) on the queries'
  heartbeats and status gives ``running``, ``starting``, ``overloaded``, ``stalled`` or
  ``failed``.
- a supervision run is active and the lease names a job process that is gone: ``failed`` (the
  supervisor has not acted yet);
- a supervision run is active but no job process yet: ``starting``.
- no active run: ``failed`` when the last run failed, else ``stopped``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from streamops.airflow_rest import ACTIVE_RUN_STATES, DagInfo
from streamops.supervision.restart import Phase, RestartState
from streamops.supervision.spec import PipelineSpec
from streamops_airflow.hooks import HealthStatus, classify_health

# topic → partition → offset
TopicOffsets = dict[str, dict[int, int]]


class PipelineState(StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    BACKING_OFF = "backing_off"
    WAITING = "waiting"
    OVERLOADED = "overloaded"
    STALLED = "stalled"
    FAILED = "failed"
    STOPPED = "stopped"
    BREAKER_OPEN = "breaker_open"


_HEALTH_STATES = {
    HealthStatus.HEALTHY: PipelineState.RUNNING,
    HealthStatus.STARTING: PipelineState.STARTING,
    HealthStatus.OVERLOADED: PipelineState.OVERLOADED,
    HealthStatus.STALLED: PipelineState.STALLED,
    HealthStatus.FAILED: PipelineState.FAILED,
    HealthStatus.STOPPED: PipelineState.STOPPED,
}


@dataclass(frozen=True)
class JobProcess:
    """The job process recorded in the checkpoint's lease."""

    owner: str | None
    pid: int | None
    host: str | None
    start_epoch: float | None
    # None when it cannot be told from here (another host).
    alive: bool | None
    fencing_token: int = 0


@dataclass(frozen=True)
class QueryStatus:
    name: str
    state: str | None
    heartbeat_at: float | None
    heartbeat_age_seconds: float | None
    batch_id: int | None
    last_batch_at: str | None
    num_input_rows: int | None
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    watermark: str | None
    started_at: str | None
    last_exception: str | None
    # Records behind the end of the topics this query reads; None when unknown.
    kafka_lag: int | None
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineStatus:
    name: str
    dag_id: str
    state: PipelineState
    detail: str
    enabled: bool
    dag_exists: bool
    dag_paused: bool | None
    active_run_id: str | None
    last_run_state: str | None
    uptime_seconds: float | None
    last_batch_at: str | None
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    watermark: str | None
    kafka_lag: int | None
    restarts_total: int
    consecutive_failures: int
    waiting_for: tuple[str, ...]
    outages_total: int
    breaker: str
    breaker_opened_at: float | None
    next_restart_at: float | None
    last_failure_reason: str | None
    job_pid: int | None
    job_host: str | None
    job_alive: bool | None
    queries: tuple[QueryStatus, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["queries"] = [asdict(query) for query in self.queries]
        data["warnings"] = list(self.warnings)
        return data


# --- offsets and lag ----------------------------------------------------------------------------


def parse_source_offsets(text: str | None) -> TopicOffsets:
    """Kafka offsets of a progress report's ``endOffset`` JSON (source → topic → partition → n).

    Sources that are not Kafka (a file source's ``{"logOffset": 3}``) are skipped; two Kafka
    sources reading one topic keep the smaller offset, since the query is as far as its slowest.
    """
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    offsets: TopicOffsets = {}
    if not isinstance(document, Mapping):
        return offsets
    for source in document.values():
        if not isinstance(source, Mapping):
            continue
        for topic, partitions in source.items():
            parsed = _partition_offsets(partitions)
            if parsed is None:
                continue
            known = offsets.setdefault(str(topic), {})
            for partition, offset in parsed.items():
                known[partition] = min(offset, known.get(partition, offset))
    return offsets


def kafka_lag(consumed: TopicOffsets, topic_ends: TopicOffsets) -> int | None:
    """Records between a query's latest ``endOffset`` and the end of each topic it reads.

    A partition the query has not seen yet (added since its last batch) counts from 0. Returns
    None when the query reads no Kafka topic or the end offsets of its topics are unknown.
    """
    if not consumed:
        return None
    lag = 0
    for topic, partitions in consumed.items():
        ends = topic_ends.get(topic)
        if ends is None:
            return None
        for partition, end in ends.items():
            lag += max(0, end - partitions.get(partition, 0))
    return lag


def _partition_offsets(value: Any) -> dict[int, int] | None:
    if not isinstance(value, Mapping) or not value:
        return None
    parsed: dict[int, int] = {}
    for partition, offset in value.items():
        try:
            parsed[int(partition)] = int(offset)
        except (TypeError, ValueError):
            return None
    return parsed


# --- one query ----------------------------------------------------------------------------------


def query_status(
    name: str, fields: Mapping[str, str], now: float, topic_ends: TopicOffsets
) -> QueryStatus:
    """A query's row from its Redis hash (every value a string; unknown is ``""``)."""
    heartbeat = _float(fields.get("heartbeat_at"))
    consumed = parse_source_offsets(fields.get("end_offsets"))
    exception = (fields.get("last_exception") or "").strip()
    return QueryStatus(
        name=name,
        state=fields.get("state") or None,
        heartbeat_at=heartbeat,
        heartbeat_age_seconds=None if heartbeat is None else max(0.0, now - heartbeat),
        batch_id=_int(fields.get("batch_id")),
        last_batch_at=fields.get("progress_at") or None,
        num_input_rows=_int(fields.get("num_input_rows")),
        input_rows_per_second=_float(fields.get("input_rows_per_second")),
        processed_rows_per_second=_float(fields.get("processed_rows_per_second")),
        watermark=fields.get("watermark") or None,
        started_at=fields.get("started_at") or None,
        last_exception=exception.splitlines()[0] if exception else None,
        kafka_lag=kafka_lag(consumed, topic_ends),
        topics=tuple(sorted(consumed)),
    )


# --- the pipeline -------------------------------------------------------------------------------


def classify(
    *,
    spec: PipelineSpec,
    dag: DagInfo,
    restart: RestartState,
    process: JobProcess | None,
    query_hashes: Mapping[str, Mapping[str, str]],
    now: float,
    load_per_core: float | None = None,
) -> tuple[PipelineState, str]:
    """The pipeline's state and a one-line reason (see the module's docstring for the order)."""
    if restart.phase is Phase.BREAKER_OPEN:
        reason = restart.last_failure_reason or "see the supervision task's log"
        return PipelineState.BREAKER_OPEN, f"circuit breaker open; last failure: {reason}"
    active = dag.active_run_state in ACTIVE_RUN_STATES
    if restart.phase is Phase.BACKING_OFF and active:
        due = restart.next_restart_at
        wait = "" if due is None else f" in {max(0.0, due - now):.0f} s"
        return PipelineState.BACKING_OFF, (
            f"restart {restart.consecutive_failures} from the checkpoint{wait}; last failure: "
            f"{restart.last_failure_reason or 'unknown'}"
        )
    if restart.phase is Phase.WAITING and active:
        since = "" if restart.waiting_since is None else f" for {now - restart.waiting_since:.0f} s"
        return PipelineState.WAITING, (
            f"waiting for {', '.join(restart.waiting_for) or 'a dependency'}{since}: "
            f"{restart.last_outage_reason or 'outage'}; not counted toward the breaker"
        )
    if process is not None and process.pid is not None and process.alive is not False:
        health = classify_health(
            alive=True,
            exit_code=None,
            query_states={q: query_hashes.get(q, {}) for q in spec.queries},
            now=now,
            process_start_epoch=process.start_epoch or 0.0,
            bounds=spec.stall_bounds,
            load_per_core=load_per_core,
        )
        state = _HEALTH_STATES[health.status]
        if not active and state is PipelineState.RUNNING:
            return state, f"{health.detail} (no active supervision run)"
        return state, health.detail
    if active and process is not None and process.pid is not None:
        # The lease still names the job, and it is gone: the supervisor has not acted yet. (Once
        # it acts, the phase says backing off or waiting until the new job is recorded.)
        return PipelineState.FAILED, (
            f"the job process (pid {process.pid}) is gone; the supervisor acts at its next health "
            "check (a restart from the checkpoint, or the end of the run after a clean stop)"
        )
    if active:
        return PipelineState.STARTING, f"supervision run {dag.active_run_state}, job not up yet"
    # A job started outside Airflow (`streamops run`) holds no lease but still reports.
    unsupervised = classify_health(
        alive=True,
        exit_code=None,
        query_states={q: query_hashes.get(q, {}) for q in spec.queries},
        now=now,
        process_start_epoch=0.0,
        bounds=replace(spec.stall_bounds, startup_grace_seconds=0.0),
        load_per_core=load_per_core,
    )
    if unsupervised.status is HealthStatus.HEALTHY and all(
        query_hashes.get(q, {}).get("state") == "running" for q in spec.queries
    ):
        return PipelineState.RUNNING, f"{unsupervised.detail} (not supervised by Airflow)"
    if not dag.exists:
        return PipelineState.STOPPED, f"the DAG {dag.dag_id} is not in Airflow"
    if dag.last_run_state == "failed":
        return PipelineState.FAILED, (
            f"the last supervision run failed; {restart.last_failure_reason or 'see its log'}"
        )
    paused = " (DAG paused)" if dag.is_paused else ""
    return PipelineState.STOPPED, f"no supervision run{paused}"


def build_status(
    *,
    spec: PipelineSpec,
    dag: DagInfo,
    restart: RestartState,
    process: JobProcess | None,
    query_hashes: Mapping[str, Mapping[str, str]],
    topic_ends: TopicOffsets,
    now: float,
    warnings: tuple[str, ...] = (),
    load_per_core: float | None = None,
) -> PipelineStatus:
    """The status row of one pipeline (``load_per_core``: the machine's, for *overloaded*)."""
    state, detail = classify(
        spec=spec,
        dag=dag,
        restart=restart,
        process=process,
        query_hashes=query_hashes,
        now=now,
        load_per_core=load_per_core,
    )
    queries = tuple(
        query_status(name, query_hashes.get(name, {}), now, topic_ends) for name in spec.queries
    )
    up = state in (
        PipelineState.RUNNING,
        PipelineState.OVERLOADED,
        PipelineState.STALLED,
        PipelineState.STARTING,
    )
    # Each query reads its topics on its own: the pipeline is as far as its slowest query and as
    # fast as its fastest; summing them would count one topic's records twice.
    lags = [q.kafka_lag for q in queries if q.kafka_lag is not None]
    watermarks = [q.watermark for q in queries if q.watermark]
    batches = [q.last_batch_at for q in queries if q.last_batch_at]
    return PipelineStatus(
        name=spec.name,
        dag_id=spec.dag_id,
        state=state,
        detail=detail,
        enabled=spec.enabled,
        dag_exists=dag.exists,
        dag_paused=dag.is_paused,
        active_run_id=dag.active_run_id,
        last_run_state=dag.last_run_state,
        uptime_seconds=_uptime(restart, process, now) if up else None,
        last_batch_at=max(batches) if batches else None,
        input_rows_per_second=_max(q.input_rows_per_second for q in queries) if up else None,
        processed_rows_per_second=(
            _max(q.processed_rows_per_second for q in queries) if up else None
        ),
        # ISO-8601 UTC strings of one format compare like the times they name.
        watermark=min(watermarks) if watermarks else None,
        kafka_lag=max(lags) if lags else None,
        restarts_total=restart.restarts_total,
        consecutive_failures=restart.consecutive_failures,
        waiting_for=restart.waiting_for if state is PipelineState.WAITING else (),
        outages_total=restart.outages_total,
        breaker="open" if restart.phase is Phase.BREAKER_OPEN else "closed",
        breaker_opened_at=restart.breaker_opened_at,
        next_restart_at=restart.next_restart_at,
        last_failure_reason=restart.last_failure_reason,
        job_pid=process.pid if process else None,
        job_host=process.host if process else None,
        job_alive=process.alive if process else None,
        queries=queries,
        warnings=warnings,
    )


def _uptime(restart: RestartState, process: JobProcess | None, now: float) -> float | None:
    """Since the job process started, else since the supervisor saw it start."""
    since = process.start_epoch if process and process.start_epoch else restart.running_since
    return None if since is None else max(0.0, now - since)


def _max(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _float(value: str | None) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except ValueError:
        return None
