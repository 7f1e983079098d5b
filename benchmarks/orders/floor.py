"""Phase 3: the floor under the trigger interval."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from benchmarks.orders.queries import (
    READY_TIMEOUT_SECONDS,
    batch_reports,
    durations,
    median_parts,
    raise_failures,
    stop_queries,
    wait_consumed,
    wait_idle_reports,
    wait_ready,
)
from benchmarks.orders.scratch import create_topic
from benchmarks.orders.support import LATENCY_PHASE, SINK_NAMES, Scratch, Sizes, log, start_pipeline

TRICKLE_INTERVAL_SECONDS = 2.0


def floor_phase(
    spark: Any, scratch: Scratch, sizes: Sizes, latency: list[dict[str, Any]]
) -> dict[str, Any]:
    first_phase = LATENCY_PHASE + len(sizes.rates)
    # No-op first: what the engine alone needs per batch, then what the sinks add to it.
    modes = {
        "no_op": _trickle(spark, scratch, sizes, "no_op", first_phase, idle_seconds=0),
        "sinks": _trickle(
            spark, scratch, sizes, "sinks", first_phase + 1, idle_seconds=sizes.idle_seconds
        ),
    }
    lowest = min(latency, key=lambda entry: entry["target_rate"]) if latency else None
    return {
        "trickle_interval_seconds": TRICKLE_INTERVAL_SECONDS,
        **modes,
        "trigger_to_trigger_ms": None
        if lowest is None
        else {
            "rate": lowest["target_rate"],
            **{name: summary["trigger_interval_ms"] for name, summary in lowest["batches"].items()},
        },
    }


def _trickle(
    spark: Any, scratch: Scratch, sizes: Sizes, mode: str, phase: int, *, idle_seconds: int
) -> dict[str, Any]:
    """One order every TRICKLE_INTERVAL_SECONDS into a running pipeline, then ``idle_seconds``
    with none: the duration of batches of one order, of empty batches and of idle triggers."""
    from confluent_kafka import Producer

    from streamops.generator.producer import CLIENT_LOGGER, PRODUCER_CONFIG
    from streamops.generator.records import RecordFactory

    settings = scratch.settings
    topic = create_topic(scratch, f"floor-{mode}")
    queries = start_pipeline(
        spark,
        settings,
        topic,
        scratch.checkpoint(f"floor-{mode}"),
        sinks=mode == "sinks",
        available_now=False,
    )
    trickle = RecordFactory(
        "orders",
        seed=scratch.seed(phase),
        now=scratch.anchor(phase),
        interval=timedelta(seconds=TRICKLE_INTERVAL_SECONDS),
    )
    producer = Producer(
        {
            **PRODUCER_CONFIG,
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "logger": CLIENT_LOGGER,
        }
    )
    sends = max(1, round(sizes.floor_seconds / TRICKLE_INTERVAL_SECONDS))
    try:
        wait_ready(queries)
        log(
            f"floor: one order every {TRICKLE_INTERVAL_SECONDS:g} s for {sizes.floor_seconds} s, "
            f"{SINK_NAMES[mode]}"
        )
        started = time.monotonic()
        for index in range(sends):
            if index:
                time.sleep(max(0.0, started + index * TRICKLE_INTERVAL_SECONDS - time.monotonic()))
            record = next(trickle)
            producer.produce(topic, value=record.value, key=record.key)
            producer.flush(10)
            raise_failures(queries)
        # Idle right after the last send may only mean the query has not seen it yet.
        wait_consumed(queries, sends, timeout=READY_TIMEOUT_SECONDS)
        wait_ready(queries)
        if idle_seconds:
            log(f"floor: up to {idle_seconds} s without input")
            wait_idle_reports(queries, idle_seconds)
    finally:
        stop_queries(queries)
    raise_failures(queries)
    per_query: dict[str, Any] = {}
    for query in queries:
        batches = batch_reports(query)
        small = [b for b in batches if b["executed"] and 0 < b["rows"] <= 2]
        # Batch 0 of a new query is empty too, but also plans and compiles everything first.
        empty = [b for b in batches if b["executed"] and b["rows"] == 0 and b["batch_id"] > 0]
        idle = [b for b in batches if not b["executed"]]
        per_query[query.name] = {
            "small_batches": durations(small),
            "small_batch_max_rows": max((b["rows"] for b in small), default=0),
            "small_batch_parts_median_ms": median_parts(small),
            "empty_batches": durations(empty),
            "idle_checks": durations(idle),
        }
    return {"orders_sent": sends, "queries": per_query}
