"""Orders: Kafka `orders` → cleansed orders in MariaDB, quarantine, a Parquet archive, and revenue
per 5-second event-time window in MariaDB and Redis. Exactly once, across crashes and restarts.

Two queries read the topic, each with its own checkpoint:
- ``orders_records``: every record, valid ones upserted into ``orders`` (late ones too) and
  archived, malformed ones into ``quarantine``; idempotent by key, so a replayed batch is harmless.
- ``orders_revenue``: valid orders, de-duplicated within the watermark, summed per window and
  currency; each batch upserts the windows' absolute values (update mode), so replays are harmless.

Run with ``streamops run orders`` or ``spark-submit spark_jobs/jobs/orders.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.common.archive import archive_writer
from spark_jobs.common.job_args import parse_job_config
from spark_jobs.common.runner import JobContext, JobOverrides, run_job, start_all
from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
from spark_jobs.sinks.mariadb import quarantine_writer
from spark_jobs.sinks.orders import orders_writer, revenue_redis_writer, revenue_writer
from spark_jobs.transforms.orders import (
    check_orders,
    rejected_orders,
    revenue_per_window,
    valid_orders,
)
from streamops.config import Settings
from streamops.contract import job_defaults
from streamops.faults import kill_point

PIPELINE = "orders"
BatchWriter = Callable[[DataFrame, int], None]


@dataclass(frozen=True)
class OrdersJobConfig:
    # The input topic: the contract's, unless records are replayed from another (a scratch topic).
    topic: str = PIPELINE
    watermark: str = job_defaults.ORDERS_WATERMARK
    window_seconds: int = job_defaults.ORDERS_WINDOW_SECONDS
    max_offsets_per_trigger: int | None = 100_000
    # None: the next batch starts as soon as the previous one ends (Spark's default trigger).
    trigger_interval: str | None = None

    def __post_init__(self) -> None:
        if self.window_seconds < 1:
            raise ValueError(f"window_seconds is {self.window_seconds}; give 1 or more.")
        if not self.topic.strip():
            raise ValueError("topic is empty; name the Kafka topic to read orders from.")


def records_writer(settings: Settings) -> BatchWriter:
    write_orders = orders_writer(settings)
    write_quarantine = quarantine_writer(settings)
    write_archive = archive_writer(f"{settings.archive_root}/{PIPELINE}")

    def write(batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            valid = valid_orders(batch)
            write_orders(valid, batch_id)
            write_quarantine(rejected_orders(batch), batch_id)
            write_archive(valid, batch_id)
        finally:
            batch.unpersist()

    return write


def windows_writer(settings: Settings) -> BatchWriter:
    write_mariadb = revenue_writer(settings)
    write_redis = revenue_redis_writer(settings)

    def write(windows: DataFrame, batch_id: int) -> None:
        windows.persist()
        try:
            write_mariadb(windows, batch_id)
            # Test-only: the windows are in MariaDB, the Redis totals have not moved yet.
            kill_point("orders_revenue:between_mariadb_and_redis")
            write_redis(windows, batch_id)
        finally:
            windows.unpersist()

    return write


def writers(
    spark: SparkSession, context: JobContext, config: OrdersJobConfig
) -> list[DataStreamWriter]:
    """The job's queries, not started (``runner.run_job`` starts them)."""
    settings = context.settings
    records_query, revenue_query = context.queries("records", "revenue")
    source = KafkaSourceOptions(
        config.topic, max_offsets_per_trigger=config.max_offsets_per_trigger
    )
    checked = check_orders(
        read_kafka_stream(spark, settings, source), settings.max_clock_skew_seconds
    )
    windows = revenue_per_window(
        valid_orders(checked)
        .withWatermark("event_time", config.watermark)
        .dropDuplicatesWithinWatermark(["order_id"]),
        config.window_seconds,
    )
    records = (
        checked.writeStream.queryName(records_query.name)
        .foreachBatch(context.batch_writer(records_query, records_writer))
        .option("checkpointLocation", records_query.checkpoint)
    )
    revenue = (
        windows.writeStream.queryName(revenue_query.name)
        .outputMode("update")
        .foreachBatch(context.batch_writer(revenue_query, windows_writer))
        .option("checkpointLocation", revenue_query.checkpoint)
    )
    return [
        context.triggered(records, config.trigger_interval),
        context.triggered(revenue, config.trigger_interval),
    ]


def start(
    spark: SparkSession,
    settings: Settings,
    config: OrdersJobConfig,
    overrides: JobOverrides | None = None,
) -> list[StreamingQuery]:
    """Both queries started at once; ``overrides`` (a benchmark's) change the checkpoints, the
    trigger or the sinks, and nothing else."""
    return start_all(writers(spark, JobContext.of(PIPELINE, settings, overrides), config))


def parse_args(argv: list[str] | None) -> OrdersJobConfig:
    return parse_job_config(
        OrdersJobConfig,
        argv,
        prog="orders",
        description=__doc__.split("\n")[0],
        help_texts={"topic": f"the Kafka topic to read (default: {PIPELINE}, the contract's)"},
    )


def main(argv: list[str] | None = None) -> int:
    return run_job(PIPELINE, writers, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
