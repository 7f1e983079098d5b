"""The pipelines page's status rows: offsets and lag, one query's row, the pipeline's state."""

from __future__ import annotations

import json

import pytest
from streamops_airflow.ui.pipeline_status import (
    DagInfo,
    JobProcess,
    PipelineState,
    build_status,
    classify,
    kafka_lag,
    parse_source_offsets,
    query_status,
)
from typer.testing import CliRunner

from streamops.cli.pipeline import format_duration
from streamops.supervision.restart import Phase, RestartState
from streamops.supervision.spec import PipelineSpec

NOW = 1_800_000_000.0
PROCESS_START = NOW - 3600
SPEC = PipelineSpec.model_validate(
    {
        "name": "orders",
        "job_module": "spark_jobs.jobs.orders",
        "queries": ["orders_records", "orders_revenue"],
        "trigger_interval": "5 seconds",
        "health": {"heartbeat_timeout_seconds": 60, "startup_grace_seconds": 180},
    }
)
RUNNING_DAG = DagInfo(
    dag_id=SPEC.dag_id, is_paused=False, active_run_id="manual__1", active_run_state="running"
)
IDLE_DAG = DagInfo(dag_id=SPEC.dag_id, is_paused=True, last_run_state="success")
PROCESS = JobProcess(
    owner="airflow:streamops_supervise_orders.supervise",
    pid=4242,
    host="here",
    start_epoch=PROCESS_START,
    alive=True,
    fencing_token=3,
)


def kafka_offsets(**partitions: dict[str, int]) -> str:
    """``endOffset`` JSON of a progress report with one Kafka source per topic."""
    return json.dumps(
        {f"KafkaV2[Subscribe[{topic}]]": {topic: p} for topic, p in partitions.items()}
    )


def query_hash(
    heartbeat_age: float,
    *,
    state: str = "running",
    end_offsets: str | None = None,
    input_rate: str = "120.5",
    processed_rate: str = "240.25",
    watermark: str = "2026-11-25T12:00:05.000Z",
    progress_at: str = "2026-11-25T12:00:10.000Z",
    exception: str = "",
) -> dict[str, str]:
    """A query's Redis hash as the progress listener writes it (every value a string)."""
    return {
        "pipeline": "orders",
        "query_name": "orders_records",
        "state": state,
        "query_id": "7d9f0c1e-0000-4000-8000-000000000001",
        "run_id": "7d9f0c1e-0000-4000-8000-000000000002",
        "heartbeat_at": f"{NOW - heartbeat_age:.3f}",
        "started_at": "2026-11-25T11:00:00.000Z",
        "terminated_at": "",
        "last_exception": exception,
        "error_class": "",
        "batch_id": "41",
        "progress_at": progress_at,
        "num_input_rows": "602",
        "input_rows_per_second": input_rate,
        "processed_rows_per_second": processed_rate,
        "batch_duration_ms": "2500",
        "watermark": watermark,
        "end_offsets": end_offsets or kafka_offsets(orders={"0": 1000, "1": 2000}),
    }


def both(**kwargs: object) -> dict[str, dict[str, str]]:
    return {
        "orders_records": query_hash(**kwargs),  # type: ignore[arg-type]
        "orders_revenue": query_hash(**kwargs),  # type: ignore[arg-type]
    }


# --- offsets and lag ----------------------------------------------------------------------------


def test_kafka_end_offsets_are_read_per_topic_and_partition() -> None:
    text = kafka_offsets(orders={"0": 10, "1": 20}, payments={"0": 5})
    assert parse_source_offsets(text) == {"orders": {0: 10, 1: 20}, "payments": {0: 5}}


def test_two_sources_on_one_topic_keep_the_slower_offset() -> None:
    text = json.dumps(
        {
            "KafkaV2[Subscribe[orders]]": {"orders": {"0": 10, "1": 20}},
            "KafkaV2[Subscribe[orders]]'": {"orders": {"0": 7, "1": 25}},
        }
    )
    assert parse_source_offsets(text) == {"orders": {0: 7, 1: 20}}


@pytest.mark.parametrize(
    "text",
    [None, "", "not json", "[]", json.dumps({"FileStreamSource[/tmp/in]": {"logOffset": 3}})],
)
def test_sources_without_kafka_offsets_give_nothing(text: str | None) -> None:
    assert parse_source_offsets(text) == {}


def test_lag_is_the_sum_of_what_each_partition_has_left() -> None:
    consumed = {"orders": {0: 1000, 1: 2000}}
    assert kafka_lag(consumed, {"orders": {0: 1500, 1: 2000}}) == 500


def test_a_partition_the_query_has_not_seen_counts_from_zero() -> None:
    assert kafka_lag({"orders": {0: 10}}, {"orders": {0: 10, 1: 7}}) == 7


def test_lag_is_never_negative_when_the_query_is_ahead_of_a_stale_end_offset() -> None:
    assert kafka_lag({"orders": {0: 12}}, {"orders": {0: 10}}) == 0


def test_lag_is_unknown_without_kafka_or_without_the_topics_end_offsets() -> None:
    assert kafka_lag({}, {"orders": {0: 10}}) is None
    assert kafka_lag({"orders": {0: 1}}, {"payments": {0: 10}}) is None


# --- one query ----------------------------------------------------------------------------------


def test_a_query_row_comes_from_its_redis_hash() -> None:
    row = query_status("orders_records", query_hash(4.5), NOW, {"orders": {0: 1100, 1: 2050}})
    assert row.state == "running"
    assert row.heartbeat_age_seconds == pytest.approx(4.5)
    assert row.batch_id == 41
    assert row.num_input_rows == 602
    assert row.input_rows_per_second == pytest.approx(120.5)
    assert row.processed_rows_per_second == pytest.approx(240.25)
    assert row.watermark == "2026-11-25T12:00:05.000Z"
    assert row.last_batch_at == "2026-11-25T12:00:10.000Z"
    assert row.kafka_lag == 150
    assert row.topics == ("orders",)
    assert row.last_exception is None


def test_a_query_that_never_reported_has_only_unknowns() -> None:
    row = query_status("orders_revenue", {}, NOW, {"orders": {0: 5}})
    assert row.state is None
    assert row.heartbeat_at is None
    assert row.batch_id is None
    assert row.kafka_lag is None
    assert row.input_rows_per_second is None


def test_a_query_row_keeps_the_first_line_of_the_exception() -> None:
    exception = "java.lang.IllegalStateException: boom\n\tat x"
    fields = query_hash(1, state="failed", exception=exception)
    assert query_status("q", fields, NOW, {}).last_exception == (
        "java.lang.IllegalStateException: boom"
    )


# --- the pipeline's state -----------------------------------------------------------------------


def state_of(
    *,
    dag: DagInfo = RUNNING_DAG,
    restart: RestartState | None = None,
    process: JobProcess | None = PROCESS,
    hashes: dict[str, dict[str, str]] | None = None,
) -> tuple[PipelineState, str]:
    return classify(
        spec=SPEC,
        dag=dag,
        restart=restart or RestartState(phase=Phase.RUNNING, running_since=PROCESS_START),
        process=process,
        query_hashes=both(heartbeat_age=3) if hashes is None else hashes,
        now=NOW,
    )


def test_fresh_heartbeats_of_a_supervised_job_mean_running() -> None:
    state, detail = state_of()
    assert state is PipelineState.RUNNING
    assert "heartbeat" in detail


def test_a_heartbeat_older_than_the_spec_allows_means_stalled() -> None:
    state, detail = state_of(hashes=both(heartbeat_age=SPEC.heartbeat_max_age_seconds + 5))
    assert state is PipelineState.STALLED
    assert "no progress" in detail


def test_a_heartbeat_from_before_the_process_started_is_not_yet_one() -> None:
    young = JobProcess(owner=PROCESS.owner, pid=1, host="here", start_epoch=NOW - 30, alive=True)
    assert state_of(process=young, hashes=both(heartbeat_age=60))[0] is PipelineState.STARTING


def test_a_query_reporting_an_exception_means_failed() -> None:
    hashes = both(heartbeat_age=2)
    hashes["orders_revenue"]["last_exception"] = "StreamingQueryException: boom"
    state, detail = state_of(hashes=hashes)
    assert state is PipelineState.FAILED
    assert "boom" in detail


def test_an_open_breaker_wins_over_everything() -> None:
    restart = RestartState(
        phase=Phase.BREAKER_OPEN, breaker_opened_at=NOW - 10, last_failure_reason="failed: exit 1"
    )
    state, detail = state_of(restart=restart, process=None)
    assert state is PipelineState.BREAKER_OPEN
    assert "exit 1" in detail


def test_waiting_out_the_backoff_is_backing_off() -> None:
    restart = RestartState(
        phase=Phase.BACKING_OFF,
        consecutive_failures=2,
        next_restart_at=NOW + 9,
        last_failure_reason="stalled: no progress",
    )
    state, detail = state_of(restart=restart, process=None)
    assert state is PipelineState.BACKING_OFF
    assert "in 9 s" in detail


def test_waiting_for_a_dependency_says_which_and_that_it_is_not_counted() -> None:
    restart = RestartState(
        phase=Phase.WAITING,
        waiting_for=("mariadb",),
        waiting_since=NOW - 40,
        last_outage_reason="mariadb: Can't connect to server on '127.0.0.1' (111)",
        outages_total=1,
    )
    state, detail = state_of(restart=restart, process=None)
    assert state is PipelineState.WAITING
    assert detail.startswith("waiting for mariadb for 40 s: mariadb: Can't connect")
    assert "not counted toward the breaker" in detail


def test_an_active_run_without_a_job_yet_is_starting() -> None:
    assert state_of(process=None, hashes={})[0] is PipelineState.STARTING


def test_a_dead_job_the_supervisor_has_not_acted_on_yet_is_failed_not_starting() -> None:
    # The chaos suite caught the page saying "starting" for up to 15 s after a kill -9.
    dead = JobProcess(
        owner=PROCESS.owner, pid=4528, host="here", start_epoch=NOW - 600, alive=False
    )
    state, detail = state_of(process=dead)
    assert state is PipelineState.FAILED
    assert "pid 4528" in detail and "is gone" in detail
    # Once the supervisor backs off (or relaunches: the lease's pid is cleared), it says so.
    backing_off = RestartState(phase=Phase.BACKING_OFF, next_restart_at=NOW + 3)
    assert state_of(process=dead, restart=backing_off)[0] is PipelineState.BACKING_OFF


def test_no_run_after_a_failed_one_is_failed_and_otherwise_stopped() -> None:
    failed_dag = DagInfo(dag_id=SPEC.dag_id, is_paused=False, last_run_state="failed")
    assert state_of(dag=failed_dag, process=None, hashes={})[0] is PipelineState.FAILED
    state, detail = state_of(dag=IDLE_DAG, process=None, hashes={})
    assert state is PipelineState.STOPPED
    assert "paused" in detail


def test_stale_heartbeats_of_a_stopped_job_do_not_make_it_running() -> None:
    hashes = both(heartbeat_age=3600, state="stopped")
    assert state_of(dag=IDLE_DAG, process=None, hashes=hashes)[0] is PipelineState.STOPPED


def test_a_job_running_outside_airflow_is_running_but_says_so() -> None:
    state, detail = state_of(dag=IDLE_DAG, process=None, hashes=both(heartbeat_age=2))
    assert state is PipelineState.RUNNING
    assert "not supervised" in detail


def test_a_dag_airflow_does_not_know_is_stopped_with_the_reason() -> None:
    missing = DagInfo(dag_id=SPEC.dag_id, exists=False)
    state, detail = state_of(dag=missing, process=None, hashes={})
    assert state is PipelineState.STOPPED
    assert "not in Airflow" in detail


# --- the row ------------------------------------------------------------------------------------


def test_the_row_takes_the_slowest_query_for_lag_and_watermark() -> None:
    hashes = {
        "orders_records": query_hash(
            2,
            end_offsets=kafka_offsets(orders={"0": 900}),
            watermark="2026-11-25T12:00:05.000Z",
            input_rate="100.0",
        ),
        "orders_revenue": query_hash(
            2,
            end_offsets=kafka_offsets(orders={"0": 700}),
            watermark="2026-11-25T11:59:55.000Z",
            input_rate="300.0",
            progress_at="2026-11-25T12:00:12.000Z",
        ),
    }
    row = build_status(
        spec=SPEC,
        dag=RUNNING_DAG,
        restart=RestartState(phase=Phase.RUNNING, running_since=NOW - 100, restarts_total=2),
        process=PROCESS,
        query_hashes=hashes,
        topic_ends={"orders": {0: 1000}},
        now=NOW,
    )
    assert row.state is PipelineState.RUNNING
    assert row.kafka_lag == 300
    assert row.watermark == "2026-11-25T11:59:55.000Z"
    assert row.last_batch_at == "2026-11-25T12:00:12.000Z"
    assert row.input_rows_per_second == pytest.approx(300.0)
    # Uptime counts from the job process, not from when the supervisor last saw it start.
    assert row.uptime_seconds == pytest.approx(3600)
    assert row.restarts_total == 2
    assert row.breaker == "closed"
    assert row.job_pid == 4242
    assert [q.kafka_lag for q in row.queries] == [100, 300]
    # The page and the CLI read it as JSON.
    data = json.loads(json.dumps(row.to_dict()))
    assert data["state"] == "running"
    assert data["queries"][1]["name"] == "orders_revenue"


def test_a_stopped_pipeline_shows_no_uptime_or_rates_but_keeps_its_history() -> None:
    row = build_status(
        spec=SPEC,
        dag=IDLE_DAG,
        restart=RestartState(phase=Phase.STOPPED, restarts_total=4, consecutive_failures=1),
        process=None,
        query_hashes=both(heartbeat_age=7200, state="stopped"),
        topic_ends={"orders": {0: 1000, 1: 2000}},
        now=NOW,
        warnings=("Kafka: down",),
    )
    assert row.state is PipelineState.STOPPED
    assert row.uptime_seconds is None
    assert row.input_rows_per_second is None
    assert row.last_batch_at == "2026-11-25T12:00:10.000Z"
    assert row.kafka_lag == 0
    assert row.restarts_total == 4
    assert row.warnings == ("Kafka: down",)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (0, "0s"), (59.9, "59s"), (61, "1m 01s"), (3725, "1h 02m"), (90000, "1d 1h")],
)
def test_durations_read_like_a_clock(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# --- the CLI's errors, before any Airflow call ---------------------------------------------------


def test_an_unknown_pipeline_is_refused_naming_the_known_ones() -> None:
    from streamops.cli import app

    result = CliRunner().invoke(app, ["pipeline", "stop", "no_such_pipeline"])
    assert result.exit_code == 1
    assert "No pipeline 'no_such_pipeline'" in result.output
    assert "orders" in result.output


def test_airflow_not_answering_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamops.cli import app

    # Port 9 (discard) has nothing listening on loopback: the connection is refused at once.
    monkeypatch.setenv("STREAMOPS_AIRFLOW_PORT", "9")
    result = CliRunner().invoke(app, ["pipeline", "list"])
    assert result.exit_code == 1
    assert "Airflow does not answer at http://127.0.0.1:9" in result.output
    assert "streamops up" in result.output
