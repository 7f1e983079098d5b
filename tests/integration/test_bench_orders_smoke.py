"""The orders pipeline benchmark works end to end at a tiny size: it writes its JSON and PNG charts,
its numbers agree with each other and with what it produced, and it leaves no trace behind.
Correctness of the measurement, never its speed."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis

from streamops.config import PROJECT_ROOT, Settings
from streamops.db import connect
from streamops.topics import admin_client

ORDERS = 1500
RATE = 100
LATENCY_SECONDS = 2
TINY = {
    "BENCH_ORDERS": str(ORDERS),
    "BENCH_REPEATS": "1",
    "BENCH_RATES": str(RATE),
    "BENCH_LATENCY_SECONDS": str(LATENCY_SECONDS),
    "BENCH_FLOOR_SECONDS": "2",
    "BENCH_IDLE_SECONDS": "0",
    "BENCH_WARM_UP": "0",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TABLES = ("orders", "order_revenue_5s", "quarantine", "query_progress", "query_status")


def footprint(settings: Settings) -> dict[str, Any]:
    """What the benchmark may touch: table sizes, the other Redis databases, scratch topics."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        rows = {}
        for table in TABLES:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            rows[table] = cursor.fetchone()[0]
    keys = {}
    for db in range(16):
        if db != settings.redis_db:
            client = redis.Redis(host=settings.redis_host, port=settings.redis_port, db=db)
            keys[db] = client.dbsize()
            client.close()
    admin = admin_client(settings)
    topics = sorted(
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith("bench-orders-pipeline")
    )
    # ConsumerPerformance's groups (the benchmark names them after its pipeline).
    groups = sorted(
        group.group_id
        for group in admin.list_consumer_groups(request_timeout=30).result().valid
        if group.group_id.startswith("bench_orders_")
    )
    return {"rows": rows, "redis_keys": keys, "scratch_topics": topics, "groups": groups}


def test_orders_pipeline_benchmark_measures_writes_charts_and_cleans_up(
    settings: Settings, tmp_path: Path
) -> None:
    before = footprint(settings)
    done = subprocess.run(
        # The benchmarks run Spark in process: the Spark environment's Python runs them.
        [settings.spark_python, "-m", "benchmarks.runner", "orders_pipeline", "--output", tmp_path],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_ROOT,
        env={**os.environ, **TINY},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    (output,) = tmp_path.glob("orders_pipeline-*.json")
    report = json.loads(output.read_text())
    results = report["results"]
    assert results["sizes"]["orders"] == ORDERS

    # Throughput: both drains read every order; the sinks wrote exactly what was produced.
    throughput = results["throughput"]
    expected = throughput["expected"]
    assert expected["orders"] + expected["quarantine"] + expected["duplicates"] == ORDERS
    assert expected["quarantine"] > 0 and expected["duplicates"] > 0
    assert throughput["written"] == {
        "orders": expected["orders"],
        "quarantine": expected["quarantine"],
        "window_order_count": expected["orders"],
        "redis_order_count": expected["orders"],
    }
    for mode in ("no_op", "sinks"):
        (run,) = throughput[mode]["runs"]
        assert throughput[mode]["best"] == run
        assert run["orders_per_second"] == pytest.approx(ORDERS / run["seconds"], rel=1e-3)
        for query in run["queries"].values():
            assert query["input_rows"] == ORDERS
            assert 0 < query["seconds"] <= run["seconds"]
            assert query["batches"] >= 1
    # Kafka's own consumer read the same topic, every record of it, in a group since deleted.
    kafka = throughput["kafka_consumer_performance"]
    (kafka_run,) = kafka["runs"]
    assert kafka["best"] == kafka_run
    assert kafka_run["records"] == ORDERS
    assert kafka_run["fetch_records_per_second"] > 0
    assert throughput["ratio_no_op_to_consumer_perf"] == pytest.approx(
        throughput["no_op"]["best"]["orders_per_second"] / kafka_run["fetch_records_per_second"],
        abs=5e-5,  # rounded to four places, and far below 1
    )
    assert throughput["ratio_sinks_to_no_op"] == pytest.approx(
        throughput["sinks"]["best"]["orders_per_second"]
        / throughput["no_op"]["best"]["orders_per_second"],
        rel=1e-3,
    )

    # Latency: every order sent and taken in, every sample seen in MariaDB and in Redis.
    (latency,) = results["latency"]
    sent = RATE * LATENCY_SECONDS
    assert latency["target_rate"] == RATE
    assert (latency["produced"], latency["acked"], latency["failed"]) == (sent, sent, 0)
    assert latency["processed"] == sent
    assert latency["achieved_rate"] > 0
    assert latency["producer_behind_schedule_max_ms"] >= 0
    assert latency["below_sinks_throughput"] == (
        throughput["sinks"]["best"]["orders_per_second"] > RATE
    )
    assert latency["samples"] == len(range(0, sent, latency["sample_every"]))
    for key in ("mariadb_visible", "redis_window", "mariadb_ingested_at", "producer_ack"):
        summary = latency[key]
        assert summary["count"] == latency["samples"]
        assert summary["not_visible"] == 0
        assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    # A batch stamps ingested_at before its rows are committed, so before they can be seen.
    assert latency["mariadb_ingested_at"]["p50_ms"] <= latency["mariadb_visible"]["p50_ms"]
    for name in ("orders_records", "orders_revenue"):
        batches = latency["batches"][name]
        assert batches["batches"] >= 1
        assert batches["rows_max"] <= sent

    # Floor: batches of one or two orders were timed for both queries, with either sink.
    floor = results["floor"]
    for mode in ("no_op", "sinks"):
        assert floor[mode]["orders_sent"] == 1
        for name in ("orders_records", "orders_revenue"):
            query = floor[mode]["queries"][name]
            assert query["small_batches"]["count"] >= 1
            assert query["small_batch_max_rows"] == 1
            assert query["small_batches"]["min"] <= query["small_batches"]["median"]
            assert "addBatch" in query["small_batch_parts_median_ms"]
    assert floor["trigger_to_trigger_ms"]["rate"] == RATE

    # The charts are PNG files in the output folder.
    assert set(results["plots"]) == {"throughput", "latency"}
    for path in map(Path, results["plots"].values()):
        assert path.parent == tmp_path
        assert path.read_bytes()[:8] == PNG_SIGNATURE

    assert footprint(settings) == before
