"""Assembling the soak's report from recorded probes and samples (streamops/soak/report.py):
latency per output with misses and warm-up, cost and health, targets, the terminal's tables,
and that `streamops bench` reads the report like any benchmark's results."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import runner
from streamops.soak.probes import OUTPUTS, Expectation
from streamops.soak.report import (
    GIB,
    build_report,
    cost_report,
    evaluate_targets,
    health_report,
    output_report,
    outputs_report,
    status_line,
    summary_tables,
)

START = 1000.0


def seen(output: str, seq: int, at: float, latency: float) -> Expectation:
    return Expectation(output, seq, START + at, target=seq, visible_at=START + at + latency)


def missed(output: str, seq: int, at: float) -> Expectation:
    return Expectation(output, seq, START + at, target=seq, missed=True)


def test_output_report_summarises_latencies_and_keeps_misses_apart() -> None:
    expectations = [seen("orders_row", i, 5.0 * i, 1.0 + i / 10) for i in range(10)]
    expectations.append(missed("orders_row", 10, 50.0))
    report = output_report("orders_row", expectations, START)
    assert report["count"] == 10 and report["misses"] == 1
    assert report["p50_ms"] == pytest.approx(1450.0)
    assert report["max_ms"] == pytest.approx(1900.0)
    assert report["samples"][0] == {
        "elapsed_seconds": 0.0,
        "seq": 0,
        "latency_ms": 1000.0,
        "missed": False,
    }
    assert report["samples"][-1]["missed"] and report["samples"][-1]["latency_ms"] is None
    assert report["warm_up"]["count"] == 0


def test_alert_probes_before_the_first_alert_are_warm_up_when_the_rule_is_new() -> None:
    expectations = [
        missed("alert_mariadb", 0, 0.0),  # sent before the job knew the rule
        seen("alert_mariadb", 1, 5.0, 26.0),  # the first alert: at 31 s
        seen("alert_mariadb", 2, 35.0, 2.0),
        seen("alert_kafka", 2, 35.0, 1.9),
        seen("orders_row", 0, 0.0, 40.0),  # not an alert output: never warm-up
    ]
    fresh = outputs_report(expectations, START, rule_inserted=True)
    assert fresh["alert_mariadb"]["warm_up"]["count"] == 2
    assert fresh["alert_mariadb"]["count"] == 1 and fresh["alert_mariadb"]["misses"] == 0
    assert fresh["orders_row"]["count"] == 1
    known = outputs_report(expectations, START, rule_inserted=False)
    assert known["alert_mariadb"]["warm_up"]["count"] == 0
    assert known["alert_mariadb"]["misses"] == 1 and known["alert_mariadb"]["count"] == 2
    assert list(fresh) == list(OUTPUTS)  # every output, in the documented order


def test_skipped_outputs_say_why() -> None:
    report = outputs_report([], START, rule_inserted=False, skipped={"alert_redis": "disabled"})
    assert report["alert_redis"]["skipped"] == "disabled"
    assert report["alert_redis"]["count"] == 0


def cost_samples() -> list[dict[str, Any]]:
    return [
        {
            "elapsed_seconds": 5.0,
            "interval_seconds": 5.0,
            "cores": {"kafka": 0.2, "pipeline-orders": 0.6, "soak": 0.05, "other": 0.1},
            "rss_bytes": {"kafka": 1 * GIB, "pipeline-orders": 2 * GIB, "soak": GIB // 10},
            "machine_cores": 0.95,
            "memory_used_bytes": 5 * GIB,
        },
        {
            "elapsed_seconds": 20.0,
            "interval_seconds": 15.0,
            "cores": {"kafka": 0.4, "pipeline-orders": 1.0, "soak": 0.05, "other": 0.2},
            "rss_bytes": {"kafka": 1 * GIB, "pipeline-orders": 3 * GIB, "soak": GIB // 10},
            "machine_cores": 1.65,
            "memory_used_bytes": 6 * GIB,
        },
    ]


def test_cost_report_weighs_each_interval_by_its_length() -> None:
    cost = cost_report(cost_samples(), ["pipeline-orders", "kafka", "soak", "other"], 2)
    orders = cost["components"]["pipeline-orders"]
    assert orders["cpu_seconds"] == pytest.approx(0.6 * 5 + 1.0 * 15)
    assert orders["mean_cores"] == pytest.approx(18 / 20)
    assert orders["max_cores"] == 1.0
    assert orders["max_rss_bytes"] == 3 * GIB
    # The platform leaves the soak's own process and the rest of the machine out.
    assert cost["platform"]["components"] == ["pipeline-orders", "kafka"]
    assert cost["platform"]["mean_cores"] == pytest.approx((0.8 * 5 + 1.4 * 15) / 20)
    assert cost["platform"]["max_rss_bytes"] == 4 * GIB
    assert cost["machine"]["mean_busy_cores"] == pytest.approx((0.95 * 5 + 1.65 * 15) / 20)
    assert cost["components"]["other"]["max_rss_bytes"] is None
    assert list(cost["components"]) == ["pipeline-orders", "kafka", "soak", "other"]


def test_cost_report_takes_pss_from_the_samples_that_have_it() -> None:
    samples = cost_samples()
    samples[1]["pss_bytes"] = {"kafka": GIB // 2, "pipeline-orders": 2 * GIB, "soak": 1}
    cost = cost_report(samples, ["pipeline-orders", "kafka", "soak", "other"], 2)
    assert cost["components"]["kafka"]["max_pss_bytes"] == GIB // 2
    assert cost["components"]["other"]["max_pss_bytes"] is None
    assert cost["platform"]["max_pss_bytes"] == 2 * GIB + GIB // 2
    without = cost_report(cost_samples(), ["kafka"], 2)
    assert without["platform"]["max_pss_bytes"] is None
    assert without["components"]["kafka"]["max_pss_bytes"] is None


def health() -> dict[str, Any]:
    verdicts = [
        {"elapsed_seconds": 0.0, "statuses": {"orders": "healthy", "alerts": "healthy"}},
        {
            "elapsed_seconds": 5.0,
            "statuses": {"orders": "stalled", "alerts": "overloaded"},
            "details": {"orders": "orders_revenue: no progress for 99 s"},
        },
        {"elapsed_seconds": 10.0, "statuses": {"orders": "healthy", "alerts": "healthy"}},
    ]
    loads = [{"elapsed_seconds": 0.0, "load1": 1.5, "load5": 1.0, "load15": 0.5}]
    lags = [
        {"elapsed_seconds": 0.0, "lag": {"orders": 10, "alerts": None}},
        {"elapsed_seconds": 15.0, "lag": {"orders": 30, "alerts": 2}},
    ]
    return health_report(
        verdicts,
        loads,
        lags,
        restarts_first={"orders": 3, "alerts": 0},
        restarts_last={"orders": 4, "alerts": 0},
        job_pids={"orders": [200, 250], "alerts": [300]},
        pipelines=["orders", "alerts"],
    )


def test_health_report_counts_verdicts_restarts_and_lag() -> None:
    report = health()
    assert report["restarts"] == {"orders": 1, "alerts": 0} and report["restarts_total"] == 1
    assert report["job_relaunches"] == {"orders": 1, "alerts": 0}
    assert report["stall_verdicts"] == 1
    assert report["not_healthy_verdicts"] == {"overloaded": 1, "stalled": 1}
    assert report["verdicts"]["orders"] == {"healthy": 2, "stalled": 1}
    assert report["not_healthy_examples"][0]["detail"].startswith("orders_revenue")
    assert report["kafka_lag"]["orders"] == {"max": 30, "mean": 20.0, "last": 30}
    assert report["kafka_lag"]["alerts"] == {"max": 2, "mean": 2.0, "last": 2}
    assert report["load_average"]["max_load1"] == 1.5


def test_health_examples_keep_a_few_of_each_pipeline_and_status() -> None:
    starting = [
        {"elapsed_seconds": float(i), "statuses": {"vitals": "starting"}, "details": {}}
        for i in range(10)
    ]
    failed = [
        {
            "elapsed_seconds": 10.0,
            "statuses": {"vitals": "failed"},
            "details": {"vitals": "vitals_signal failed"},
        }
    ]
    report = health_report(starting + failed, [], [], {}, {}, {}, ["vitals"])
    statuses = [e["status"] for e in report["not_healthy_examples"]]
    assert statuses == ["starting", "starting", "starting", "failed"]
    assert report["verdicts"]["vitals"] == {"failed": 1, "starting": 10}


def test_targets_pass_or_fail_and_a_miss_counts_as_the_timeout() -> None:
    outputs = {
        "orders_row": output_report("orders_row", [seen("orders_row", 0, 0, 1.0)], START),
        "order_payment": output_report(
            "order_payment",
            [seen("order_payment", i, i, 1.0) for i in range(50)]
            + [missed("order_payment", 50, 60)],
            START,
        ),
        "alert_redis": output_report("alert_redis", [], START),
    }
    cost = cost_report(cost_samples(), ["pipeline-orders", "kafka", "soak", "other"], 2)
    targets = evaluate_targets(outputs, cost, health(), timeout_seconds=120)
    assert targets["restarts"]["passed"] is False and targets["restarts"]["value"] == 1
    assert targets["stall_verdicts"]["passed"] is False
    assert targets["orders_row_p99_ms"] == {
        "value": 1000.0,
        "limit": 5000.0,
        "comparison": "<",
        "passed": True,
        "description": "p99 latency of orders_row in ms, misses counted as the time-out",
    }
    # One miss in 51 is more than 1 %: the p99 is pulled towards the 120-s time-out.
    assert targets["order_payment_p99_ms"]["value"] > 10_000
    assert targets["order_payment_p99_ms"]["passed"] is False
    # Nothing measured: no value, not passed.
    assert targets["alert_redis_p99_ms"]["value"] is None
    assert targets["alert_redis_p99_ms"]["passed"] is False
    assert targets["platform_mean_cores"]["limit"] == 1.0
    assert targets["platform_mean_cores"]["passed"] is False  # 1.25 cores
    assert targets["platform_max_rss_gib"]["value"] == 4.0
    assert targets["platform_max_rss_gib"]["passed"] is True


def full_report() -> dict[str, Any]:
    expectations = [seen(name, i, 5.0 * i, 0.5 + i / 10) for name in OUTPUTS for i in range(5)]
    outputs = outputs_report(expectations, START, rule_inserted=False)
    return build_report(
        run_id="20261202T100000Z",
        started_at=START,
        ended_at=START + 60,
        options={"duration_seconds": 60, "probe_interval_seconds": 5, "timeout_seconds": 120},
        outputs=outputs,
        cost=cost_report(cost_samples(), ["pipeline-orders", "kafka", "soak", "other"], 2),
        health=health(),
        probes_sent=5,
        context={"state_dir": "/tmp/x"},
    )


def test_build_report_starts_with_the_headline_and_the_targets() -> None:
    report = full_report()
    assert list(report)[:7] == [
        "kind",
        "run_id",
        "started_at",
        "ended_at",
        "interrupted",
        "headline",
        "targets",
    ]
    assert report["started_at"] == "1970-01-01T00:16:40+00:00"
    headline = report["headline"]
    assert headline["probes_sent"] == 5 and headline["misses"] == 0
    assert headline["targets_passed"] + headline["targets_failed"] == len(report["targets"])
    assert headline["worst_p99_ms"] == pytest.approx(896.0)
    assert report["method"]


def test_summary_tables_have_a_row_per_output_component_pipeline_and_target() -> None:
    report = full_report()
    tables = {title: (columns, rows) for title, columns, rows in summary_tables(report)}
    latency_columns, latency_rows = tables["Latency, acknowledged → visible (ms)"]
    assert [row[0] for row in latency_rows] == list(OUTPUTS)
    assert all(len(row) == len(latency_columns) for row in latency_rows)
    _, cost_rows = tables["Cost per component"]
    assert cost_rows[-1][0].startswith("platform") and cost_rows[0][0] == "pipeline-orders"
    _, health_rows = tables["Health per pipeline"]
    assert health_rows[0] == ["orders", "1", "1", "2/3", "stalled 1", "30"]
    _, target_rows = tables["Targets"]
    assert {row[3] for row in target_rows} <= {"pass", "FAIL"}


def test_status_line_names_the_worst_output_and_the_platforms_cpu() -> None:
    expectations = [
        seen("orders_row", 0, 0.0, 1.0),
        seen("alert_kafka", 0, 0.0, 4.0),
        missed("vitals_alert", 0, 0.0),
        Expectation("order_payment", 0, START, target=0),  # still pending
    ]
    line = status_line(
        phase="probing",
        probes_sent=1,
        expectations=expectations,
        cost=cost_samples()[0],
        load1=2.25,
        not_healthy=0,
    )
    assert line == (
        "probing · probes 1 · shown 2/4 · misses 1 · worst p99 alert_kafka 4.0 s · "
        "platform 0.80 cores · load 2.2 · not healthy 0"
    )


def test_streamops_bench_reads_the_report_like_any_benchmarks_results() -> None:
    report = full_report()
    # Latency chart: one group per output (and nothing from the warm-up lists).
    latency = runner.latency_percentiles(report)
    assert {key.split(".")[-1] for key in latency} == set(OUTPUTS)
    # Headline table: the headline first, no samples, no ratios of its own.
    numbers = runner.headline_numbers(report)
    assert next(iter(numbers)).startswith("headline.")
    assert not any("samples" in key for key in numbers)
    assert runner.ratios(report) == {}
    assert runner.state_series(report) == {}
