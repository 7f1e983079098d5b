"""Raw Parquet archive of a pipeline's valid records, partitioned by event date and hour.

Each micro-batch owns the partitions ``date=…/hour=…/batch_id=N`` and replaces them with dynamic
partition overwrite, so a batch replayed after a crash rewrites its own files instead of adding a
second copy. The root is a local path by default and may be any Hadoop URI (``s3a://…``).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def archive_writer(root: str, time_column: str = "event_time") -> Callable[[DataFrame, int], None]:
    def write(records: DataFrame, batch_id: int) -> None:
        if records.isEmpty():
            return
        (
            records.withColumn("date", F.to_date(F.col(time_column)))
            .withColumn("hour", F.hour(F.col(time_column)))
            .withColumn("batch_id", F.lit(batch_id).cast("long"))
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy("date", "hour", "batch_id")
            .parquet(root)
        )

    return write
