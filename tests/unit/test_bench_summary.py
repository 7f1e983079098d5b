"""The pure parts of `streamops bench`'s report (benchmarks/runner.py, benchmarks/report.py) on
hand-made results shaped like the benchmarks' own: state over time, headline numbers, ratios and
the markdown summary. Also the shared graceful stop of the benchmarks' streaming queries."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import runner
from benchmarks.report import QuerySample, QuerySampler, _state_over_time
from spark_jobs.common.runner import _stop_all, stop_between_batches

BENCHMARKS = Path(runner.__file__).resolve().parent


def joins_results() -> dict[str, Any]:
    """Like bench_joins.py's: one state series, its samples straight in the list."""
    return {
        "records_per_topic": 5000,
        "sustained": {"pairs_per_second": 480.5, "state_rows_max": 900, "batches": 3},
        "baseline": {"parse_only": {"input_records_per_second": 20000.0}},
        "ratio_join_to_parse": 0.55,
        "ratio_sustained_pairs_to_send_rate": 0.961,
        "state_series": [
            {"elapsed_seconds": 0.01, "batch_id": 0, "state_rows": 198, "memory_bytes": 26000},
            # Out of order on purpose: the chart's points must come sorted by time.
            {"elapsed_seconds": 9.03, "batch_id": 2, "state_rows": 900, "memory_bytes": 90000},
            {"elapsed_seconds": 4.78, "batch_id": 1, "state_rows": 600, "memory_bytes": 60000},
        ],
    }


def vitals_results() -> dict[str, Any]:
    """Like bench_vitals.py's: the state per query under ``queries`` of each sample."""

    def sample(seconds: float, summary_rows: int, signal_rows: int) -> dict[str, Any]:
        return {
            "elapsed_seconds": seconds,
            "queries": {
                "vitals_records": {"batch_id": 1, "state_rows": 0, "state_bytes": 0},
                "vitals_summary": {"batch_id": 1, "state_rows": summary_rows, "state_bytes": 8},
                "vitals_signal": {"batch_id": 1, "state_rows": signal_rows, "state_bytes": 8},
            },
        }

    return {
        "sizes": {"readings": 3000, "rate": 200},
        "drain": {
            "readings": 3000,
            "baseline": {"seconds": 8.85, "readings_per_second": 3388},
            "pipeline": {"seconds": 19.68, "readings_per_second": 1524},
            "ratio_pipeline_to_parse": 0.45,
        },
        "sustained": {
            "target_rate": 200,
            "sustained_readings_per_second": 851,
            "samples": [sample(5.0, 0, 0), sample(10.1, 1200, 48), sample(15.0, 2400, 48)],
            "state_rows_max": {"vitals_summary": 2400, "vitals_signal": 48},
        },
    }


# --- state_series -------------------------------------------------------------------------------


def test_state_series_of_samples_holding_state_rows() -> None:
    assert runner.state_series(joins_results()) == {
        "state_series": [(0.01, 198.0), (4.78, 600.0), (9.03, 900.0)]
    }


def test_state_series_per_query_of_samples_holding_queries() -> None:
    assert runner.state_series(vitals_results()) == {
        "sustained.samples.vitals_records": [(5.0, 0.0), (10.1, 0.0), (15.0, 0.0)],
        "sustained.samples.vitals_summary": [(5.0, 0.0), (10.1, 1200.0), (15.0, 2400.0)],
        "sustained.samples.vitals_signal": [(5.0, 0.0), (10.1, 48.0), (15.0, 48.0)],
    }


def test_state_series_inside_per_rate_entries_are_named_by_rate() -> None:
    results = {
        "latency": [
            {"target_rate": 200, "state": [{"elapsed_seconds": 1, "state_rows": 5}]},
            {"target_rate": 1000, "state": [{"elapsed_seconds": 2, "state_rows": 7}]},
        ]
    }
    assert runner.state_series(results) == {
        "latency[200].state": [(1.0, 5.0)],
        "latency[1000].state": [(2.0, 7.0)],
    }


def test_state_series_ignores_lists_that_are_not_state_over_time() -> None:
    results = {
        # No elapsed_seconds: per-rate entries, not samples over time.
        "rates": [{"target_rate": 100, "state_rows": 3}],
        # Over time, but no state in it.
        "throughput": [{"elapsed_seconds": 1.0, "rows_per_second": 500}],
        # A sample whose state is not a number (not measured) is skipped, the rest kept.
        "state": [
            {"elapsed_seconds": 1.0, "state_rows": None},
            {"elapsed_seconds": 2.0, "state_rows": 4},
            {"elapsed_seconds": 3.0, "state_rows": True},
        ],
    }
    assert runner.state_series(results) == {"state": [(2.0, 4.0)]}


def test_orders_benchmark_state_is_in_the_shape_the_report_charts() -> None:
    from benchmarks.orders.queries import state_series

    def batch(at: float, batch_id: int, rows: int, executed: bool = True) -> dict[str, Any]:
        return {"at": at, "batch_id": batch_id, "executed": executed, "state_rows": rows}

    progress = {
        "orders_records": [batch(100.0, 0, 0), batch(101.0, 1, 0)],
        # An idle trigger (no batch run) is no point of the series.
        "orders_revenue": [batch(100.5, 0, 0), batch(102.5, 1, 40), batch(103.0, 1, 40, False)],
    }
    latency = [{"target_rate": 200, "state_series": state_series(progress)}]
    assert runner.state_series({"latency": latency}) == {
        "latency[200].state_series.orders_revenue": [(0.5, 0.0), (2.5, 40.0)]
    }


def test_is_time_series_needs_every_item_to_have_elapsed_seconds() -> None:
    assert runner.is_time_series([{"elapsed_seconds": 0}, {"elapsed_seconds": 1.5}])
    assert not runner.is_time_series([{"elapsed_seconds": 0}, {"batch_id": 1}])
    assert not runner.is_time_series([])
    assert not runner.is_time_series([1.0, 2.0])
    assert not runner.is_time_series({"elapsed_seconds": 1})


# --- headline numbers ---------------------------------------------------------------------------


def test_headline_numbers_leave_time_series_to_the_chart() -> None:
    numbers = runner.headline_numbers(vitals_results())
    assert not [key for key in numbers if "samples" in key], numbers
    assert numbers["sustained.sustained_readings_per_second"] == 851.0
    assert numbers["sustained.state_rows_max.vitals_summary"] == 2400.0
    assert numbers["drain.pipeline.readings_per_second"] == 1524.0

    numbers = runner.headline_numbers(joins_results())
    assert not [key for key in numbers if "state_series" in key], numbers
    assert numbers["sustained.pairs_per_second"] == 480.5


def test_headline_numbers_keep_other_lists_and_leave_out_ratios() -> None:
    results = {
        "latency": [{"target_rate": 200, "p50_ms": 900}],
        "ratio_join_to_parse": 0.5,
        "ratio_realtime_to_microbatch_p50": {"redis": 0.35, "kafka": 0.4},
        "load_average": [2.5, 2.0, 1.5],
        "load_average_start": {"floor": [3.1, 2.2, 1.8]},
    }
    assert runner.headline_numbers(results) == {
        "latency[200].target_rate": 200.0,
        "latency[200].p50_ms": 900.0,
    }


def test_load_averages_do_not_crowd_the_results_out_of_the_table() -> None:
    results = {
        "load_average": {f"phase_{n}": [2.0, 2.0, 2.0] for n in range(20)},
        "throughput": {"orders_per_second": 7926.2},
    }
    assert runner.headline_numbers(results, limit=3) == {"throughput.orders_per_second": 7926.2}


# --- ratios and the summary ---------------------------------------------------------------------


def test_ratios_find_the_vitals_ratio_under_drain() -> None:
    assert runner.ratios(vitals_results()) == {"drain.ratio_pipeline_to_parse": 0.45}


def test_ratios_find_each_number_of_a_mapping_of_ratios() -> None:
    results = {
        "modes": {"micro-batch": {"throughput": {"ratio_to_produce_rate": 0.07}}},
        "ratio_realtime_to_microbatch_p50": {"redis": 0.35, "kafka": 0.4, "mariadb": None},
    }
    found = runner.ratios(results)
    assert found == {
        "modes.micro-batch.throughput.ratio_to_produce_rate": 0.07,
        "ratio_realtime_to_microbatch_p50.redis": 0.35,
        "ratio_realtime_to_microbatch_p50.kafka": 0.4,
    }
    assert [runner.ratio_label(key) for key in found] == [
        "ratio_to_produce_rate",
        "ratio_realtime_to_microbatch_p50.redis",
        "ratio_realtime_to_microbatch_p50.kafka",
    ]
    assert (
        runner.ratio_baseline("ratio_realtime_to_microbatch_p50.redis")
        == (runner.RATIO_BASELINES["ratio_realtime_to_microbatch_p50"])
    )
    assert runner.ratio_baseline("drain.ratio_unknown") == "see the benchmark's README"


def test_every_ratio_a_benchmark_returns_says_what_it_compares() -> None:
    returned = {
        name
        # The benchmarks and their phases' modules (benchmarks/orders/); not the runner's list.
        for module in sorted(BENCHMARKS.rglob("*.py"))
        if module.name != "runner.py"
        for name in re.findall(r"[\"'](ratio_\w+)[\"']", module.read_text())
    }
    assert "ratio_pipeline_to_parse" in returned  # the scan itself works
    assert returned - set(runner.RATIO_BASELINES) == set()


def test_summary_lists_the_vitals_ratio_with_its_baseline_and_no_samples(
    tmp_path: Path,
) -> None:
    report = {
        "duration_seconds": 108.2,
        "machine": {"cpu_model": "test CPU", "logical_cpus": 2, "python": "3.11"},
        "results": vitals_results(),
    }
    chart = tmp_path / "report-vitals-state.png"
    summary = runner.summary_markdown(
        "20261125T000000Z",
        {"vitals": report},
        {},
        {"vitals": [chart]},
        tmp_path,
        quick=True,
    )
    baseline = runner.RATIO_BASELINES["ratio_pipeline_to_parse"]
    assert f"| `drain.ratio_pipeline_to_parse` | 0.450 | {baseline} |" in summary
    assert "| vitals | ok | 108 | ratio_pipeline_to_parse = 0.450 |" in summary
    assert "samples" not in summary
    assert "| `sustained.sustained_readings_per_second` | 851 |" in summary
    assert "![report-vitals-state](report-vitals-state.png)" in summary


# --- report: which state series are charted ---------------------------------------------------


def test_state_chart_uses_the_json_series_and_drops_stateless_queries() -> None:
    sampler = QuerySampler("redis://unused")
    sampler.samples.append(
        QuerySample(at=3.0, query="p:q", state_rows=9, rows_per_second=None, batch_id=1)
    )
    series, xlabel = _state_over_time(vitals_results(), sampler, (0.0, 60.0))
    assert series == {
        "vitals_summary": [(5.0, 0.0), (10.1, 1200.0), (15.0, 2400.0)],
        "vitals_signal": [(5.0, 0.0), (10.1, 48.0), (15.0, 48.0)],
    }
    assert xlabel == "seconds since the phase started"


def test_state_chart_falls_back_to_the_sampler_within_the_benchmark_span() -> None:
    sampler = QuerySampler("redis://unused")
    for at, rows in ((1.0, 5), (12.0, 7), (30.0, 8), (95.0, 100)):
        sampler.samples.append(
            QuerySample(at=at, query="orders:w", state_rows=rows, rows_per_second=None, batch_id=1)
        )
    series, xlabel = _state_over_time({"rows": 3}, sampler, (10.0, 40.0))
    assert series == {"orders:w": [(2.0, 7), (20.0, 8)]}
    assert xlabel == "seconds since the benchmark started"

    nothing, _ = _state_over_time({"rows": 3}, QuerySampler("redis://unused"), (0, 9))
    assert nothing == {}


# --- stop_between_batches -----------------------------------------------------------------------


class _Query:
    """What stop_between_batches reads of a StreamingQuery: isActive, status, stop()."""

    def __init__(self, busy_reads: int) -> None:
        self.busy_reads = busy_reads
        self.reads = 0
        self.active = True
        self.busy_when_stopped: bool | None = None
        self.name = "bench_query"

    @property
    def isActive(self) -> bool:  # pyspark's name
        return self.active

    @property
    def status(self) -> dict[str, Any]:
        self.reads += 1
        return {"isTriggerActive": self.reads <= self.busy_reads, "isDataAvailable": False}

    def stop(self) -> None:
        self.busy_when_stopped = self.reads <= self.busy_reads
        self.active = False


def test_stop_waits_for_the_running_trigger_to_end() -> None:
    query = _Query(busy_reads=5)
    assert stop_between_batches(query, timeout=10) is True
    assert query.reads == 6 and query.busy_when_stopped is False and not query.active


def test_stop_is_bounded_when_the_query_stays_busy(caplog: pytest.LogCaptureFixture) -> None:
    query = _Query(busy_reads=10**9)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert stop_between_batches(query, timeout=0.05) is False
    assert time.monotonic() - started < 5
    assert query.busy_when_stopped is True and not query.active
    assert "query bench_query still ran a batch" in caplog.text


def test_a_job_stops_all_its_queries_within_one_budget() -> None:
    """SIGTERM: the idle query stops between batches, the busy ones mid-batch once the shared
    budget is spent (the supervisor kills a job that takes too long)."""
    busy, idle, also_busy = _Query(10**9), _Query(2), _Query(10**9)
    started = time.monotonic()
    _stop_all([busy, idle, also_busy], timeout=0.2)  # type: ignore[list-item]
    assert time.monotonic() - started < 5
    assert not busy.active and not idle.active and not also_busy.active
    assert busy.busy_when_stopped is True and also_busy.busy_when_stopped is True
    assert idle.busy_when_stopped is False


def test_stop_of_an_ended_query_does_not_wait() -> None:
    query = _Query(busy_reads=3)
    query.active = False
    assert stop_between_batches(query, timeout=10) is False
    assert query.reads == 0
