"""The vitals pipeline under load: readings/s drained, against a same-run baseline, and readings/s
sustained with the state size of its stateful queries over time. One run, one Spark driver.

    python -m benchmarks.runner vitals

The job's three queries are started in-process with ``spark_jobs.jobs.vitals.start`` on scratch
topics, scratch checkpoints and an empty Redis database of the same server.

1. **Drain.** ``BENCH_VITALS_READINGS`` generated readings (1 % malformed, 1 % duplicates) are
   produced first. The *baseline* drains the topic with the same Kafka source and parser
   (``check_vitals``) into Spark's ``noop`` sink; then the *pipeline* (all three queries and every
   sink: MariaDB, Redis, the flags, the stateful summary and silence detection) drains it with
   ``trigger(availableNow=True)``. Both are timed from ``start()`` to the last query stopping;
   ``ratio_pipeline_to_parse`` = pipeline readings/s ÷ baseline readings/s.
2. **Sustained.** The job runs with its default trigger while a producer thread sends
   ``BENCH_VITALS_RATE`` readings/s for ``BENCH_VITALS_SECONDS``. Every ``BENCH_VITALS_SAMPLE``
   seconds each query's last progress is sampled: input and processed rows/s, and for the
   stateful ones ``numRowsTotal`` and ``memoryUsedBytes`` of their state (the state size over
   time); at the end, how many readings were still unread (lag).

Event times lie in a day of 2002 that holds no live data. At a throttled rate the generator spaces
readings ``1 / rate`` apart, so event time advances with the wall clock (48 patients, each sending
about rate / 48 readings per second): windows close and state is evicted as in production. The
model folder is the stack's (``<state_dir>/models/vitals``); on a fresh stack there is no model and
readings are checked against the clinical ranges only. Afterwards the rows of that day are deleted
from the vitals tables, and the scratch quarantine rows, topics and Redis keys removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkError, empty_redis_db
from spark_jobs.common.runner import stop_between_batches
from streamops.config import Settings

READINGS_ENV = "BENCH_VITALS_READINGS"
DEFAULT_READINGS = 30_000
RATE_ENV = "BENCH_VITALS_RATE"
DEFAULT_RATE = 1_000
SECONDS_ENV = "BENCH_VITALS_SECONDS"
DEFAULT_SECONDS = 60
SAMPLE_ENV = "BENCH_VITALS_SAMPLE"
DEFAULT_SAMPLE_SECONDS = 5
ERA = datetime(2002, 1, 1, tzinfo=UTC)
SEED = 2002
DRAIN_TIMEOUT_SECONDS = 900
VITALS_TABLES = {
    "vitals_readings": "event_time",
    "vitals_reading_flags": "event_time",
    "vitals_summary_1m": "window_start",
    "vitals_alerts": "window_start",
}


def run(settings: Settings) -> dict[str, Any]:
    readings = int(os.environ.get(READINGS_ENV, DEFAULT_READINGS))
    rate = int(os.environ.get(RATE_ENV, DEFAULT_RATE))
    seconds = int(os.environ.get(SECONDS_ENV, DEFAULT_SECONDS))
    sample_seconds = float(os.environ.get(SAMPLE_ENV, DEFAULT_SAMPLE_SECONDS))
    if min(readings, rate, seconds) < 1 or sample_seconds <= 0:
        raise BenchmarkError("BENCH_VITALS_* sizes must be positive.")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    with _scratch(settings, stamp) as (scratch_settings, folder, topics):
        from spark_jobs.common.session import build_spark_session
        from spark_jobs.jobs.vitals import STATE_STORE_PROVIDER

        spark = build_spark_session(
            "streamops-bench-vitals",
            scratch_settings,
            {
                "spark.ui.enabled": "false",
                "spark.sql.streaming.stateStore.providerClass": STATE_STORE_PROVIDER,
            },
        )
        try:
            drain = _drain(spark, scratch_settings, folder, topics[0], readings)
            sustained = _sustained(
                spark, scratch_settings, folder, topics[1], rate, seconds, sample_seconds
            )
        finally:
            spark.stop()
    return {
        "sizes": {
            "readings": readings,
            "rate": rate,
            "seconds": seconds,
            "sample_seconds": sample_seconds,
        },
        "partitions": settings.kafka_partitions,
        "load_average": list(os.getloadavg()),
        "drain": drain,
        "sustained": sustained,
    }


def _drain(
    spark: Any, settings: Settings, folder: Path, topic: str, readings: int
) -> dict[str, Any]:
    from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
    from spark_jobs.jobs.vitals import VitalsJobConfig, start
    from spark_jobs.transforms.vitals import check_vitals
    from streamops.generator.producer import run_generator

    summary = run_generator(
        "patient-vitals",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        rate=0,
        count=readings,
        seed=SEED,
        now=ERA,
        malformed_ratio=0.01,
        duplicate_ratio=0.01,
        progress=False,
        target_topic=topic,
    )
    if summary.failed:
        raise BenchmarkError(f"{summary.failed} readings were not delivered to {topic}")

    started = time.monotonic()
    baseline = (
        check_vitals(read_kafka_stream(spark, settings, KafkaSourceOptions(topic)))
        .writeStream.format("noop")
        .option("checkpointLocation", str(folder / "baseline"))
        .trigger(availableNow=True)
        .start()
    )
    baseline.awaitTermination(DRAIN_TIMEOUT_SECONDS)
    baseline_seconds = time.monotonic() - started

    started = time.monotonic()
    queries = start(spark, settings, VitalsJobConfig(topic=topic, available_now=True))
    for query in queries:
        query.awaitTermination(DRAIN_TIMEOUT_SECONDS)
        if query.exception() is not None:
            raise BenchmarkError(f"{query.name} failed: {query.exception()}")
    pipeline_seconds = time.monotonic() - started
    return {
        "readings": readings,
        "baseline": {
            "what": "Kafka source + check_vitals into the noop sink",
            "seconds": round(baseline_seconds, 2),
            "readings_per_second": round(readings / baseline_seconds),
        },
        "pipeline": {
            "what": "the three vitals queries with every sink",
            "seconds": round(pipeline_seconds, 2),
            "readings_per_second": round(readings / pipeline_seconds),
        },
        # Same readings on both sides: readings/s ÷ readings/s is the inverse ratio of seconds.
        "ratio_pipeline_to_parse": round(baseline_seconds / pipeline_seconds, 3),
    }


def _sustained(
    spark: Any,
    settings: Settings,
    folder: Path,
    topic: str,
    rate: int,
    seconds: int,
    sample_seconds: float,
) -> dict[str, Any]:
    from spark_jobs.jobs.vitals import VitalsJobConfig, start
    from streamops.generator.producer import run_generator

    scratch = settings.model_copy(update={"checkpoint_uri": str(folder / "sustained")})
    queries = start(spark, scratch, VitalsJobConfig(topic=topic))
    produced: dict[str, int] = {}

    def produce() -> None:
        summary = run_generator(
            "patient-vitals",
            bootstrap_servers=settings.kafka_bootstrap_servers,
            rate=rate,
            duration=seconds,
            seed=SEED + 1,
            now=ERA + timedelta(hours=6),
            progress=False,
            target_topic=topic,
        )
        produced["sent"] = summary.sent

    producer = threading.Thread(target=produce, name="bench-vitals-producer")
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    producer.start()
    try:
        while producer.is_alive():
            time.sleep(sample_seconds)
            samples.append(_sample(queries, time.monotonic() - began))
        produced_at = time.monotonic() - began
        # Then until every query has read everything sent (or a minute): the lag left over.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(
            _rows_read(query) for query in queries
        ) < produced.get("sent", 0):
            time.sleep(sample_seconds)
            samples.append(_sample(queries, time.monotonic() - began))
        drained_at = time.monotonic() - began
        read = {query.name: _rows_read(query) for query in queries}
    finally:
        producer.join(timeout=seconds + 60)
        for query in queries:
            stop_between_batches(query)
    sent = produced.get("sent", 0)
    return {
        "target_rate": rate,
        "sent": sent,
        "produce_seconds": round(produced_at, 1),
        "drained_seconds": round(drained_at, 1),
        "rows_read": read,
        "lag_at_end": {name: sent - rows for name, rows in read.items()},
        # What the slowest query read per second over the whole phase, backlog included.
        "sustained_readings_per_second": round(min(read.values()) / drained_at),
        "samples": samples,
        "state_rows_max": _max_over(samples, "state_rows"),
        "state_sst_bytes_max": _max_over(samples, "state_sst_bytes"),
    }


def _rows_read(query: Any) -> int:
    """Input rows of every batch the query ran (Spark keeps the last 100 progress reports)."""
    return sum(progress.numInputRows for progress in query.recentProgress)


def _max_over(samples: list[dict[str, Any]], metric: str) -> dict[str, int]:
    return {
        name: max((s["queries"].get(name, {}).get(metric, 0) for s in samples), default=0)
        for name in ("vitals_summary", "vitals_signal")
    }


def _sample(queries: list[Any], elapsed: float) -> dict[str, Any]:
    sample: dict[str, Any] = {"elapsed_seconds": round(elapsed, 1), "queries": {}}
    for query in queries:
        progress = query.lastProgress
        if not progress:
            continue
        operators = progress.get("stateOperators") or []
        sample["queries"][query.name] = {
            "batch_id": progress.get("batchId"),
            "num_input_rows": progress.get("numInputRows", 0),
            "input_rows_per_second": round(progress.get("inputRowsPerSecond") or 0.0, 1),
            "processed_rows_per_second": round(progress.get("processedRowsPerSecond") or 0.0, 1),
            "batch_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
            "state_rows": sum(op.numRowsTotal for op in operators),
            "state_bytes": sum(op.memoryUsedBytes for op in operators),
            # RocksDB's files on disk: the state's real size (memoryUsedBytes is its cache).
            "state_sst_bytes": sum(
                int((op.customMetrics or {}).get("rocksdbSstFileSize", 0)) for op in operators
            ),
            "watermark": (progress.get("eventTime") or {}).get("watermark"),
        }
    return sample


@contextmanager
def _scratch(settings: Settings, stamp: str) -> Iterator[tuple[Settings, Path, list[str]]]:
    import redis

    from streamops.topics import admin_client, ensure_topics

    folder = Path(tempfile.mkdtemp(prefix="streamops-bench-vitals-"))
    redis_db = empty_redis_db(settings)
    scratch = settings.model_copy(
        update={"redis_db": redis_db, "checkpoint_uri": str(folder / "checkpoints")}
    )
    topics = [f"bench-vitals-{stamp}-drain", f"bench-vitals-{stamp}-sustained"]
    try:
        ensure_topics(settings, tuple(topics))
    except Exception as error:
        raise BenchmarkError(f"Kafka is not ready ({error}); start the stack first.") from error
    try:
        yield scratch, folder, topics
    finally:
        admin_client(settings).delete_topics(topics, operation_timeout=30)
        _delete_rows(settings, topics)
        client = redis.Redis.from_url(scratch.redis_url)
        client.flushdb()
        client.close()
        shutil.rmtree(folder, ignore_errors=True)


def _delete_rows(settings: Settings, topics: list[str]) -> None:
    from streamops.db import connect

    start, end = ERA.replace(tzinfo=None), (ERA + timedelta(days=1)).replace(tzinfo=None)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        for table, column in VITALS_TABLES.items():
            cursor.execute(
                f"DELETE FROM {table} WHERE {column} >= ? AND {column} < ?", (start, end)
            )
        for topic in topics:
            cursor.execute("DELETE FROM quarantine WHERE source_topic = ?", (topic,))
        connection.commit()
