"""Joins: orders ⋈ payments → order_payments, orders ⋈ products → revenue per category.

Kafka `orders` ⋈ `payments` → ``order_payments`` (matched, mismatched, unpaid), and orders
enriched with the ``products`` catalogue → revenue per category per 1-minute window, in MariaDB
and Redis. Exactly once, across crashes and restarts.

Three queries, each with its own checkpoint:
- ``joins_payments_records``: every payment record; malformed ones into ``quarantine``
  (pipeline ``joins``), idempotent by Kafka position. Malformed orders are the orders
  pipeline's to quarantine.
- ``joins_order_payments``: valid orders and payments, each de-duplicated within its watermark,
  joined LEFT OUTER with a time bound; matched pairs and orders left unpaid when the bound has
  passed go to ``order_payments`` (see spark_jobs/transforms/joins.py and sinks/joins.py).
- ``joins_category_revenue``: valid orders, de-duplicated within the watermark, enriched with
  the catalogue (re-read every ``--products-refresh-seconds``) and added per window, category
  and currency to ``category_revenue_1m``.

Run with ``streamops run joins`` or ``spark-submit spark_jobs/jobs/joins.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.common.job_args import parse_job_config
from spark_jobs.common.runner import JobContext, batch_writer, run_job, start_all
from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
from spark_jobs.sinks.joins import (
    DEFAULT_PRODUCTS_REFRESH_SECONDS,
    ProductCatalogue,
    category_revenue_writer,
    order_payments_writer,
)
from spark_jobs.sinks.mariadb import quarantine_writer
from spark_jobs.transforms.joins import (
    join_orders_payments,
    watermarked_orders,
    watermarked_payments,
)
from spark_jobs.transforms.orders import check_orders, valid_orders
from spark_jobs.transforms.payments import check_payments, rejected_payments, valid_payments
from streamops.config import Settings
from streamops.contract import job_defaults

PIPELINE = "joins"
BatchWriter = Callable[[DataFrame, int], None]


@dataclass(frozen=True)
class JoinsJobConfig:
    # Orders arrive nearly in event-time order; payments up to two minutes out of it (a
    # customer who comes back later), hence the longer delay on that side.
    orders_watermark: str = job_defaults.JOINS_ORDERS_WATERMARK
    payments_watermark: str = job_defaults.JOINS_PAYMENTS_WATERMARK
    pay_within: str = job_defaults.JOINS_PAY_WITHIN
    paid_early_tolerance: str = job_defaults.JOINS_PAID_EARLY_TOLERANCE
    window_seconds: int = job_defaults.JOINS_WINDOW_SECONDS
    products_refresh_seconds: float = DEFAULT_PRODUCTS_REFRESH_SECONDS
    max_offsets_per_trigger: int | None = 100_000
    # None: the next batch starts as soon as the previous one ends (Spark's default trigger).
    trigger_interval: str | None = None

    def __post_init__(self) -> None:
        if self.window_seconds < 1:
            raise ValueError(f"window_seconds is {self.window_seconds}; give 1 or more.")
        if self.products_refresh_seconds <= 0:
            raise ValueError(
                f"products_refresh_seconds is {self.products_refresh_seconds}; give more than 0."
            )


def payments_records_writer(settings: Settings) -> BatchWriter:
    write_quarantine = quarantine_writer(settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        write_quarantine(rejected_payments(batch), batch_id)

    return write


def writers(
    spark: SparkSession, context: JobContext, config: JoinsJobConfig
) -> list[DataStreamWriter]:
    """The job's queries, not started (``runner.run_job`` starts them)."""
    settings = context.settings
    payments_records, order_payments, category_revenue = context.queries(
        "payments_records", "order_payments", "category_revenue"
    )

    def source(topic: str) -> DataFrame:
        options = KafkaSourceOptions(topic, max_offsets_per_trigger=config.max_offsets_per_trigger)
        return read_kafka_stream(spark, settings, options)

    checked_payments = check_payments(source("payments"), settings.max_clock_skew_seconds)
    orders = valid_orders(check_orders(source("orders"), settings.max_clock_skew_seconds))
    pairs = join_orders_payments(
        watermarked_orders(orders, config.orders_watermark),
        watermarked_payments(valid_payments(checked_payments), config.payments_watermark),
        config.pay_within,
        config.paid_early_tolerance,
    )
    unique_orders = orders.withWatermark("event_time", config.orders_watermark)
    unique_orders = unique_orders.dropDuplicatesWithinWatermark(["order_id"])
    catalogue = ProductCatalogue(settings, config.products_refresh_seconds)

    queries: list[DataStreamWriter] = [
        checked_payments.writeStream.queryName(payments_records.name)
        .foreachBatch(batch_writer(payments_records, payments_records_writer(settings)))
        .option("checkpointLocation", payments_records.checkpoint),
        pairs.writeStream.queryName(order_payments.name)
        .outputMode("append")
        .foreachBatch(batch_writer(order_payments, order_payments_writer(settings)))
        .option("checkpointLocation", order_payments.checkpoint),
        unique_orders.writeStream.queryName(category_revenue.name)
        .outputMode("append")
        .foreachBatch(
            batch_writer(
                category_revenue,
                category_revenue_writer(
                    settings,
                    catalogue,
                    category_revenue.checkpoint,
                    window_seconds=config.window_seconds,
                ),
            )
        )
        .option("checkpointLocation", category_revenue.checkpoint),
    ]
    if config.trigger_interval:
        queries = [w.trigger(processingTime=config.trigger_interval) for w in queries]
    return queries


def start(spark: SparkSession, settings: Settings, config: JoinsJobConfig) -> list[StreamingQuery]:
    return start_all(writers(spark, JobContext.of(PIPELINE, settings), config))


def parse_args(argv: list[str] | None) -> JoinsJobConfig:
    return parse_job_config(
        JoinsJobConfig,
        argv,
        prog="joins",
        description=__doc__.split("\n")[0],
        help_texts={
            "pay_within": "longest order → payment time matched",
            "paid_early_tolerance": (
                "how far a payment's time may be before its order's and still match"
            ),
        },
    )


def main(argv: list[str] | None = None) -> int:
    return run_job(PIPELINE, writers, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
