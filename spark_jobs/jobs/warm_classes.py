"""The workload `streamops install` runs once to record the drivers' class-data archive.

    spark-submit --driver-java-options "-XX:ArchiveClassesAtExit=<file>" warm_classes.py

A driver started cold spends much of its first minute loading, parsing and verifying the classes
of Spark, Scala and Hadoop; on a machine whose cores are busy that is most of a relaunch's time
(docs/performance.md, "Recovery under faults"). The JVM records the classes this run loaded into
an archive when it exits, and every job's driver maps them from it instead
(``streamops.supervision.submit.with_class_archive``). The run needs no service: Kafka-shaped
records from Spark's rate source go through the orders pipeline's own transforms (JSON checks,
the revenue window with its watermark and state store) into ``foreachBatch``, for a few batches.
Classes it does not touch load as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.common.session import build_spark_session
from spark_jobs.transforms.orders import (
    check_orders,
    rejected_orders,
    revenue_per_window,
    valid_orders,
)
from streamops.config import load_settings

log = logging.getLogger(__name__)

BATCHES = 4
TIMEOUT_SECONDS = 600.0


def kafka_shaped(rate: DataFrame) -> DataFrame:
    """Rows of the rate source as the Kafka source gives them: an order as JSON, a bad one in
    every seven."""
    order = F.to_json(
        F.struct(
            F.format_string("o-%d", F.col("value")).alias("order_id"),
            F.lit("c-1").alias("customer_id"),
            F.lit("p-1").alias("product_id"),
            (F.col("value") % 5 + 1).alias("quantity"),
            F.lit("9.99").alias("unit_price"),
            F.lit("EUR").alias("currency"),
            F.date_format("timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("event_time"),
        )
    )
    payload = F.when(F.col("value") % 7 == 0, F.lit("{not json")).otherwise(order)
    return rate.select(
        F.col("value").cast("string").cast("binary").alias("key"),
        payload.cast("binary").alias("value"),
        F.lit("orders").alias("topic"),
        F.lit(0).alias("partition"),
        F.col("value").alias("offset"),
        F.col("timestamp"),
        F.lit(0).alias("timestampType"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=BATCHES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    spark = build_spark_session("streamops-warm-classes", settings, {"spark.ui.enabled": "false"})
    batches: list[int] = []

    def write(frame: DataFrame, batch_id: int) -> None:
        frame.collect()
        batches.append(batch_id)

    def write_checked(frame: DataFrame, batch_id: int) -> None:
        valid_orders(frame).collect()
        rejected_orders(frame).collect()

    checked = check_orders(kafka_shaped(spark.readStream.format("rate").load()))
    with tempfile.TemporaryDirectory(prefix="streamops-warm-classes-") as checkpoints:
        records = (
            checked.writeStream.foreachBatch(write_checked)
            .option("checkpointLocation", f"{checkpoints}/records")
            .trigger(processingTime="1 second")
            .start()
        )
        windows = revenue_per_window(
            valid_orders(checked).withWatermark("event_time", "10 seconds")
        )
        revenue = (
            windows.writeStream.foreachBatch(write)
            .outputMode("update")
            .option("checkpointLocation", f"{checkpoints}/revenue")
            .trigger(processingTime="1 second")
            .start()
        )
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while len(batches) < args.batches and time.monotonic() < deadline:
            for query in (records, revenue):
                if not query.isActive:
                    query.awaitTermination()  # raises the query's failure
            time.sleep(0.2)
        for query in (records, revenue):
            query.stop()
    spark.stop()
    if len(batches) < args.batches:
        log.error(
            "only %d of %d batches within %.0f s", len(batches), args.batches, TIMEOUT_SECONDS
        )
        return 1
    log.info("warmed up: %d batches of the orders transforms", len(batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
