"""Phase 1: throughput, draining a produced topic with the real sinks and with no-op ones."""

from __future__ import annotations

import time
from typing import Any

from benchmarks import BenchmarkError, produce_orders
from benchmarks.orders.consumer_perf import (
    best_run,
    check_java,
    consumer_performance,
    ratio_to_consumer_perf,
)
from benchmarks.orders.queries import batch_reports, raise_failures, stop_queries
from benchmarks.orders.scratch import (
    create_topic,
    database,
    delete_written,
    era_range,
    redis_client,
)
from benchmarks.orders.support import (
    ORDERS_ENV,
    SINK_NAMES,
    THROUGHPUT_PHASE,
    Scratch,
    Sizes,
    log,
    order_id_pattern,
    start_pipeline,
)

# The throughput topic's defects: enough to exercise quarantine and de-duplication.
MALFORMED_RATIO = 0.01
DUPLICATE_RATIO = 0.01


def _produce_all(
    scratch: Scratch, phase: str, phase_index: int, count: int
) -> tuple[str, int, Any]:
    """``count`` orders (with the throughput mix of defects) into a new topic, unthrottled."""

    topic = create_topic(scratch, phase)
    seed = scratch.seed(phase_index)
    log(f"{phase}: producing {count:,} orders into {topic}")
    summary = produce_orders(
        scratch.settings.kafka_bootstrap_servers,
        topic,
        count,
        seed,
        scratch.anchor(phase_index),
        malformed_ratio=MALFORMED_RATIO,
        duplicate_ratio=DUPLICATE_RATIO,
    )
    return topic, seed, summary


def throughput_phase(spark: Any, scratch: Scratch, sizes: Sizes) -> dict[str, Any]:
    # Before minutes of producing and draining: Kafka's tool needs java and the broker's jars.
    java = check_java(scratch.settings)
    topic, seed, summary = _produce_all(scratch, "throughput", THROUGHPUT_PHASE, sizes.orders)
    expected = {
        "orders": summary.by_kind["valid"] + summary.by_kind["late"],
        "quarantine": summary.by_kind["malformed"],
        "duplicates": summary.by_kind["duplicate"],
    }

    warm_up = None
    if sizes.warm_up:
        # A fresh driver plans, compiles and loads classes on its first batches, and the JIT
        # keeps compiling for a while after: tens of seconds here, which would otherwise count
        # against whichever drain ran first. The sinks' code path includes the no-op's
        # (persist, count, collect), so one drain with them warms both.
        log("throughput: warm-up drain with the real sinks (discarded)")
        warm_up = _drain(spark, scratch, topic, "warm-up", sinks=True, orders=sizes.orders)
    runs: dict[str, list[dict[str, Any]]] = {"no_op": [], "sinks": []}
    kafka_runs: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for repeat in range(sizes.repeats):
        modes = ("no_op", "sinks") if repeat % 2 == 0 else ("sinks", "no_op")
        for mode in modes:
            if mode == "sinks":
                # Every sinks run inserts new rows, never finds its own from the last round.
                delete_written(scratch)
            label = f"throughput-{mode}-{repeat}"
            log(f"throughput: draining with {SINK_NAMES[mode]} (round {repeat + 1})")
            drained = _drain(
                spark, scratch, topic, label, sinks=mode == "sinks", orders=sizes.orders
            )
            runs[mode].append(drained)
            if mode == "sinks":
                checks = _sink_checks(scratch, seed, topic)
            else:
                # Right after the no-op drain, so both sides of their ratio see the same load.
                log(f"throughput: Kafka's ConsumerPerformance on the topic (round {repeat + 1})")
                group = f"{scratch.pipeline}-consumer-perf-{repeat}"
                kafka_runs.append(
                    consumer_performance(java, scratch.settings, topic, sizes.orders, group)
                )
    no_op, sinks = _best_run(runs["no_op"]), _best_run(runs["sinks"])
    kafka = best_run(kafka_runs)
    return {
        "topic_orders": sizes.orders,
        "producer_orders_per_second": round(summary.rate, 1),
        "expected": expected,
        "warm_up_seconds": None if warm_up is None else warm_up["seconds"],
        "written": checks,
        "no_op": {"best": no_op, "runs": runs["no_op"]},
        "sinks": {"best": sinks, "runs": runs["sinks"]},
        "kafka_consumer_performance": {"best": kafka, "runs": kafka_runs},
        # Of the best rounds; what each round gives is in "runs".
        "ratio_sinks_to_no_op": round(sinks["orders_per_second"] / no_op["orders_per_second"], 4),
        "ratio_no_op_to_consumer_perf": ratio_to_consumer_perf(no_op["orders_per_second"], kafka),
    }


def _drain(
    spark: Any, scratch: Scratch, topic: str, label: str, *, sinks: bool, orders: int
) -> dict[str, Any]:
    timeout = max(300.0, orders / 500)
    started = time.monotonic()
    queries = start_pipeline(
        spark,
        scratch.settings,
        topic,
        scratch.checkpoint(label),
        sinks=sinks,
        available_now=True,
    )
    ended: dict[str, float] = {}
    try:
        while len(ended) < len(queries):
            for query in queries:
                if query.name not in ended and not query.isActive:
                    ended[query.name] = time.monotonic()
            if time.monotonic() - started > timeout:
                raise BenchmarkError(
                    f"Draining {orders:,} orders took over {timeout:.0f} s; lower {ORDERS_ENV}."
                )
            time.sleep(0.05)
    finally:
        stop_queries(queries)
    raise_failures(queries)
    seconds = max(ended.values()) - started
    per_query = {}
    for query in queries:
        batches = [b for b in batch_reports(query) if b["executed"]]
        per_query[query.name] = {
            "seconds": round(ended[query.name] - started, 3),
            "batches": len(batches),
            "input_rows": sum(b["rows"] for b in batches),
            "batch_seconds_total": round(sum(b["ms"] for b in batches) / 1000, 3),
        }
    return {
        "seconds": round(seconds, 3),
        "orders_per_second": round(orders / seconds, 1),
        "queries": per_query,
    }


def _sink_checks(scratch: Scratch, seed: int, topic: str) -> dict[str, Any]:
    """What the sinks run left in MariaDB and Redis, to hold against what was produced."""
    window_start, window_end = era_range(scratch)
    with database(scratch.settings) as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM orders WHERE order_id LIKE ?", (order_id_pattern(seed),)
        )
        (orders,) = cursor.fetchone()
        cursor.execute(
            "SELECT COUNT(*) FROM quarantine WHERE source_topic = ? AND pipeline = 'orders'",
            (topic,),
        )
        (quarantine,) = cursor.fetchone()
        cursor.execute(
            "SELECT COALESCE(SUM(order_count), 0) FROM order_revenue_5s "
            "WHERE window_start >= ? AND window_start < ?",
            (window_start, window_end),
        )
        (window_orders,) = cursor.fetchone()
    client = redis_client(scratch.settings)
    try:
        totals = client.hgetall("streamops:orders:totals")
    finally:
        client.close()
    redis_orders = sum(int(v) for k, v in totals.items() if k.endswith(b":order_count"))
    return {
        "orders": int(orders),
        "quarantine": int(quarantine),
        "window_order_count": int(window_orders),
        "redis_order_count": redis_orders,
    }


def _best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest round: other work on the machine only ever slows a round down, so the
    fastest is the closest to what the pipeline itself can do."""
    return max(runs, key=lambda run: run["orders_per_second"])
