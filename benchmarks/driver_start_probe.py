"""The application `bench_driver_start` submits: a cold driver's session, then one small streaming
query (not the one `streamops install` records the class archive with) to its third batch. Prints
one JSON line of seconds since the interpreter started."""

from __future__ import annotations

import json
import sys
import tempfile
import time

STARTED = time.monotonic()

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

BATCHES = 3


def main() -> int:
    spark = SparkSession.builder.appName("streamops-bench-driver-start").getOrCreate()
    session = time.monotonic() - STARTED
    batches: list[float] = []

    def write(frame: object, batch_id: int) -> None:
        frame.collect()  # type: ignore[attr-defined]
        batches.append(time.monotonic() - STARTED)

    rate = spark.readStream.format("rate").option("rowsPerSecond", 1000).load()
    counts = (
        rate.withWatermark("timestamp", "5 seconds")
        .groupBy(F.window("timestamp", "2 seconds"), (F.col("value") % 11).alias("bucket"))
        .agg(F.count(F.lit(1)).alias("rows"), F.max("value").alias("last"))
    )
    with tempfile.TemporaryDirectory(prefix="streamops-bench-driver-start-") as checkpoint:
        query = (
            counts.writeStream.foreachBatch(write)
            .outputMode("update")
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime="1 second")
            .start()
        )
        while len(batches) < BATCHES and query.isActive:
            time.sleep(0.05)
        query.stop()
    spark.stop()
    if len(batches) < BATCHES:
        return 1
    print(json.dumps({"session": session, "first_batch": batches[0], "third_batch": batches[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
