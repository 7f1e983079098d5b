"""The orders ⋈ payments join under load: join pairs per second sustained, the join's state size
over time, and the cost of the join against a same-run baseline. One run, one Spark driver.

The join query is built here, in-process, from the job's own pieces (``check_orders``,
``check_payments``, ``watermarked_orders``, ``watermarked_payments``, ``join_orders_payments``,
``order_payments_writer``, ``JoinsJobConfig`` defaults: 15-minute bound, watermarks 1 and 3
minutes) on two scratch topics, wired as ``spark_jobs.jobs.joins.start`` wires it.

1. **Sustained.** ``BENCH_JOINS_RECORDS`` orders and as many payments (seed-paired, so each
   order has its payment; 1 % malformed, 1 % duplicates) are generated with event times
   ``BENCH_JOINS_EVENT_STEP_MS`` apart, then sent at ``BENCH_JOINS_RATE`` records/s per topic
   while the query runs with the real sink (MariaDB ``order_payments``, Redis under a scratch
   prefix). Event time therefore runs faster than the wall clock (100 event seconds per second
   by default), so the 15-minute bound and the watermarks pass within seconds and the state
   reaches its steady size during the run. Every progress report is kept: elapsed seconds,
   input rows, join pairs written, the join operator's ``numRowsTotal``, ``numRowsRemoved`` and
   ``memoryUsedBytes``. Pairs/s sustained = pairs written ÷ seconds from the first record sent
   to the last pair written.
2. **Baseline.** The same two topics drained again with ``trigger(availableNow=True)`` and fresh
   checkpoints, twice: (a) parsing and validating both topics only (no state), (b) the full
   join into a no-op sink that still counts every pair. ``ratio_join_to_parse`` = (b) ÷ (a) in
   input records per second: what the join costs on this machine in this run.
   ``ratio_sustained_pairs_to_send_rate`` = pairs/s sustained ÷ the send rate per topic.

Every query is stopped between two batches (``stop_between_batches``): stopped while a batch is
planned, Spark would log the interruption as the query failing.

Leaving things as they were: order ids use a seed no one else uses and event times in a year
of 2002, and the rows written to ``order_payments`` are deleted by order id afterwards; Redis
keys go under ``streamops:bench:joins:<stamp>`` and are deleted; the topics and checkpoints are
scratch and removed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkError, require_services
from spark_jobs.common.runner import stop_between_batches
from streamops.config import Settings
from streamops.errors import StreamopsError

RECORDS_ENV = "BENCH_JOINS_RECORDS"
DEFAULT_RECORDS = 60_000
RATE_ENV = "BENCH_JOINS_RATE"
DEFAULT_RATE = 1_000
EVENT_STEP_ENV = "BENCH_JOINS_EVENT_STEP_MS"
DEFAULT_EVENT_STEP_MS = 100
NAME = "joins"
# The sizes of `streamops bench --quick` (benchmarks/runner.py): a smoke run, not numbers.
QUICK_ENV = {RECORDS_ENV: "5000", RATE_ENV: "500"}
MALFORMED_RATIO = 0.01
DUPLICATE_RATIO = 0.01
SEED_ORIGIN = 3_500_000_000
ERA_START = datetime(2002, 3, 1, tzinfo=UTC)
DRAIN_TIMEOUT_SECONDS = 900.0
SETTLE_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.5
QUIET_SECONDS = 60.0


def run(settings: Settings) -> dict[str, Any]:
    records = _int_env(RECORDS_ENV, DEFAULT_RECORDS)
    rate = _int_env(RATE_ENV, DEFAULT_RATE)
    event_step = timedelta(milliseconds=_int_env(EVENT_STEP_ENV, DEFAULT_EVENT_STEP_MS))
    require_services(settings)
    with _scratch(settings) as scratch:
        _log(f"generating {records} orders and {records} payments")
        messages = _generate(scratch, records, event_step)
        with _spark(scratch) as spark:
            sustained = _sustained(spark, scratch, messages, rate)
            series = sustained.pop("series")
            parse_only = _drain(spark, scratch, "parse")
            join_no_op = _drain(spark, scratch, "join")
    return {
        "records_per_topic": records,
        "send_rate_per_topic": rate,
        "event_time_per_record_ms": event_step // timedelta(milliseconds=1),
        "job_config": {
            "orders_watermark": _config().orders_watermark,
            "payments_watermark": _config().payments_watermark,
            "pay_within": _config().pay_within,
            "paid_early_tolerance": _config().paid_early_tolerance,
        },
        "sustained": sustained,
        "baseline": {"parse_only": parse_only, "join_no_op_sink": join_no_op},
        "ratio_join_to_parse": round(
            join_no_op["input_records_per_second"] / parse_only["input_records_per_second"], 4
        ),
        "ratio_sustained_pairs_to_send_rate": round(sustained["pairs_per_second"] / rate, 4),
        # Last, and long: the headline summary lists the numbers above first.
        "state_series": series,
    }


# --- phases -------------------------------------------------------------------------------------


class Scratch:
    """Everything the run creates, so that all of it can be removed again."""

    def __init__(self, settings: Settings) -> None:
        self.stamp = datetime.now(UTC).replace(microsecond=0)
        self.folder = Path(tempfile.mkdtemp(prefix="streamops-bench-joins-"))
        self.settings = settings.model_copy(
            update={"checkpoint_uri": str(self.folder / "checkpoints")}
        )
        self.seed = SEED_ORIGIN + int(self.stamp.timestamp()) % 100_000_000
        self.key_prefix = f"streamops:bench:joins:{self.stamp:%Y%m%dT%H%M%S}"
        self.orders_topic = f"bench-joins-orders-{self.stamp:%Y%m%d%H%M%S}"
        self.payments_topic = f"bench-joins-payments-{self.stamp:%Y%m%d%H%M%S}"
        self.runs = 0

    def checkpoint(self, name: str) -> str:
        self.runs += 1
        return str(self.folder / "checkpoints" / f"{self.runs}-{name}")


def _generate(scratch: Scratch, records: int, event_step: timedelta) -> dict[str, list[Any]]:
    from streamops.generator.records import RecordFactory

    now = ERA_START + timedelta(days=scratch.stamp.timetuple().tm_yday)
    return {
        topic: RecordFactory(
            source,
            seed=scratch.seed,
            now=now,
            interval=event_step,
            malformed_ratio=MALFORMED_RATIO,
            duplicate_ratio=DUPLICATE_RATIO,
        ).take(records)
        for source, topic in (
            ("orders", scratch.orders_topic),
            ("payments", scratch.payments_topic),
        )
    }


def _join_query(
    spark: Any, scratch: Scratch, writer: Callable[[Any, int], None], **trigger: Any
) -> Any:
    from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
    from spark_jobs.transforms.joins import (
        join_orders_payments,
        watermarked_orders,
        watermarked_payments,
    )
    from spark_jobs.transforms.orders import check_orders, valid_orders
    from spark_jobs.transforms.payments import check_payments, valid_payments

    config = _config()
    orders = read_kafka_stream(spark, scratch.settings, KafkaSourceOptions(scratch.orders_topic))
    payments = read_kafka_stream(
        spark, scratch.settings, KafkaSourceOptions(scratch.payments_topic)
    )
    pairs = join_orders_payments(
        watermarked_orders(valid_orders(check_orders(orders)), config.orders_watermark),
        watermarked_payments(valid_payments(check_payments(payments)), config.payments_watermark),
        config.pay_within,
        config.paid_early_tolerance,
    )
    stream = (
        pairs.writeStream.queryName(f"bench_joins_{scratch.runs}")
        .outputMode("append")
        .foreachBatch(writer)
        .option("checkpointLocation", scratch.checkpoint("join"))
    )
    if trigger:
        stream = stream.trigger(**trigger)
    return stream.start()


def _sustained(
    spark: Any, scratch: Scratch, messages: dict[str, list[Any]], rate: int
) -> dict[str, Any]:
    from spark_jobs.sinks.joins import order_payments_writer

    write_sink = order_payments_writer(scratch.settings, key_prefix=scratch.key_prefix)
    pairs_written = [0]
    last_write = [0.0]

    def write(batch: Any, batch_id: int) -> None:
        batch.persist()
        try:
            write_sink(batch, batch_id)
            pairs_written[0] += batch.where("status <> 'unpaid'").count()
            last_write[0] = time.monotonic()
        finally:
            batch.unpersist()

    query = _join_query(spark, scratch, write)
    _log(f"sustained: sending {len(messages[scratch.orders_topic])} per topic at {rate}/s")
    started = time.monotonic()
    sender = threading.Thread(target=_send_paced, args=(scratch, messages, rate), daemon=True)
    sender.start()
    sender.join()
    sent_seconds = time.monotonic() - started
    expected_pairs = _expected_pairs(messages[scratch.payments_topic])
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    sent_at = time.monotonic()
    while pairs_written[0] < expected_pairs and time.monotonic() < deadline:
        if time.monotonic() - max(sent_at, last_write[0]) > QUIET_SECONDS:
            break  # nothing written for a while: whatever is missing was dropped as late
        if query.exception() is not None or not query.isActive:
            raise BenchmarkError(f"the join query stopped: {query.exception()}")
        time.sleep(POLL_SECONDS)
    progress = list(query.recentProgress)
    stop_between_batches(query)
    elapsed = (last_write[0] or time.monotonic()) - started
    series = _state_series(progress, started)
    state_rows = [point["state_rows"] for point in series]
    return {
        "send_seconds": round(sent_seconds, 2),
        "pairs_expected": expected_pairs,
        "pairs_written": pairs_written[0],
        "seconds_to_last_pair": round(elapsed, 2),
        "pairs_per_second": round(pairs_written[0] / elapsed, 1) if elapsed > 0 else None,
        "state_rows_max": max(state_rows, default=0),
        "state_rows_last": state_rows[-1] if state_rows else 0,
        "state_rows_median_second_half": (
            statistics.median(state_rows[len(state_rows) // 2 :]) if state_rows else 0
        ),
        "state_rows_removed_total": sum(point["rows_removed"] for point in series),
        "state_memory_bytes_max": max((p["memory_bytes"] for p in series), default=0),
        "batches": len(series),
        "series": series,
    }


def _drain(spark: Any, scratch: Scratch, mode: str) -> dict[str, Any]:
    from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
    from spark_jobs.transforms.orders import check_orders
    from spark_jobs.transforms.payments import check_payments

    lock = threading.Lock()
    counted = [0]

    def count(batch: Any, batch_id: int) -> None:
        rows = batch.count()
        with lock:  # the parse baseline runs two queries, each on its own thread
            counted[0] += rows

    _log(f"baseline: draining both topics ({mode})")
    started = time.monotonic()
    if mode == "join":
        queries = [_join_query(spark, scratch, count, availableNow=True)]
    else:
        queries = []
        for topic, check in (
            (scratch.orders_topic, check_orders),
            (scratch.payments_topic, check_payments),
        ):
            checked = check(read_kafka_stream(spark, scratch.settings, KafkaSourceOptions(topic)))
            queries.append(
                checked.where("reason IS NULL")
                .writeStream.queryName(f"bench_joins_parse_{scratch.runs}_{len(queries)}")
                .foreachBatch(count)
                .option("checkpointLocation", scratch.checkpoint("parse"))
                .trigger(availableNow=True)
                .start()
            )
    for query in queries:
        if not query.awaitTermination(DRAIN_TIMEOUT_SECONDS):
            stop_between_batches(query)
            raise BenchmarkError(f"draining ({mode}) took over {DRAIN_TIMEOUT_SECONDS:.0f} s")
        if query.exception() is not None:
            raise BenchmarkError(f"draining ({mode}) failed: {query.exception()}")
    seconds = time.monotonic() - started
    inputs = sum(int(p.numInputRows) for q in queries for p in q.recentProgress)
    return {
        "seconds": round(seconds, 2),
        "input_records": inputs,
        "output_rows": counted[0],
        "input_records_per_second": round(inputs / seconds, 1),
    }


def _send_paced(scratch: Scratch, messages: dict[str, list[Any]], rate: int) -> None:
    """Both topics at ``rate`` records/s each, record n of each together, in 10 ms slices."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": scratch.settings.kafka_bootstrap_servers,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    orders, payments = messages[scratch.orders_topic], messages[scratch.payments_topic]
    started = time.monotonic()
    for index, (order, payment) in enumerate(zip(orders, payments, strict=True)):
        due = started + index / rate
        delay = due - time.monotonic()
        if delay > 0.01:
            time.sleep(delay)
        producer.produce(scratch.orders_topic, key=order.key, value=order.value)
        producer.produce(scratch.payments_topic, key=payment.key, value=payment.value)
        if index % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise BenchmarkError("some benchmark records were not delivered to Kafka")


def _expected_pairs(payments: list[Any]) -> int:
    """Distinct valid payments: each pays its seed-paired order well within the bound."""
    import json

    from streamops.generator.records import validate

    ids = {
        json.loads(record.value)["payment_id"]
        for record in payments
        if validate("payments", record.value) is None
    }
    return len(ids)


def _state_series(progress: list[Any], started: float) -> list[dict[str, Any]]:
    wall_start = time.time() - (time.monotonic() - started)
    series = []
    for report in progress:
        joins = [op for op in report.stateOperators if op.operatorName.startswith("symmetricHash")]
        moment = datetime.fromisoformat(report.timestamp.replace("Z", "+00:00")).timestamp()
        series.append(
            {
                "elapsed_seconds": round(moment - wall_start, 2),
                "batch_id": int(report.batchId),
                "input_rows": int(report.numInputRows),
                "watermark": (report.eventTime or {}).get("watermark"),
                "state_rows": sum(int(op.numRowsTotal) for op in joins),
                "rows_removed": sum(int(op.numRowsRemoved) for op in joins),
                "memory_bytes": sum(int(op.memoryUsedBytes) for op in joins),
                "batch_ms": int((report.durationMs or {}).get("triggerExecution", 0)),
            }
        )
    return series


# --- environment ---------------------------------------------------------------------------------


def _config() -> Any:
    from spark_jobs.jobs.joins import JoinsJobConfig

    return JoinsJobConfig()


@contextmanager
def _scratch(settings: Settings) -> Iterator[Scratch]:
    from streamops.topics import ensure_topics

    scratch = Scratch(settings)
    try:
        ensure_topics(scratch.settings, (scratch.orders_topic, scratch.payments_topic))
    except StreamopsError as error:
        raise BenchmarkError(str(error)) from error
    try:
        yield scratch
    finally:
        _log("cleaning up")
        _cleanup(scratch)


def _cleanup(scratch: Scratch) -> None:
    import redis

    from streamops.db import connect
    from streamops.topics import admin_client

    with closing(connect(scratch.settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "DELETE FROM order_payments WHERE order_id LIKE ?", (f"ord-{scratch.seed}-%",)
        )
        connection.commit()
    client = redis.Redis.from_url(scratch.settings.redis_url)
    for key in client.scan_iter(f"{scratch.key_prefix}:*"):
        client.delete(key)
    admin = admin_client(scratch.settings)
    for future in admin.delete_topics(
        [scratch.orders_topic, scratch.payments_topic], operation_timeout=30
    ).values():
        try:
            future.result(timeout=60)
        except Exception as error:  # leftover scratch topics are untidy, not a failed benchmark
            _log(f"warning: could not delete a scratch topic: {error}")
    shutil.rmtree(scratch.folder, ignore_errors=True)


@contextmanager
def _spark(scratch: Scratch) -> Iterator[Any]:
    from spark_jobs.common.session import build_spark_session

    try:
        spark = build_spark_session(
            "streamops-bench-joins",
            scratch.settings,
            {
                "spark.sql.streaming.numRecentProgressUpdates": "5000",
                "spark.ui.showConsoleProgress": "false",
                # A failed batch's message (every executor's stack trace) once overflowed the
                # default thread stack in a regex of the driver, which hid the real error.
                "spark.driver.extraJavaOptions": "-Xss16m",
            },
        )
    except StreamopsError as error:
        raise BenchmarkError(str(error)) from error
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        for query in spark.streams.active:
            stop_between_batches(query)
        spark.stop()


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BenchmarkError(f"{name} is {text!r}; give a whole number.") from None
    if value < 1:
        raise BenchmarkError(f"{name} is {value}; give 1 or more.")
    return value


def _log(message: str) -> None:
    import sys

    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)
